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
from dataclasses import dataclass, field
from typing import Protocol

import tvm
from tvm import relax

from ..errors import FcmError
from ..schedules import fcm_primfunc
from ..schedules.spec import FcmSpec, FcmTiles
from .chain import Unsupported, chain_spec, kernel_args
from .matcher import ChainMatch, FunctionIndex, candidates
from .record import SPEC_ATTR, spec_json
from .rewrite import ValueBuilder, fresh_name, replace_bindings

log = logging.getLogger(__name__)

OPAQUE = 8  # relax OpPatternKind::kOpaque: FuseOps leaves the call alone


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


@dataclass
class _Kernels:
    """The FCM PrimFuncs added to the module, one per distinct (spec, tiles), with their call counts."""

    builder: relax.BlockBuilder
    target: tvm.target.Target
    added: dict[tuple[FcmSpec, FcmTiles | None], tuple[tvm.ir.GlobalVar, Accepted]] = field(
        default_factory=dict
    )
    calls: dict[str, int] = field(default_factory=dict)

    def kernel_for(self, choice: Accepted) -> tvm.ir.GlobalVar:
        """The GlobalVar of the kernel for ``choice``; FcmError if the kernel cannot be built."""
        key = (choice.spec, choice.decision.tiles)
        if key not in self.added:
            func = fcm_primfunc(choice.spec, choice.decision.tiles, self.target)
            name = fresh_name(self.builder, f"fcm_{choice.spec.kind}")
            func = func.with_attr("global_symbol", name).with_attr("op_pattern", OPAQUE)
            self.added[key] = (self.builder.add_func(func, name), choice)
        gvar = self.added[key][0]
        self.calls[gvar.name_hint] = self.calls.get(gvar.name_hint, 0) + 1
        return gvar

    def annotate(self) -> None:
        """Record on each kernel what it computes and how many call sites share it."""
        module = self.builder.get()
        for (spec, tiles), (gvar, choice) in self.added.items():
            record = spec_json(spec, tiles, choice.decision.reason, self.calls[gvar.name_hint])
            self.builder.update_func(gvar, module[gvar].with_attr(SPEC_ATTR, record))


def _fcm_call(gvar: tvm.ir.GlobalVar, choice: Accepted) -> ValueBuilder:
    def build(_builder: relax.BlockBuilder) -> relax.Expr:
        return relax.call_tir(gvar, choice.args, out_ty=choice.chain.root.ty)

    return build


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
        builder = relax.BlockBuilder(mod)
        kernels = _Kernels(builder, self.target)
        rewrites: dict[tvm.ir.GlobalVar, dict[relax.Var, ValueBuilder]] = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                new_values = self._new_values(mod, func, kernels)
                if new_values:
                    rewrites[gvar] = new_values
        if not rewrites:
            return mod
        kernels.annotate()
        with_kernels = builder.get()
        for gvar, new_values in rewrites.items():
            builder.update_func(gvar, replace_bindings(with_kernels, mod[gvar], new_values))
        return _without_orphans(mod, builder.get())

    def _new_values(
        self, mod: tvm.IRModule, func: relax.Function, kernels: _Kernels
    ) -> dict[relax.Var, ValueBuilder]:
        new_values = {}
        for choice in select_chains(mod, func, self.decide):
            try:
                gvar = kernels.kernel_for(choice)
            except FcmError as error:
                log.warning(
                    "leaving %s %s unfused: %s", choice.spec.kind, choice.spec.input.as_tuple(), error
                )
                continue
            new_values[choice.chain.root] = _fcm_call(gvar, choice)
        return new_values
