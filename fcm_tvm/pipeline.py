"""Where fcm-tvm's passes sit in front of TVM's stock Relax pipeline."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import tvm

from . import cuda_postproc
from .errors import FcmError
from .records import DATABASE
from .target import ResolvedTarget

FUSE_MODES = ("auto", "all", "none")
# FuseGatedPointwise (squeeze-excitation's product never written) runs on batches up to
# GATED_PW_MAX_BATCH; the variable overrides it: "1" at every batch, "0" at none
GATED_PW_ENV = "FCM_TVM_GATED_PW"
GATED_PW_MAX_BATCH = 0  # off until a GPU build with it wins end to end (docs/kernels.md)
# A GPU check's JSON (tests/gpu/check_gated_pw.py --json): its fastest correct tiles per kernel
# replace the default tiles of the gated PWs
GATED_TILES_ENV = "FCM_TVM_GATED_TILES"


@dataclass(frozen=True)
class FusedChain:
    """One chain the rewrite turned into an FCM kernel, as recorded on its PrimFunc."""

    function: str
    spec: dict

    @property
    def kind(self) -> str:
        return self.spec.get("kind", "?")

    def to_json(self) -> dict:
        return {"function": self.function, **self.spec}


def fusion_passes(
    target: ResolvedTarget, fuse: str, tuned: bool = False, cuda_graph: bool = False
) -> list[tvm.transform.Pass]:
    """The passes that fold BatchNorm and rewrite DW/PW chains into FCM kernels; ``tuned``: the
    rest will be MetaSchedule-tuned, ``cuda_graph``: launches go into CUDA graphs, both of which
    the planner weighs."""
    if fuse == "none":
        return []
    from .relay_passes import (
        FoldAndFuse,
        FuseDepthwisePointwise,
        FuseGatedPointwise,
        FusePlanner,
        FuseSqueezeExcite,
    )

    if fuse == "all":
        chains = FoldAndFuse(FuseDepthwisePointwise(target.tvm_target))
    else:
        chains = FoldAndFuse(FusePlanner(target.tvm_target, target.gpu, tuned, cuda_graph))
    sm_count = target.gpu.sm_count if target.gpu else None
    passes = [chains]
    if (max_batch := gated_pw_max_batch()) != 0:  # off: no scan of the module, no tiles file read
        passes.append(FuseGatedPointwise(target.tvm_target, sm_count, max_batch, measured_gated_tiles()))
    return [*passes, FuseSqueezeExcite(target.tvm_target, sm_count)]


def gated_pw_max_batch() -> int | None:
    """The largest batch FuseGatedPointwise rewrites (``None``: any): :data:`GATED_PW_MAX_BATCH`
    unless :data:`GATED_PW_ENV` says ``1`` or ``0``."""
    setting = os.environ.get(GATED_PW_ENV, "")
    if setting not in ("", "0", "1"):
        raise FcmError(f"{GATED_PW_ENV}={setting!r}: expected 1 (every batch) or 0 (none)")
    return {"1": None, "0": 0}.get(setting, GATED_PW_MAX_BATCH)


def measured_gated_tiles() -> dict:
    """The fastest measured tiles by gated PW key, from the JSON :data:`GATED_TILES_ENV` names
    (empty when it names none)."""
    from .schedules.gated_pw_tc import fastest_tiles

    path = os.environ.get(GATED_TILES_ENV, "")
    if not path:
        return {}
    try:
        return fastest_tiles(json.loads(Path(path).read_text())["rows"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise FcmError(f"{GATED_TILES_ENV}={path}: not a gated pointwise check's JSON ({error})") from None


def apply_fusion(
    module: tvm.IRModule, target: ResolvedTarget, fuse: str, tuned: bool = False, cuda_graph: bool = False
) -> tuple[tvm.IRModule, list[FusedChain]]:
    """Run the fusion passes; return the module and what they fused."""
    for fusion_pass in fusion_passes(target, fuse, tuned, cuda_graph):
        module = fusion_pass(module)
    return module, fused_chains(module)


def fused_chains(module: tvm.IRModule) -> list[FusedChain]:
    """What the fusion passes fused in ``module``, read from the records on their kernels."""
    from .relay_passes.record import EXCITE_ATTR, SPEC_ATTR

    chains = []
    for global_var, function in module.functions.items():
        attrs = function.attrs or {}
        for attr in (SPEC_ATTR, EXCITE_ATTR):
            if attr in attrs:
                chains.append(FusedChain(global_var.name_hint, json.loads(str(attrs[attr]))))
    return sorted(chains, key=lambda chain: chain.function)


def stock_pipeline(target: tvm.target.Target, tuning_records: str | None = None) -> tvm.transform.Pass:
    """TVM's default Relax pipeline for ``target``, applying a MetaSchedule database if given.

    The database is applied right after FuseTIR, before dlight, so that tuned kernels win and
    dlight schedules only what the database does not cover (FCM kernels are already scheduled).
    dlight runs as :class:`~fcm_tvm.default_schedules.ApplyStockSchedule`: the same rules, but a
    rule that raises passes the function on to the next one instead of stopping the build.
    """

    if target.kind.name == "cuda":
        cuda_postproc.install()  # records may hold candidates that build only with the repair

    @tvm.transform.module_pass(opt_level=0, name="StockPipeline")
    def run(module: tvm.IRModule, _context) -> tvm.IRModule:
        with target:  # passes are made under the target, as TVM's pipeline makes them
            passes = _default_passes(target)
            if tuning_records is not None:
                if replays_tensor_intrinsics(tuning_records):
                    register_tensor_intrinsics()
                database = tvm.relax.transform.MetaScheduleApplyDatabase(str(tuning_records))
                passes.insert(next(i for i, p in enumerate(passes) if p.info.name == "FuseTIR") + 1, database)
            return tvm.transform.Sequential(passes)(module)

    return run


def replays_tensor_intrinsics(tuning_records: str | os.PathLike) -> bool:
    """Whether a database's traces tensorize (fp16 records do, fp32 ones did not): only then does
    its replay need :func:`register_tensor_intrinsics`, whose import takes 10 s on 2 cores."""
    return "tensorize" in (Path(tuning_records) / DATABASE).read_text()


def register_tensor_intrinsics() -> None:
    """Register TVM's tensor intrinsics (``wmma_fill_16x16x16_f16``, ...) before a database is
    replayed: fp16 records hold tensor-core schedules, and in a process that did not tune, the
    replay otherwise fails with "TensorIntrin ... is not registered" (H200, fp16 MobileNetV2)."""
    import tvm.s_tir.tensor_intrin  # noqa: F401  (registers on import)


def _default_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """The pass list behind ``relax.get_default_pipeline`` for CUDA and CPU targets, with dlight's
    ``ApplyDefaultSchedule`` replaced by its tolerant twin."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic
    from tvm.relax.backend.cuda import pipeline as cuda

    from .default_schedules import ApplyStockSchedule

    backend = cuda if target.kind.name == "cuda" else cpu_generic
    passes = [
        *backend.library_dispatch_passes(target),
        *backend.legalize_passes(target),
        *backend.dataflow_lower_passes(target),
        *backend.finalize_passes(target),
    ]
    return [ApplyStockSchedule(list(p.rules)) if p.info.name == "ApplyDefaultSchedule" else p for p in passes]


def tuning_passes(target: tvm.target.Target) -> list[tvm.transform.Pass]:
    """What runs before MetaSchedule extracts tasks: legalize and fuse, as the stock pipeline does."""
    passes = _default_passes(target)
    after_fuse_tir = next(i for i, p in enumerate(passes) if p.info.name == "FuseTIR") + 1
    return passes[:after_fuse_tir]


def fcm_relax_pipeline(fuse: str = "auto", gpu: str | None = None) -> tvm.transform.Pass:
    """A Relax pipeline: fold BatchNorm and fuse DW/PW chains for the current target, then stock.

    The target is the one ``tvm.compile`` enters (``Target.current()``); ``gpu`` overrides the GPU
    the planner prices for (by default the target's, see :mod:`fcm_tvm.target`).
    """
    from .gpus import get_gpu
    from .target import resolve_target

    @tvm.transform.module_pass(opt_level=0, name="FcmPipeline")
    def run(module: tvm.IRModule, _context) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        resolved = resolve_target(target)
        if gpu is not None:
            resolved = ResolvedTarget(resolved.tvm_target, get_gpu(gpu))
        module, _ = apply_fusion(module, resolved, fuse)
        return stock_pipeline(target)(module)

    return run
