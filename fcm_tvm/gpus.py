"""GPU characteristics as data (``data/gpus.json``), looked up by short name, device name or target."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .errors import FcmError, TargetError

log = logging.getLogger(__name__)

DEFAULT_GPU = "h100"  # what a CUDA target without a GPU or an arch is planned for


@dataclass(frozen=True)
class GpuSpec:
    """What the cost model and the target need to know about one GPU model."""

    key: str
    names: tuple[str, ...]
    arch: str
    sm_count: int
    l2_bytes: int
    smem_per_sm: int
    smem_per_block: int
    registers_per_sm: int
    max_threads_per_block: int
    max_threads_per_sm: int
    dram_bandwidth_gbs: float
    cache_line_bytes: int
    sector_bytes: int
    fp32_tflops: float
    fp16_tensor_tflops: float
    max_blocks_per_sm: int
    reserved_smem_per_block: int
    data_from: str | None = None  # a GPU whose measurements and records serve this one's absence


@cache
def _table() -> dict[str, Any]:
    return json.loads(resources.files("fcm_tvm").joinpath("data/gpus.json").read_text())


@cache
def all_gpus() -> dict[str, GpuSpec]:
    """Every GPU in the table, by short key (``h100``, ``a100``, ...)."""
    rows = _table()["gpus"]
    return {key: GpuSpec(key=key, **{**row, "names": tuple(row["names"])}) for key, row in rows.items()}


def data_keys(gpu_key: str) -> tuple[str, ...]:
    """The GPUs whose measured chain times and tuning records serve ``gpu_key``, its own first.

    Why: an H200 is the H100's GH100 chip (same SMs, clocks, shared memory and target) with more
    and faster memory, so where nothing was measured or tuned on the H200 itself, the H100's data
    plan and tune it better than the cost model does (docs/results.md, the H200 section), and the
    other way round. One step only: a lender's own lender is not consulted.
    """
    gpu = all_gpus().get(gpu_key)
    return (gpu_key,) if gpu is None or gpu.data_from is None else (gpu_key, gpu.data_from)


def arch_defaults() -> dict[str, str]:
    """The GPU key assumed for each CUDA arch when a target names only the arch (``sm_90`` -> ``h100``)."""
    return dict(_table()["arch_defaults"])


def find_gpu(name: str) -> GpuSpec | None:
    """The GPU called ``name``: a short key (``h100``) or a device name (``NVIDIA H100 80GB HBM3``)."""
    wanted = name.strip().lower().replace("nvidia", "").strip()
    gpus = all_gpus()
    if wanted in gpus:
        return gpus[wanted]
    # longest alias first so that "H100 PCIe" wins over "H100"
    aliases = sorted(
        ((alias.lower(), gpu) for gpu in gpus.values() for alias in gpu.names), key=lambda pair: -len(pair[0])
    )
    return next((gpu for alias, gpu in aliases if alias in wanted), None)


def get_gpu(name: str) -> GpuSpec:
    """Like :func:`find_gpu`, but a clear error for an unknown name."""
    gpu = find_gpu(name)
    if gpu is None:
        raise FcmError(f"unknown GPU '{name}'; known: {', '.join(sorted(all_gpus()))}")
    return gpu


def gpu_for_arch(arch: str) -> GpuSpec | None:
    """The table's default GPU of ``arch`` (``sm_90`` -> H100), else the first of that arch, else None."""
    default = arch_defaults().get(arch)
    if default is not None:
        return all_gpus()[default]
    return next((gpu for gpu in all_gpus().values() if gpu.arch == arch), None)


def detect_gpu() -> GpuSpec | None:
    """This machine's first CUDA GPU; None without a device or CUDA runtime, or if not in the table."""
    try:
        import tvm

        device = tvm.cuda(0)
        if not device.exist:
            return None
        name = device.device_name
    except Exception:  # TVM raises when its CUDA device API is not loaded
        return None
    gpu = find_gpu(name)
    if gpu is None:
        log.warning("GPU '%s' is not in the GPU table (%s)", name, ", ".join(sorted(all_gpus())))
    return gpu


def gpu_for_target(target: Any) -> GpuSpec:
    """The GPU a target is meant for, to plan with.

    ``target`` is a GPU name (``"h100"``), ``"cuda"`` (this machine's GPU, else H100), a target
    dict (its ``"gpu"`` key, else its ``"arch"``: ``sm_90`` -> H100), a JSON string of one, or a
    ``tvm.target.Target``. A CPU target or an unknown GPU or arch is a :class:`TargetError`.
    """
    if isinstance(target, str):
        return _gpu_for_string(target.strip())
    if isinstance(target, dict):
        return _gpu_for_dict(target)
    kind = getattr(getattr(target, "kind", None), "name", None)
    if kind is None:
        raise TargetError(f"cannot tell the GPU of a {type(target).__name__}; pass a GPU name or a target")
    return _gpu_for_dict({"kind": kind, "arch": target.attrs.get("arch")})


def _gpu_for_string(text: str) -> GpuSpec:
    if text.startswith("{"):
        return _gpu_for_dict(json.loads(text))
    if text == "cuda":
        return _gpu_for_dict({"kind": "cuda"})
    gpu = find_gpu(text)
    if gpu is None:
        raise TargetError(f"no GPU for target '{text}'; known GPUs: {', '.join(sorted(all_gpus()))}")
    return gpu


def _gpu_for_dict(spec: dict[str, Any]) -> GpuSpec:
    if spec.get("gpu"):
        gpu = find_gpu(str(spec["gpu"]))
        if gpu is None:
            known = ", ".join(sorted(all_gpus()))
            raise TargetError(f"unknown GPU '{spec['gpu']}' in target; known: {known}")
        return gpu
    if spec.get("kind") != "cuda":
        raise TargetError(f"target kind '{spec.get('kind')}' has no GPU to plan for (FCMs are CUDA kernels)")
    arch = spec.get("arch")
    if not arch:
        return detect_gpu() or all_gpus()[DEFAULT_GPU]
    gpu = gpu_for_arch(str(arch))
    if gpu is None:
        raise TargetError(f"no GPU of arch '{arch}' in the table; add it to fcm_tvm/data/gpus.json")
    return gpu
