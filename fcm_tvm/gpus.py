"""GPU characteristics as data (``data/gpus.json``), looked up by short name or device name."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from .errors import FcmError


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


@cache
def all_gpus() -> dict[str, GpuSpec]:
    """Every GPU in the table, by short key (``h100``, ``a100``, ...)."""
    text = resources.files("fcm_tvm").joinpath("data/gpus.json").read_text()
    table = json.loads(text)["gpus"]
    return {key: GpuSpec(key=key, **{**row, "names": tuple(row["names"])}) for key, row in table.items()}


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
