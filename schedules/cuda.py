"""Apply the hand-written schedule of an FCM to its TE PrimFunc for a CUDA target."""

from __future__ import annotations

from dataclasses import replace

import tvm
from tvm.s_tir import Schedule
from tvm.s_tir.analysis import calculate_allocated_bytes

from ..errors import FcmError
from ..gpus import all_gpus
from .cuda_base import KernelPlan
from .layout import STATIC_SMEM
from .rules import RULES
from .spec import FcmSpec, FcmTiles
from .thread_guard import guard_thread_lanes
from .tiles import default_tiles, plan_kernel
from .wmma import shared_memory_problems

SHARED_SCOPES = ("shared", "shared.dyn")


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
    allocated = allocated_shared_bytes(scheduled, target)
    if plan.scope == "shared" and allocated > STATIC_SMEM:
        # TVM sized a buffer larger than the plan's bound: dynamic shared memory has no 48 KiB cap
        scheduled = _apply(spec, replace(plan, scope="shared.dyn"), func)
        allocated = allocated_shared_bytes(scheduled, target)
    if allocated > max_smem:  # the plan's bound missed how TVM sized a buffer: it would not launch
        raise FcmError(
            f"tiles {plan.tiles.label} of FCM {spec.key}: TVM allocates {allocated} bytes of shared "
            f"memory per block, more than the {max_smem} of {target.attrs.get('arch', 'the GPU')}"
        )
    return scheduled


def _apply(spec: FcmSpec, plan: KernelPlan, func: tvm.tirx.PrimFunc) -> tvm.tirx.PrimFunc:
    sch = Schedule(func)
    RULES[spec.kind].apply(sch, spec, plan)
    return guard_thread_lanes(sch.mod["main"], plan.layout.threads)


def allocated(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> dict[str, int]:
    """Bytes TVM allocates for ``func`` by scope (``shared``, static; ``shared.dyn``, per block;
    ``local``, per thread), after its lowering passes (which merge dynamic buffers, reuse the
    space of those no longer read, and size each buffer by the region its accesses span)."""
    pipeline, _, _ = tvm.tirx.get_default_tir_pipeline(target)
    lowered = pipeline(tvm.IRModule({"main": func.with_attr("target", target)}))
    return {scope: int(size) for scope, size in calculate_allocated_bytes(lowered["main"])["main"].items()}


def allocated_shared(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> dict[str, int]:
    """:func:`allocated` of the shared-memory scopes."""
    return _shared(allocated(func, target))


def _shared(sizes: dict[str, int]) -> dict[str, int]:
    return {scope: size for scope, size in sizes.items() if scope in SHARED_SCOPES}


def allocated_shared_bytes(func: tvm.tirx.PrimFunc, target: tvm.target.Target) -> int:
    """:func:`allocated_shared` summed over the scopes."""
    return sum(allocated_shared(func, target).values())


def check_launchable(
    func: tvm.tirx.PrimFunc, target: tvm.target.Target, what: str, max_local: int | None = None
) -> tvm.tirx.PrimFunc:
    """``func`` (a scripted kernel: static accumulators, dynamic tiles) if its shared memory as
    TVM allocates it launches on ``target`` (:func:`.wmma.shared_memory_problems`) and its
    per-thread buffers take at most ``max_local`` bytes (where given), else :class:`FcmError`
    naming ``what``: the tile's estimate may miss how TVM merged the buffers, and where TVM cannot
    bound a register tile it sizes it over a whole loop, in local memory."""
    sizes = allocated(func, target)
    shared = _shared(sizes)
    total, static = sum(shared.values()), shared.get("shared", 0)
    problems = shared_memory_problems(total, static, max_shared_memory(target))
    if max_local is not None and sizes.get("local", 0) > max_local:
        problems.append(
            f"{sizes['local']} bytes a thread in local memory, more than its {max_local} bytes of "
            "register tiles (TVM could not bound one)"
        )
    if problems:
        raise FcmError(f"{what}: as TVM allocates it, " + "; ".join(problems))
    return func
