"""The tensor-core kernels (``FcmTiles.tensor_cores = 1``), one module per chain kind, behind one
set of questions: does a tile fit, what does it cost in shared memory and registers, build it."""

from __future__ import annotations

from types import ModuleType

import tvm
from tvm.s_tir import Schedule

from . import cuda_dw_pw_tc, cuda_pw_dw_tc
from .spec import FcmSpec, FcmTiles

KERNELS: dict[str, ModuleType] = {"dw_pw": cuda_dw_pw_tc, "pw_dw": cuda_pw_dw_tc}


def tensor_core_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` with ``tensor_cores`` cannot run ``spec`` (empty if they can)."""
    kernel = KERNELS.get(spec.kind)
    if kernel is None:
        return [f"tensor cores only for {' and '.join(KERNELS)}, not {spec.kind}"]
    return kernel.tensor_core_problems(spec, tiles, max_smem)


def tensor_core_primfunc(
    spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False
) -> tvm.tirx.PrimFunc:
    """The scheduled kernel; call only when :func:`tensor_core_problems` is empty."""
    kernel = KERNELS[spec.kind]
    definition = kernel.tensor_core_definition(spec, tiles, fast_math)
    sch = Schedule(definition.with_attr("global_symbol", name))
    kernel.schedule(sch, spec, tiles)
    return sch.mod["main"]


def tensor_core_definition(spec: FcmSpec, tiles: FcmTiles) -> tvm.tirx.PrimFunc:
    """The unscheduled tiled computation (it runs on a CPU: the tests compare it with float64)."""
    return KERNELS[spec.kind].tensor_core_definition(spec, tiles)


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Shared memory of one block."""
    return KERNELS[spec.kind].shared_bytes(spec, tiles)


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Each thread's share of the block's float32 accumulator fragments."""
    return KERNELS[spec.kind].accumulators_per_thread(spec, tiles)


def padding_waste(spec: FcmSpec, tiles: FcmTiles) -> float:
    """GEMM pixels computed per pixel needed (1.0: no fragment padding)."""
    return KERNELS[spec.kind].padding_waste(spec, tiles)
