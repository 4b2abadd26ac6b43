"""FusePlanner: fuse a DW/PW chain only where the global-memory cost model says it pays.

The pass is FuseDepthwisePointwise with ``fcm_tvm.planner.plan_chain(spec, gpu)`` as the
decision for every candidate, so the planner also picks the tiles. Without a GPU (a CPU target)
there is nothing to price and nothing is fused. :func:`find_chains` lists the chains a rewrite
would consider and :func:`fused_decisions` those it fuses, for ``fcm_tvm.plan`` to tabulate
without rewriting anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax

from ..gpus import GpuSpec, get_gpu
from ..schedules.spec import FcmSpec, FcmTiles
from .fold_batchnorm import FoldBatchNorm
from .fuse_dw_pw import (
    Accepted,
    Decide,
    DecisionLike,
    FuseDepthwisePointwise,
    fuse_everything,
    select_chains,
)


@dataclass(frozen=True)
class _NoGpu:
    fuse: bool = False
    tiles: FcmTiles | None = None
    reason: str = "no GPU to plan for (FCM kernels are for NVIDIA GPUs)"


@tvm.transform.module_pass(opt_level=0, name="FusePlanner")
class FusePlanner:
    """Rewrite the DW/PW chains that FusePlanner's cost model accepts for ``gpu``, with its tiles.

    ``gpu``: a :class:`~fcm_tvm.gpus.GpuSpec`, a GPU table key such as ``"h100"``, or None.
    ``tuned``: the rest of the model will be MetaSchedule-tuned; ``cuda_graph``: the build
    captures its launches in CUDA graphs (both: see ``plan_chain``).
    """

    def __init__(
        self,
        target: tvm.target.Target | str | dict,
        gpu: GpuSpec | str | None,
        tuned: bool = False,
        cuda_graph: bool = False,
    ):
        self.target = target
        self.gpu = get_gpu(gpu) if isinstance(gpu, str) else gpu
        self.tuned = tuned
        self.cuda_graph = cuda_graph

    def decide(self, spec: FcmSpec) -> DecisionLike:
        if self.gpu is None:
            return _NoGpu()
        from ..planner import plan_chain  # the cost model is only needed when planning

        return plan_chain(spec, self.gpu, tuned=self.tuned, cuda_graph=self.cuda_graph)

    def transform_module(self, mod: tvm.IRModule, _context: tvm.transform.PassContext) -> tvm.IRModule:
        return FuseDepthwisePointwise(self.target, self.decide)(mod)


def find_chains(mod: tvm.IRModule) -> list[FcmSpec]:
    """The supported chains of every Relax function of ``mod`` (BatchNorm folded first), in
    graph order: those FuseDepthwisePointwise would fuse when every decision is yes."""
    return [choice.spec for choice in _selected(mod, fuse_everything)]


def fused_decisions(mod: tvm.IRModule, decide: Decide) -> list[DecisionLike]:
    """The decisions of the chains FuseDepthwisePointwise fuses in ``mod`` with ``decide``, in
    graph order: whole chains, and the sub-chains it fuses in place of declined PW->DW->PW blocks.
    Why: :func:`find_chains` lists the whole chains only, and a plan of those says "keep" for a
    block whose DW->PW tail or PW->DW head the build then fuses."""
    return [choice.decision for choice in _selected(mod, decide)]


def _selected(mod: tvm.IRModule, decide: Decide) -> list[Accepted]:
    mod = FoldBatchNorm()(mod)
    functions = [func for _, func in mod.functions_items() if isinstance(func, relax.Function)]
    return [choice for func in functions for choice in select_chains(mod, func, decide)]
