"""Apply the hand-written schedule of an FCM to its TE PrimFunc for a CUDA target."""

from __future__ import annotations

import re
from dataclasses import replace

import tvm
from tvm.s_tir import Schedule

from ..gpus import all_gpus
from .cuda_base import KernelPlan
from .rules import RULES
from .spec import FcmSpec, FcmTiles
from .thread_guard import guard_thread_lanes
from .tiles import STATIC_SMEM, default_tiles, plan_kernel

SHARED_ARRAY = re.compile(r"__shared__ alignas\(\d+\) (float|half) \w+\[(\d+)\]")
C_TYPE_BYTES = {"float": 4, "half": 2}  # CUDA C element types in generated code


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
    scheduled = _apply(spec, plan, func)
    if plan.scope == "shared" and static_shared_bytes(scheduled, target) > STATIC_SMEM:
        # TVM sized a buffer larger than the plan's bound: dynamic shared memory has no 48 KiB cap
        scheduled = _apply(spec, replace(plan, scope="shared.dyn"), func)
    return scheduled


def _apply(spec: FcmSpec, plan: KernelPlan, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    sch = Schedule(func)
    RULES[spec.kind].apply(sch, spec, plan)
    return guard_thread_lanes(sch.mod["main"], plan.layout.threads)


def static_shared_bytes(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> int:
    """Bytes of static ``__shared__`` arrays in the CUDA code TVM generates for ``func``."""
    library = tvm.compile(tvm.IRModule({"main": func}), target=target)
    source = "".join(module.inspect_source() for module in library.mod.imports)
    return sum(int(count) * C_TYPE_BYTES[ctype] for ctype, count in SHARED_ARRAY.findall(source))
