"""``fcm_primfunc``: the PrimFunc of an FCM for a target, scheduled by hand for CUDA."""

from __future__ import annotations

from functools import lru_cache

import tvm

from ..errors import FcmError
from .compute import fcm_te_primfunc
from .scripted import is_scripted, scripted_primfunc, scripted_problems, scripted_register_bytes
from .spec import FcmSpec, FcmTiles

CPU_KINDS = ("llvm", "c")
SCHEDULED_ATTR = "tirx.is_scheduled"  # dlight and MetaSchedule leave such functions alone
OP_PATTERN_ATTR = "op_pattern"  # relax FuseOps must not fuse a scheduled kernel with its neighbours
OPAQUE = 8  # tvm.relax OpPatternKind.kOpaque


def symbol_name(spec: FcmSpec) -> str:
    """Global symbol of the kernel, e.g. ``fcm_dw_pw`` (the relax pass renames it)."""
    return f"fcm_{spec.kind}"


@lru_cache(maxsize=256)
def _cuda_primfunc(spec: FcmSpec, tiles: FcmTiles | None, target_json: str) -> tvm.tirx.PrimFunc:
    """Scheduling is pure and costs a code generation (the shared-memory check): done once per key.

    ``FoldAndFuse`` runs the fusion twice, and a benchmark compiles a model several times.
    """
    from .cuda import check_launchable, max_shared_memory, schedule_cuda

    target = tvm.target.Target(target_json)
    fast_math = spec.dtype == "float16"  # compute.FAST_ACTIVATION_BUILDERS: float16 on CUDA only
    if is_scripted(tiles):
        problems = scripted_problems(spec, tiles, max_shared_memory(target))
        if problems:
            raise FcmError(f"tiles {tiles.label} of FCM {spec.key}: " + "; ".join(problems))
        scheduled = scripted_primfunc(spec, tiles, symbol_name(spec), fast_math)
        what = f"tiles {tiles.label} of FCM {spec.key}"
        check_launchable(scheduled, target, what, scripted_register_bytes(spec, tiles))
    else:
        definition = fcm_te_primfunc(spec, symbol_name(spec), fast_math)
        scheduled = schedule_cuda(spec, tiles, target, definition)
    return scheduled.with_attrs({SCHEDULED_ATTR: True, OP_PATTERN_ATTR: OPAQUE})


def fcm_primfunc(spec: FcmSpec, tiles: FcmTiles | None, target: tvm.target.Target) -> tvm.tirx.PrimFunc:
    """The FCM for ``target``: plain TE on CPUs (the stock pipeline schedules it), hand-scheduled on CUDA.

    ``tiles=None`` picks :func:`default_tiles`; tiles that do not fit raise :class:`FcmError`.
    """
    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target
    kind = target.kind.name
    if kind in CPU_KINDS:
        return fcm_te_primfunc(spec, symbol_name(spec))
    if kind == "cuda":
        return _cuda_primfunc(spec, tiles, str(target))
    raise FcmError(f"no FCM kernels for target kind '{kind}' (supported: cuda, {', '.join(CPU_KINDS)})")
