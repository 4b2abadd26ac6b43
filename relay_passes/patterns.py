"""``tvm.relax.dpl`` patterns of one convolution stage as TVM's ONNX importer emits it.

A stage is ``conv2d -> [bias add] -> [activation]``. The bias is the importer's
``add(conv, reshape(b, [1, C, 1, 1]))`` (or an already folded constant). Each activation comes in
the forms the importer (or a common exporter) produces, e.g. ReLU6 is ``R.clip`` inside
HardSwish but ``call_tir(maximum)`` then ``call_tir(minimum)`` for an ONNX Clip node.

Patterns only fix the graph's structure. Values a pattern cannot express (the ``3`` in
``x + 3``, the bounds of a Clip) are listed as checks on the match; shapes, strides and groups
are judged later, when the chain becomes an FcmSpec (see :mod:`.chain`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, GlobalVarPattern, is_const, is_op, is_tuple, wildcard

from .constants import is_close, scalar_value
from .tir_clip import clip_bound

Matched = Mapping[DFPattern, relax.Expr]


@dataclass(frozen=True)
class MatchContext:
    """What checks need besides the matched expressions: the module (for call_tir callees) and the
    bindings of the function (to read constants through variables)."""

    mod: tvm.IRModule
    var2val: Mapping[relax.Var, relax.Expr]


@dataclass(frozen=True)
class ScalarIs:
    """The expression matched by ``pattern`` is the compile-time scalar ``value``."""

    pattern: DFPattern
    value: float

    def holds(self, matched: Matched, context: MatchContext) -> bool:
        expr = matched[self.pattern]
        found = scalar_value(expr, context.var2val)
        return found is not None and is_close(found, self.value, _dtype_of(expr))


@dataclass(frozen=True)
class TirClipIs:
    """The ``call_tir`` matched by ``pattern`` computes ``op(x, value)`` elementwise (op: max/min)."""

    pattern: DFPattern
    op: str
    value: float

    def holds(self, matched: Matched, context: MatchContext) -> bool:
        call = matched[self.pattern]
        found = clip_bound(call, context.mod, context.var2val)
        return found is not None and found[0] == self.op and is_close(found[1], self.value, _dtype_of(call))


Check = ScalarIs | TirClipIs


@dataclass(frozen=True)
class Fragment:
    """A pattern on some input ``x``: its output pattern, the data-path calls from ``x`` to it (the
    values the fused kernel keeps on chip), and the checks its constants must pass."""

    root: DFPattern
    path: tuple[DFPattern, ...]
    checks: tuple[Check, ...] = ()


def _call(op: str, *args: DFPattern) -> DFPattern:
    return is_op(op)(*args)


def _scalar(value: float) -> tuple[DFPattern, ScalarIs]:
    pattern = wildcard()
    return pattern, ScalarIs(pattern, value)


# ---- activations: each builder maps the stage's pre-activation pattern x to a Fragment ----


def _identity(x: DFPattern) -> Fragment:
    return Fragment(x, ())


def _unary(op: str) -> Callable[[DFPattern], Fragment]:
    def build(x: DFPattern) -> Fragment:
        root = _call(op, x)
        return Fragment(root, (root,))

    return build


def _clip_op(x: DFPattern, low: float, high: float) -> Fragment:
    (lo, lo_check), (hi, hi_check) = _scalar(low), _scalar(high)
    root = _call("relax.clip", x, lo, hi)
    return Fragment(root, (root,), (lo_check, hi_check))


def _call_tir_on(x: DFPattern) -> DFPattern:
    args = is_tuple([x]) | is_tuple([x, wildcard()])
    return is_op("relax.call_tir")(GlobalVarPattern(), args, add_constraint=False)


def _clip_tir(x: DFPattern, low: float, high: float) -> Fragment:
    lower = _call_tir_on(x)
    upper = _call_tir_on(lower)
    return Fragment(upper, (lower, upper), (TirClipIs(lower, "max", low), TirClipIs(upper, "min", high)))


def _relu6_forms() -> list[Callable[[DFPattern], Fragment]]:
    return [
        lambda x: _clip_op(x, 0.0, 6.0),  # R.clip: the importer's HardSwish, R.nn.relu6
        lambda x: _clip_tir(x, 0.0, 6.0),  # ONNX Clip(0, 6)
    ]


def _hardswish_forms() -> list[Callable[[DFPattern], Fragment]]:
    """x * relu6(x + 3) / 6 in the orders exporters write it, and x * HardSigmoid(x)."""

    def shifted_relu6(x: DFPattern, relu6: Callable[[DFPattern], Fragment]):
        three, three_check = _scalar(3.0)
        shifted = _call("relax.add", x, three)
        inner = relu6(shifted)
        return inner, (shifted, *inner.path), (three_check, *inner.checks)

    def divide_then_multiply(relu6):  # ONNX HardSwish: x * (relu6(x + 3) / 6)
        def build(x: DFPattern) -> Fragment:
            inner, path, checks = shifted_relu6(x, relu6)
            six, six_check = _scalar(6.0)
            scaled = _call("relax.divide", inner.root, six)
            root = _call("relax.multiply", x, scaled)
            return Fragment(root, (*path, scaled, root), (*checks, six_check))

        return build

    def multiply_then_divide(relu6):  # x * relu6(x + 3) / 6, left to right
        def build(x: DFPattern) -> Fragment:
            inner, path, checks = shifted_relu6(x, relu6)
            six, six_check = _scalar(6.0)
            product = _call("relax.multiply", x, inner.root)
            root = _call("relax.divide", product, six)
            return Fragment(root, (*path, product, root), (*checks, six_check))

        return build

    def hard_sigmoid_times(x: DFPattern) -> Fragment:  # x * ONNX HardSigmoid(alpha=1/6, beta=0.5)
        gate = _hard_sigmoid(x)
        root = _call("relax.multiply", x, gate.root)
        return Fragment(root, (*gate.path, root), gate.checks)

    forms = [
        build(relu6) for relu6 in _relu6_forms() for build in (divide_then_multiply, multiply_then_divide)
    ]
    return [*forms, hard_sigmoid_times]


def _hard_sigmoid(x: DFPattern) -> Fragment:
    """ONNX HardSigmoid(alpha=1/6, beta=0.5) as the importer writes it: clip(1/6 * x + 0.5, 0, 1)."""
    (alpha, alpha_check), (beta, beta_check) = _scalar(1 / 6), _scalar(0.5)
    scaled = _call("relax.multiply", alpha, x)
    shifted = _call("relax.add", scaled, beta)
    clipped = _clip_op(shifted, 0.0, 1.0)
    return Fragment(
        clipped.root, (scaled, shifted, *clipped.path), (alpha_check, beta_check, *clipped.checks)
    )


def _silu_product(x: DFPattern) -> Fragment:
    gate = _call("relax.sigmoid", x)
    root = _call("relax.multiply", x, gate)
    return Fragment(root, (gate, root))


# activation name (as in FcmSpec) -> the forms it is found in; most specific forms first
ACTIVATION_FORMS: dict[str, list[Callable[[DFPattern], Fragment]]] = {
    "hardswish": _hardswish_forms(),
    "silu": [_silu_product, _unary("relax.nn.silu")],
    "relu6": _relu6_forms(),
    "relu": [_unary("relax.nn.relu")],
    "sigmoid": [_unary("relax.sigmoid")],
    "hardsigmoid": [_hard_sigmoid],  # squeeze-excitation's gate in MobileNetV3 (no FCM takes it)
    "none": [_identity],
}


@dataclass(frozen=True)
class StagePattern:
    """``data -> conv2d(data, weight) -> [add(., bias)] -> activation``."""

    data: DFPattern
    weight: DFPattern
    conv: DFPattern
    bias_add: DFPattern | None
    activation: str
    fragment: Fragment

    @property
    def root(self) -> DFPattern:
        return self.fragment.root

    @property
    def path(self) -> tuple[DFPattern, ...]:
        """The data-path calls of the stage, conv first."""
        head = (self.conv,) if self.bias_add is None else (self.conv, self.bias_add)
        return (*head, *self.fragment.path)

    def match(self, expr: relax.Expr, context: MatchContext) -> Matched | None:
        """The matched expressions by pattern, if ``expr`` is this stage and its checks hold."""
        matched = self.root.extract_matched_expr(expr, context.var2val)
        if matched is None or not all(check.holds(matched, context) for check in self.fragment.checks):
            return None
        return matched


def bias_operand() -> DFPattern:
    """A per-channel bias as the importer writes it, or once folded (shapes are checked later)."""
    return is_op("relax.reshape")(wildcard(), wildcard()) | is_const()


def stage_patterns() -> list[StagePattern]:
    """Every stage form, each activation's forms with and without a bias add."""
    patterns = []
    for activation, forms in ACTIVATION_FORMS.items():
        for form in forms:
            for with_bias in (True, False):
                data, weight = wildcard(), wildcard()
                conv = _call("relax.nn.conv2d", data, weight)
                bias_add = _call("relax.add", conv, bias_operand()) if with_bias else None
                fragment = form(bias_add if with_bias else conv)
                patterns.append(StagePattern(data, weight, conv, bias_add, activation, fragment))
    return patterns


def root_op(pattern: DFPattern) -> str | None:
    """The op a pattern's root call has (to try only the patterns that can match a binding)."""
    if isinstance(pattern, tvm.relax.dpl.CallPattern) and isinstance(pattern.op, tvm.relax.dpl.ExprPattern):
        return pattern.op.expr.name
    return None


def _dtype_of(expr: relax.Expr) -> str:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else "float32"
