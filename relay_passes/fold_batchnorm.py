"""FoldBatchNorm: fold inference BatchNorm into the conv2d before it, so that chains match.

TVM's ONNX importer keeps BatchNormalization as ``R.nn.batch_norm(x, gamma, beta, mean, var)``
(a 3-tuple) read through ``TupleGetItem(., 0)``, after ``conv2d`` and, for convs with a bias, the
importer's ``add(conv, reshape(b))``. With constant weights the whole thing is one conv2d with
scaled filters plus a per-channel bias::

    s = gamma / sqrt(var + eps);  W' = W * s[o];  b' = (b - mean) * s + beta

computed here in float64 and rounded once to the model's dtype. Weights must be constants
(``from_onnx(..., keep_params_in_input=False)``, what ``fcm_tvm.compile`` does; a module whose
weights are function parameters must be bound first with ``relax.transform.BindParams``).
Anything else (training mode, other layouts, a conv output read elsewhere) is left as it is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax
from tvm.relax.dpl import is_const, is_op, is_tuple_get_item, wildcard

from .constants import constant_value
from .matcher import FunctionIndex
from .patterns import bias_operand
from .rewrite import ValueBuilder, replace_bindings

CONV_LAYOUTS = ("NCHW", "OIHW", "NCHW")


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
            relax.const(self.weight.astype(dtype)),
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


def _patterns():
    conv = is_op("relax.nn.conv2d")(wildcard(), is_const())
    biased = is_op("relax.add")(conv, bias_operand())
    stats = [wildcard() for _ in range(4)]  # gamma, beta, mean, var
    with_bias = is_tuple_get_item(is_op("relax.nn.batch_norm")(biased, *stats), 0)
    without_bias = is_tuple_get_item(is_op("relax.nn.batch_norm")(conv, *stats), 0)
    return conv, biased, with_bias, without_bias


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
    conv, biased, with_bias, without_bias = _patterns()
    folds: dict[relax.Var, ValueBuilder] = {}
    for binding in index.bindings:
        if not isinstance(binding.value, relax.TupleGetItem):
            continue
        for pattern in (with_bias, without_bias):
            matched = pattern.extract_matched_expr(binding.value, index.context.var2val)
            if matched is None:
                continue
            if allowed is not None and not any(matched[conv].same_as(c) for c in allowed):
                break
            fold = _fold(index, matched[conv], matched.get(biased), binding.value.tuple_value)
            if fold is not None:
                folds[binding.var] = fold.build
            break
    return folds


def _fold(index: FunctionIndex, conv: relax.Call, add: relax.Call | None, bn_var: relax.Expr) -> _Fold | None:
    bn = index.context.var2val[bn_var] if isinstance(bn_var, relax.Var) else bn_var
    attrs = bn.attrs
    layouts = (str(conv.attrs.data_layout), str(conv.attrs.kernel_layout), str(conv.attrs.out_layout))
    if attrs.training or int(attrs.axis) not in (1, -3) or layouts != CONV_LAYOUTS:
        return None
    if not _read_only_by_next(index, conv, add):
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


def _read_only_by_next(index: FunctionIndex, conv: relax.Call, add: relax.Call | None) -> bool:
    """The conv output (and the bias add) feed nothing but the next op, so folding drops them."""
    chain = [index.var_for(conv)] + ([index.var_for(add)] if add is not None else [])
    return all(var is not None and len(index.users[var]) == 1 for var in chain)
