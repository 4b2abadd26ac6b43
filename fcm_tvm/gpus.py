"""GPU characteristics as data (``data/gpus.json``), looked up by short name, device name or target."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from .errors import FcmError

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
