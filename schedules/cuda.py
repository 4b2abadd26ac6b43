"""Apply the hand-written schedule of an FCM to its TE PrimFunc for a CUDA target."""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule

from ..gpus import all_gpus
from .rules import RULES
from .spec import FcmSpec, FcmTiles
from .tiles import STATIC_SMEM, default_tiles, plan_kernel


def max_shared_memory(target: tvm.target.Target) -> int:
    """Shared memory a block may use on ``target``'s architecture (the smallest GPU of that arch)."""
    arch = str(target.attrs.get("arch", ""))
    sizes = [gpu.smem_per_block for gpu in all_gpus().values() if gpu.arch == arch]
    return min(sizes) if sizes else STATIC_SMEM


def schedule_cuda(
    spec: FcmSpec, tiles: FcmTiles | None, target: tvm.target.Target, func: tvm.tirx.PrimFunc
) -> tvm.tirx.PrimFunc:
    """``func`` (the TE PrimFunc of ``spec``) scheduled by the rule of ``spec.kind``."""
    max_smem = max_shared_memory(target)
    plan = plan_kernel(spec, tiles or default_tiles(spec, max_smem), max_smem)
    sch = Schedule(func)
    RULES[spec.kind].apply(sch, spec, plan)
    return sch.mod["main"]
