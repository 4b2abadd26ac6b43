"""Find DW/PW chain candidates in a Relax function: structure and single consumers, not semantics.

Walking back from a binding, the matcher collects up to three convolution stages (see
:mod:`.patterns`) and, when the binding is an ``add`` of two same-shaped tensors, a residual.
Every run of consecutive stages that ends at the binding is a candidate, longest first; whether
a candidate is a supported FCM (kinds, kernels, strides, dtypes) is :mod:`.chain`'s call.

A candidate is only offered if fusing it cannot change the rest of the graph: every value
between its input and its output must be consumed inside the candidate alone (an intermediate
read elsewhere would have to be written to memory anyway, so it cannot be fused away).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache

import tvm
from tvm import relax

from .patterns import MatchContext, StagePattern, root_op, stage_patterns

MAX_STAGES = 3  # PW -> DW -> PW is the longest FCM


@dataclass(frozen=True)
class StageMatch:
    """One matched stage: its conv call, bias operand (if any), activation and bound variables."""

    conv: relax.Call
    bias: relax.Expr | None  # the per-channel operand of the bias add, as the add reads it
    activation: str
    path_vars: tuple[relax.Var, ...]  # variables bound on the data path, conv first, output last

    @property
    def data(self) -> relax.Expr:
        return self.conv.args[0]

    @property
    def weight(self) -> relax.Expr:
        return self.conv.args[1]

    @property
    def output(self) -> relax.Var:
        return self.path_vars[-1]


@dataclass(frozen=True)
class ChainMatch:
    """Consecutive stages ending at ``root``, with the residual tensor when ``root`` adds one."""

    stages: tuple[StageMatch, ...]
    root: relax.Var
    residual: relax.Expr | None = None

    @property
    def input(self) -> relax.Expr:
        return self.stages[0].data

    @property
    def bound_vars(self) -> tuple[relax.Var, ...]:
        """Every variable the chain binds; all but ``root`` disappear when it is fused."""
        inner = tuple(var for stage in self.stages for var in stage.path_vars)
        return inner if self.residual is None else (*inner, self.root)

    @property
    def intermediates(self) -> tuple[relax.Var, ...]:
        return tuple(var for var in self.bound_vars if not var.same_as(self.root))


class FunctionIndex:
    """Per-function facts the matcher needs: bindings by variable and by value, and consumers."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        self.context = MatchContext(mod, relax.analysis.get_var2val(func))
        self.bindings = [b for block in func.body.blocks for b in block.bindings]
        self.var_of = {binding.value: binding.var for binding in self.bindings}
        self.users = _users(func, self.bindings)

    def var_for(self, value: relax.Expr) -> relax.Var | None:
        return value if isinstance(value, relax.Var) else self.var_of.get(value)


def candidates(index: FunctionIndex, root: relax.Var) -> Iterator[ChainMatch]:
    """Chains that end at ``root``: with a residual first, then longest first."""
    value = index.context.var2val.get(root)
    if not isinstance(value, relax.Call):
        return
    for output, residual in residual_splits(value):
        stages = _stages_ending_at(index, output)
        for start in range(len(stages) - 1):
            chain = ChainMatch(tuple(stages[start:]), root, residual)
            if _closed(index, chain):
                yield chain


def residual_splits(value: relax.Call) -> list[tuple[relax.Expr, relax.Expr | None]]:
    """(last stage output, residual) readings of ``value``: an add of same-shaped tensors can be
    either; anything else is a stage output with no residual."""
    splits: list[tuple[relax.Expr, relax.Expr | None]] = []
    if calls_op(value, "relax.add") and _same_shape(value.args[0], value.args[1], value):
        splits += [(value.args[0], value.args[1]), (value.args[1], value.args[0])]
    return [*splits, (value, None)]


def _stages_ending_at(index: FunctionIndex, output: relax.Expr) -> list[StageMatch]:
    """Up to MAX_STAGES stages, in graph order, whose last one produces ``output``."""
    stages: list[StageMatch] = []
    expr = output
    while len(stages) < MAX_STAGES:
        stage = match_stage(index, expr)
        if stage is None:
            break
        stages.insert(0, stage)
        expr = stage.data
    return stages


def match_stage(index: FunctionIndex, expr: relax.Expr) -> StageMatch | None:
    value = index.context.var2val.get(expr, expr) if isinstance(expr, relax.Var) else expr
    if not isinstance(value, relax.Call) or not isinstance(value.op, tvm.ir.Op):
        return None
    for pattern in _patterns_by_root_op().get(value.op.name, []):
        matched = pattern.match(value, index.context)
        if matched is not None:
            return _stage_match(index, pattern, matched)
    return None


def _stage_match(index: FunctionIndex, pattern: StagePattern, matched) -> StageMatch | None:
    path_vars = tuple(index.var_for(matched[p]) for p in pattern.path)
    if any(var is None for var in path_vars):
        return None  # part of the stage is not bound to a variable (not in normal form)
    bias = None
    if pattern.bias_add is not None:
        add, conv_var = matched[pattern.bias_add], path_vars[0]
        bias = add.args[1] if add.args[0].same_as(conv_var) else add.args[0]
    return StageMatch(matched[pattern.conv], bias, pattern.activation, path_vars)


def _closed(index: FunctionIndex, chain: ChainMatch) -> bool:
    """Fusing ``chain`` drops its intermediates: only the chain itself may read them, and the
    residual must come from outside the chain."""
    bound = chain.bound_vars
    if not read_only_inside(index, chain.intermediates, bound):
        return False
    return chain.residual is None or not any(chain.residual.same_as(var) for var in bound)


def read_only_inside(
    index: FunctionIndex, intermediates: tuple[relax.Var, ...], inside: tuple[relax.Var, ...]
) -> bool:
    """Whether a rewrite may drop ``intermediates``: dataflow variables that only the bindings of
    ``inside`` read."""
    for var in intermediates:
        if not isinstance(var, relax.DataflowVar):
            return False
        if any(user is None or not any(user.same_as(v) for v in inside) for user in index.users[var]):
            return False
    return True


def _users(func: relax.Function, bindings: list[relax.Binding]) -> dict[relax.Var, list[relax.Var | None]]:
    """For each variable, the variables whose bindings read it (None: read by the function's result)."""
    users: dict[relax.Var, list[relax.Var | None]] = defaultdict(list)
    for binding in bindings:
        for var in relax.analysis.free_vars(binding.value):
            users[var].append(binding.var)
    for var in relax.analysis.free_vars(func.body.body):
        users[var].append(None)
    return users


@cache
def _patterns_by_root_op() -> dict[str, list[StagePattern]]:
    table: dict[str, list[StagePattern]] = defaultdict(list)
    for pattern in stage_patterns():
        table[root_op(pattern.root)].append(pattern)
    return dict(table)


def calls_op(call: relax.Call, name: str) -> bool:
    """Whether ``call`` calls the Relax operator ``name`` (e.g. ``relax.add``)."""
    return isinstance(call.op, tvm.ir.Op) and call.op.name == name


def _same_shape(*exprs: relax.Expr) -> bool:
    shapes = [static_shape(e) for e in exprs]
    return shapes[0] is not None and all(s == shapes[0] for s in shapes)


def static_shape(expr: relax.Expr) -> tuple[int, ...] | None:
    ty = getattr(expr, "ty", None)
    if not isinstance(ty, relax.TensorType) or not isinstance(ty.shape, relax.ShapeExpr):
        return None
    values = list(ty.shape.values)
    if not all(isinstance(v, tvm.tirx.IntImm) for v in values):
        return None
    return tuple(int(v) for v in values)
