"""Turn what a user writes as a target ("cuda", "h100", a TVM dict, "llvm") into a TVM Target."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import tvm

from .errors import TargetError
from .gpus import GpuSpec, all_gpus, find_gpu, gpu_for_arch
from .schedules.layout import STATIC_SMEM, WARP

log = logging.getLogger(__name__)

DEFAULT_GPU = "h100"


@dataclass(frozen=True)
class ResolvedTarget:
    """A TVM target together with the GPU it is meant for (None for CPU targets)."""

    tvm_target: tvm.target.Target
    gpu: GpuSpec | None
    detected: bool = False  # the GPU was read off a device on this machine

    @property
    def is_cuda(self) -> bool:
        return self.tvm_target.kind.name == "cuda"

    @property
    def arch(self) -> str | None:
        return str(self.tvm_target.attrs["arch"]) if self.is_cuda else None

    def describe(self) -> str:
        if not self.is_cuda:
            return str(self.tvm_target.kind.name)
        gpu = self.gpu.key if self.gpu else "unknown GPU"
        return f"cuda {self.arch} ({gpu}{', detected' if self.detected else ''})"


TargetLike = str | dict | tvm.target.Target | ResolvedTarget


def local_cuda_device() -> tvm.runtime.Device | None:
    """The first CUDA device of this machine, or None when there is none (or no CUDA runtime)."""
    try:
        device = tvm.cuda(0)
        return device if device.exist else None
    except Exception:  # TVM raises when its CUDA device API is not loaded
        return None


def local_gpu_name() -> str | None:
    """The name of this machine's first CUDA GPU (the card a benchmark ran on); None without one."""
    device = local_cuda_device()
    return None if device is None else device.device_name


def cuda_target_dict(gpu: GpuSpec, arch: str | None = None) -> dict[str, Any]:
    """A CUDA target with everything MetaSchedule and dlight read (arch, threads, shared memory)."""
    return {
        "kind": "cuda",
        "arch": arch or gpu.arch,
        "max_threads_per_block": gpu.max_threads_per_block,
        "max_shared_memory_per_block": min(gpu.smem_per_block, STATIC_SMEM),  # kernels declare it statically
        "thread_warp_size": WARP,
    }


def cuda_target(gpu: GpuSpec, arch: str | None = None) -> tvm.target.Target:
    return tvm.target.Target(cuda_target_dict(gpu, arch))


def _detected_cuda() -> ResolvedTarget | None:
    device = local_cuda_device()
    if device is None:
        return None
    arch = "sm_" + device.compute_version.replace(".", "")
    gpu = find_gpu(device.device_name)
    if gpu is None:  # an unknown card: trust the device for the arch, H100 figures for the planner
        log.warning(
            "GPU '%s' is not in the GPU table; planning with %s figures", device.device_name, DEFAULT_GPU
        )
        gpu = all_gpus()[DEFAULT_GPU]
    return ResolvedTarget(cuda_target(gpu, arch), gpu, detected=True)


def _from_cuda_string() -> ResolvedTarget:
    detected = _detected_cuda()
    if detected is not None:
        return detected
    gpu = all_gpus()[DEFAULT_GPU]
    log.info("no CUDA device here: generating code for %s (%s); pass a GPU name to choose", gpu.arch, gpu.key)
    return ResolvedTarget(cuda_target(gpu), gpu)


def _from_dict(spec: dict[str, Any]) -> ResolvedTarget:
    spec = dict(spec)
    gpu_name = spec.pop("gpu", None)
    gpu = find_gpu(gpu_name) if gpu_name else None
    if gpu_name and gpu is None:
        raise TargetError(f"unknown GPU '{gpu_name}' in target; known: {', '.join(sorted(all_gpus()))}")
    if spec.get("kind") == "cuda":
        base = gpu or _gpu_for_arch(spec.get("arch"))
        spec = {**cuda_target_dict(base), **spec} if base else spec
        gpu = gpu or base
    return ResolvedTarget(_make_target(spec), gpu)


def _gpu_for_arch(arch: str | None) -> GpuSpec | None:
    return all_gpus()[DEFAULT_GPU] if arch is None else gpu_for_arch(arch)


def _make_target(spec: str | dict) -> tvm.target.Target:
    try:
        return tvm.target.Target(spec)
    except Exception as error:  # TVM's ValueError/TVMError carry a long C++ context
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise TargetError(f"invalid target {spec!r}: {first_line}") from None


def resolve_target(target: TargetLike | None = "cuda") -> ResolvedTarget:
    """Resolve ``target``: "cuda" (arch from the local GPU, else H100), a GPU name, "llvm", a dict."""
    if isinstance(target, ResolvedTarget):
        return target
    if target is None or target == "cuda":
        return _from_cuda_string()
    if isinstance(target, tvm.target.Target):
        gpu = _gpu_for_arch(str(target.attrs["arch"])) if target.kind.name == "cuda" else None
        return ResolvedTarget(target, gpu)
    if isinstance(target, dict):
        return _from_dict(target)
    if not isinstance(target, str):
        raise TargetError(
            f"target must be a string, a dict or a tvm.target.Target, not {type(target).__name__}"
        )
    text = target.strip()
    if text.startswith("{"):
        return _from_dict(json.loads(text))
    gpu = find_gpu(text)
    if gpu is not None:
        return ResolvedTarget(cuda_target(gpu), gpu)
    if text.split()[0] in ("llvm", "c"):
        return ResolvedTarget(_make_target(text), None)
    raise TargetError(
        f"unknown target '{text}': use 'cuda', 'llvm', a GPU name ({', '.join(sorted(all_gpus()))}) "
        'or a TVM target dict such as {"kind": "cuda", "arch": "sm_90"}'
    )
