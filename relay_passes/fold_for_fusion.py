"""FoldAndFuse: fold BatchNorm only into the convolutions that a fusion pass absorbs.

The chain patterns need BatchNorm folded into the conv (a bias), but folding changes the kernels
TVM builds for the convolutions left alone: dlight schedules a depthwise conv fused with its bias
and clip far worse than the bare conv it gets next to an unfolded BatchNorm (330 us instead of
8 us for MobileNetV2's 96x112x112 depthwise on an H100). So this pass fuses on a folded copy,
notes which convs the fusion consumed, then folds only those and fuses again: every kernel left
to stock TVM is exactly the one stock TVM builds.

The second rewrite replays the first one's decisions instead of asking again, because the
partly folded graph reads differently: a PW left next to its BatchNorm matches as a bare conv,
so a residual block whose PW->DW head the first rewrite fused looks like a plain block, which
the planner prices anew, and its DW->PW tail was fused in the head's place (MnasNet and
MobileNetV2 in fp16, 2026-12-06), with the head's PW folded but unfused, away from its tuning record.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import tvm
from tvm import relax

from ..schedules.spec import FcmSpec, FcmTiles
from .fold_batchnorm import FoldBatchNorm, conv2d_calls
from .fuse_dw_pw import Decide, DecisionLike, FuseDepthwisePointwise

log = logging.getLogger(__name__)


@tvm.transform.module_pass(opt_level=0, name="FoldAndFuse")
class FoldAndFuse:
    """Run ``fusion`` (FusePlanner or FuseDepthwisePointwise: its ``target`` and ``decide``) with
    BatchNorm folded where it fuses."""

    def __init__(self, fusion: tvm.transform.Pass):
        self.fusion = fusion

    def transform_module(self, mod: tvm.IRModule, _context: tvm.transform.PassContext) -> tvm.IRModule:
        folded = FoldBatchNorm()(mod)
        decisions = RecordedDecisions(self.fusion.decide)
        consumed = fused_conv_indices(folded, FuseDepthwisePointwise(self.fusion.target, decisions)(folded))
        if not consumed:
            return mod
        partly_folded = FoldBatchNorm(only=consumed)(mod)
        fused = FuseDepthwisePointwise(self.fusion.target, decisions.replay)(partly_folded)
        if missed := sorted(consumed - fused_conv_indices(partly_folded, fused)):
            log.warning("convs %s, fused on the folded graph, were not fused again (folded, stock)", missed)
        return fused


@dataclass(frozen=True)
class NotFusedBefore:
    """The replayed decision for a chain the first rewrite did not fuse."""

    fuse: bool = False
    tiles: FcmTiles | None = None
    reason: str = "not fused by the rewrite of the fully folded graph"


@dataclass
class RecordedDecisions:
    """``decide``, remembering the chains it accepted, so that a second rewrite fuses those alone."""

    decide: Decide
    accepted: dict[FcmSpec, DecisionLike] = field(default_factory=dict)

    def __call__(self, spec: FcmSpec) -> DecisionLike:
        decision = self.decide(spec)
        if decision.fuse:
            self.accepted[spec] = decision
        return decision

    def replay(self, spec: FcmSpec) -> DecisionLike:
        return self.accepted.get(spec, NotFusedBefore())


def fused_conv_indices(before: tvm.IRModule, after: tvm.IRModule) -> frozenset[int]:
    """Indices (in :func:`conv2d_calls` order over ``before``) of the convs missing from ``after``.

    The rewrite keeps every binding it does not fuse, weights included, so a conv survives
    exactly when its weight constant is still used by a conv of ``after``.
    """
    surviving = [call.args[1] for func in _functions(after) for call in conv2d_calls(func)]
    calls = [call for func in _functions(before) for call in conv2d_calls(func)]
    return frozenset(i for i, call in enumerate(calls) if not any(call.args[1].same_as(w) for w in surviving))


def _functions(mod: tvm.IRModule) -> list[relax.Function]:
    return [func for _, func in mod.functions_items() if isinstance(func, relax.Function)]
