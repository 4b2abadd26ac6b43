"""FoldBatchNorm: fold inference BatchNorm into the conv2d before it, so that chains match.

TVM's ONNX importer keeps BatchNormalization as ``R.nn.batch_norm(x, gamma, beta, mean, var)``
(a 3-tuple) read through ``TupleGetItem(., 0)``, after ``conv2d`` and, for convs with a bias, the
importer's ``add(conv, reshape(b))``. With constant weights the whole thing is one conv2d with
scaled filters plus a per-channel bias::

    s = gamma / sqrt(var + eps);  W' = W * s[o];  b' = (b - mean) * s + beta

computed here in float64 and rounded once to the model's dtype. Casts around the BatchNorm go
with it: TVM's importer computes a float16 BatchNorm with float32 statistics in float32
(``astype(conv, "float32")`` in, ``astype(y, "float16")`` out) and ``fcm_tvm.precision`` follows
every BatchNorm of a float16 model by a cast to float16 (TVM's legalized batch_norm returns float32
for float16 data). Folding replaces the last cast that still has the conv's dtype, so no cast is
left between the conv and what follows it. Weights must be constants
(``from_onnx(..., keep_params_in_input=False)``, what ``fcm_tvm.compile`` does; a module whose
weights are function parameters must be bound first with ``relax.transform.BindParams``).
Anything else (training mode, other layouts, a conv output read elsewhere) is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import DFPattern, is_const, is_op, is_tuple_get_item, wildcard

from .constants import constant_value
from .matcher import FunctionIndex
from .patterns import bias_operand
from .rewrite import ValueBuilder, replace_bindings

CONV_LAYOUTS = ("NCHW", "OIHW", "NCHW")
_ASTYPE = tvm.ir.Op.get("relax.astype")


@dataclass(frozen=True)
class _Fold:
    """A conv2d (+ bias) + BatchNorm to replace by a conv2d with folded weights + bias."""

    conv: relax.Call
    weight: np.ndarray
    bias: np.ndarray

    def build(self, builder: relax.BlockBuilder) -> relax.Expr:
        attrs = self.conv.attrs
        dtype = str(self.conv.ty.dtype)
        conv = relax.op.nn.conv2d(
            self.conv.args[0],
            relax.const(self.weight.astype(str(self.conv.args[1].ty.dtype))),
            strides=attrs.strides,
            padding=attrs.padding,
            dilation=attrs.dilation,
            groups=attrs.groups,
            data_layout=attrs.data_layout,
            kernel_layout=attrs.kernel_layout,
            out_layout=attrs.out_layout,
            out_dtype=attrs.out_dtype,
        )
        bias = relax.const(self.bias.reshape(1, -1, 1, 1).astype(dtype))
        return relax.op.add(builder.emit(conv), bias)


@dataclass(frozen=True)
class _Patterns:
    """``TupleGetItem(batch_norm([astype](conv [+ bias]), ...), 0)``: the forms, most specific first."""

    conv: DFPattern
    biased: DFPattern
    cast: DFPattern  # the cast of the conv (+ bias) output to BatchNorm's compute dtype
    forms: tuple[DFPattern, ...]


def _patterns() -> _Patterns:
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    biased = is_op("relax.add")(conv, bias_operand())
    cast = is_op("relax.astype")(biased | conv)
    stats = [wildcard() for _ in range(4)]  # gamma, beta, mean, var
    forms = tuple(
        is_tuple_get_item(is_op("relax.nn.batch_norm")(data, *stats), 0) for data in (cast, biased, conv)
    )
    return _Patterns(conv, biased, cast, forms)


@tvm.transform.module_pass(opt_level=0, name="FoldBatchNorm")
class FoldBatchNorm:
    """Fold every inference ``batch_norm`` that follows a conv2d with constant weights.

    ``only``: fold only after these conv2d calls, counted in binding order over the module's
    Relax functions (see :func:`conv2d_calls`); None folds everywhere.
    """

    def __init__(self, only: frozenset[int] | None = None):
        self.only = only

    def transform_module(self, mod: tvm.IRModule, _context: tvm.transform.PassContext) -> tvm.IRModule:
        updates = {}
        for gvar, func in mod.functions_items():
            if isinstance(func, relax.Function):
                folds = _find_folds(mod, func, self._allowed(mod, func))
                if folds:
                    updates[gvar] = replace_bindings(mod, func, folds)
        if not updates:
            return mod
        mod = mod.clone()
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    def _allowed(self, mod: tvm.IRModule, func: relax.Function) -> set[relax.Call] | None:
        if self.only is None:
            return None
        offset = 0
        for _, other in mod.functions_items():
            if other.same_as(func):
                break
            if isinstance(other, relax.Function):
                offset += len(conv2d_calls(other))
        return {call for i, call in enumerate(conv2d_calls(func)) if offset + i in self.only}


def conv2d_calls(func: relax.Function) -> list[relax.Call]:
    """The conv2d calls of ``func`` in binding order (folding keeps both their order and count)."""
    calls: list[relax.Call] = []
    relax.analysis.post_order_visit(
        func.body,
        lambda node: (
            calls.append(node)
            if isinstance(node, relax.Call) and getattr(node.op, "name", "") == "relax.nn.conv2d"
            else None
        ),
    )
    return calls


def _find_folds(
    mod: tvm.IRModule, func: relax.Function, allowed: set[relax.Call] | None = None
) -> dict[relax.Var, ValueBuilder]:
    index = FunctionIndex(mod, func)
    patterns = _patterns()
    folds: dict[relax.Var, ValueBuilder] = {}
    for binding in index.bindings:
        if not isinstance(binding.value, relax.TupleGetItem):
            continue
        for pattern in patterns.forms:
            matched = pattern.extract_matched_expr(binding.value, index.context.var2val)
            if matched is None:
                continue
            conv = matched[patterns.conv]
            if allowed is not None and not any(conv.same_as(c) for c in allowed):
                break
            output = _folded_output(index, binding.var, str(conv.ty.dtype))
            add, cast = matched.get(patterns.biased), matched.get(patterns.cast)
            fold = _fold(index, conv, add, cast, binding.value.tuple_value)
            if output is not None and fold is not None:
                folds[output] = fold.build
            break
    return folds


def _folded_output(index: FunctionIndex, var: relax.Var, dtype: str) -> relax.Var | None:
    """The variable the folded conv + bias replaces: BatchNorm's output ``var``, or the last of the
    casts applied to it alone that still has the conv's ``dtype`` (so that the casts go too)."""
    casts = [var]
    while len(index.users[casts[-1]]) == 1 and index.users[casts[-1]][0] is not None:
        user = index.users[casts[-1]][0]
        value = index.context.var2val.get(user)
        if not (
            isinstance(value, relax.Call) and value.op.same_as(_ASTYPE) and value.args[0].same_as(casts[-1])
        ):
            break
        casts.append(user)
    same_dtype = [v for v in casts if isinstance(v.ty, relax.TensorType) and str(v.ty.dtype) == dtype]
    return same_dtype[-1] if same_dtype else None


