"""FuseDepthwisePointwise: rewrite DW/PW chains into ``call_tir`` of one FCM kernel each.

For every Relax function, bindings are visited from the last to the first; at each, the chain
candidates ending there (residual first, longest first: PW->DW->PW before DW->PW) are tried until
one is a supported FcmSpec that ``decide`` accepts, or a declined PW->DW->PW's decision names its
PW->DW head as the better fallback (``fallback == "head"``): then no chain through its last PW is
fused (not its tail, nor, at the PW's own binding, a residual block read without its add), and
the head is tried at the DW's binding. Chains never overlap, and the rest of the graph is left
exactly as it was for the stock pipeline.

Each accepted chain becomes ``R.call_tir(fcm_<kind>_<n>, [x, w0, b0, w1, b1, ..., residual])``.
Chains with equal specs and tiles share one PrimFunc, which carries:

* ``fcm.spec``: a JSON record of the spec, tiles, reason and number of call sites (see :mod:`.record`);
* ``op_pattern`` = opaque, so that FuseOps never merges the kernel with its neighbours (on CUDA it
  is hand-scheduled and marked ``tirx.is_scheduled``, which dlight and MetaSchedule leave alone).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import tvm
from tvm import relax

from ..errors import FcmError
from ..schedules import fcm_primfunc
from ..schedules.spec import FcmSpec, FcmTiles
from .chain import Unsupported, chain_spec, kernel_args
from .matcher import ChainMatch, FunctionIndex, candidates
from .record import SPEC_ATTR, spec_record
from .rewrite import KernelRewrite, call_value

log = logging.getLogger(__name__)


class DecisionLike(Protocol):
    """What ``decide`` returns (the planner's Decision has these attributes, and ``fallback``,
    which a decision may leave out: see the module docstring)."""

    fuse: bool
    tiles: FcmTiles | None
    reason: str


Decide = Callable[[FcmSpec], DecisionLike]


@dataclass(frozen=True)
class FuseEverything:
    """The decision without a cost model: fuse every supported chain with the default tiles."""

    fuse: bool = True
    tiles: FcmTiles | None = None
    reason: str = "every supported chain is fused (no cost model)"


def fuse_everything(_spec: FcmSpec) -> DecisionLike:
    return FuseEverything()


@dataclass(frozen=True)
class Accepted:
    """A chain to rewrite, its spec and the decision that accepted it."""

    chain: ChainMatch
    spec: FcmSpec
    args: list[relax.Expr]
    decision: DecisionLike


def select_chains(mod: tvm.IRModule, func: relax.Function, decide: Decide) -> list[Accepted]:
    """The chains of ``func`` to fuse, in graph order (see the module docstring for the order tried)."""
    index = FunctionIndex(mod, func)
    taken: set[relax.Var] = set()
    accepted: list[Accepted] = []
    for binding in reversed(index.bindings):
        if binding.var in taken:
            continue
        for chain in candidates(index, binding.var):
            choice, decision = _consider(index, chain, taken, decide)
            if choice is not None:
                accepted.append(choice)
                taken.update(chain.bound_vars)
                break
            if getattr(decision, "fallback", None) == "head":
                taken.update(chain.stages[-1].path_vars)  # no chain through its last PW: no tail
                break
    return accepted[::-1]


def _consider(
    index: FunctionIndex, chain: ChainMatch, taken: set[relax.Var], decide: Decide
) -> tuple[Accepted | None, DecisionLike | None]:
    """The chain accepted, or None with the decision that declined it (None if none was asked)."""
    if any(var in taken for var in chain.bound_vars):
        return None, None
    try:
        spec = chain_spec(chain)
        args = kernel_args(chain, spec, index.context.var2val)
    except Unsupported as reason:
        log.debug("chain ending at %s is not an FCM: %s", chain.root, reason)
        return None, None
    decision = decide(spec)
    if not decision.fuse:
        log.debug("not fusing %s %s: %s", spec.kind, spec.input.as_tuple(), decision.reason)
        return None, decision
    return Accepted(chain, spec, args, decision), decision


def _without_orphans(before: tvm.IRModule, after: tvm.IRModule) -> tvm.IRModule:
    """``after`` without the private PrimFuncs only fused chains called (the Clips' maximum/minimum)."""
    orphans = _called(before) - _called(after)
    for name in orphans:
        func = after[name]
        if isinstance(func, tvm.tirx.PrimFunc) and "global_symbol" not in (func.attrs or {}):
            del after[name]
    return after


def _called(mod: tvm.IRModule) -> set[str]:
    return {
        gvar.name_hint
        for _, func in mod.functions_items()
        if isinstance(func, relax.Function)
        for gvar in relax.analysis.all_global_vars(func)
    }


@tvm.transform.module_pass(opt_level=0, name="FuseDepthwisePointwise")
class FuseDepthwisePointwise:
    """Rewrite supported DW/PW chains into FCM kernels for ``target``.

    ``decide(spec)`` returns an object with ``fuse``, ``tiles`` and ``reason`` (FusePlanner passes
    the cost model's); None fuses every supported chain with the kernels' default tiles.
    """

    def __init__(self, target: tvm.target.Target | str | dict, decide: Decide | None = None):
        self.target = target if isinstance(target, tvm.target.Target) else tvm.target.Target(target)
        self.decide = decide or fuse_everything

    def transform_module(self, mod: tvm.IRModule, _context: tvm.transform.PassContext) -> tvm.IRModule:
        rewrite = KernelRewrite(mod)
        reasons: dict[tuple[FcmSpec, FcmTiles | None], str] = {}  # the first call's, per kernel
        for gvar, func in mod.functions_items():
            if not isinstance(func, relax.Function):
                continue
            for choice in select_chains(mod, func, self.decide):
                key = (choice.spec, choice.decision.tiles)
                try:
                    kernel = rewrite.kernel(
                        key, f"fcm_{choice.spec.kind}", lambda key=key: self._primfunc(*key)
                    )
                except FcmError as error:
                    log.warning(
                        "leaving %s %s unfused: %s", choice.spec.kind, choice.spec.input.as_tuple(), error
                    )
                    continue
                reasons.setdefault(key, choice.decision.reason)
                rewrite.replace(
                    gvar, choice.chain.root, call_value(kernel, choice.args, choice.chain.root.ty), (key,)
                )
        fused = rewrite.finish(SPEC_ATTR, lambda key: spec_record(*key, reasons[key]))
        return fused if fused is mod else _without_orphans(mod, fused)

    def _primfunc(self, spec: FcmSpec, tiles: FcmTiles | None) -> tvm.tirx.PrimFunc:
        return fcm_primfunc(spec, tiles, self.target)