def _fold(
    index: FunctionIndex,
    conv: relax.Call,
    add: relax.Call | None,
    cast: relax.Call | None,
    bn_var: relax.Expr,
) -> _Fold | None:
    bn = index.context.var2val[bn_var] if isinstance(bn_var, relax.Var) else bn_var
    attrs = bn.attrs
    layouts = (str(conv.attrs.data_layout), str(conv.attrs.kernel_layout), str(conv.attrs.out_layout))
    if attrs.training or int(attrs.axis) not in (1, -3) or layouts != CONV_LAYOUTS:
        return None
    if not _read_only_by_next(index, [conv, add, cast]):
        return None
    weight = conv.args[1].value.numpy().astype(np.float64)
    channels = weight.shape[0]
    values = [constant_value(arg, index.context.var2val) for arg in bn.args[1:]]
    bias = _per_channel(index, add, conv, channels)
    if bias is None or any(v is None or v.size != channels for v in values):
        return None
    gamma, beta, mean, var = (v.reshape(channels).astype(np.float64) for v in values)
    gamma = gamma if attrs.scale else np.ones(channels)
    beta = beta if attrs.center else np.zeros(channels)
    scale = gamma / np.sqrt(var + float(attrs.epsilon))
    return _Fold(conv, weight * scale[:, None, None, None], (bias - mean) * scale + beta)


def _per_channel(index: FunctionIndex, add: relax.Call | None, conv: relax.Call, channels: int):
    """The conv's bias as a float64 vector (zeros without one); None if it is not per-channel."""
    if add is None:
        return np.zeros(channels)
    conv_var = index.var_for(conv)
    operand = add.args[1] if add.args[0].same_as(conv_var) else add.args[0]
    value = constant_value(operand, index.context.var2val)
    if value is None:
        return None
    try:
        return np.broadcast_to(value, (1, channels, 1, 1)).reshape(channels).astype(np.float64)
    except ValueError:
        return None


def _read_only_by_next(index: FunctionIndex, calls: list[relax.Call | None]) -> bool:
    """The conv output (and the bias add, and the cast) feed nothing but the next op, so folding
    drops them."""
    chain = [index.var_for(call) for call in calls if call is not None]
    return all(var is not None and len(index.users[var]) == 1 for var in chain)
