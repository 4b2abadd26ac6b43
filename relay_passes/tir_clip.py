"""Recognise the Clip bounds that the ONNX importer emits as ``call_tir`` of TE maximum/minimum.

TVM's importer turns ONNX ``Clip`` (every opset) into ``call_tir(maximum, ...)`` followed by
``call_tir(minimum, ...)``: PrimFuncs made from ``topi.maximum`` / ``topi.minimum``. Opset 11+
passes the bound as a scalar tensor argument, older opsets bake it into the PrimFunc body. A
ReLU6 can only be recognised by reading the PrimFunc, so this module does exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import tvm
from tvm import relax, tirx

from .constants import scalar_value

_OPS = {tirx.Max: "max", tirx.Min: "min"}


def clip_bound(
    call: relax.Call, mod: tvm.IRModule, var2val: Mapping[relax.Var, relax.Expr]
) -> tuple[str, float] | None:
    """``("max", b)`` if ``call`` computes ``max(x, b)`` elementwise on its first argument x, with
    ``b`` a compile-time scalar (``("min", b)`` likewise); None for anything else."""
    if call.op.name != "relax.call_tir" or not isinstance(call.args[1], relax.Tuple):
        return None
    func = _prim_func(mod, call.args[0])
    if func is None:
        return None
    stores = list(_buffer_stores(func.body))
    if len(stores) != 1 or type(stores[0].value) not in _OPS:
        return None
    store = stores[0]
    op = _OPS[type(store.value)]
    args = list(call.args[1].fields)
    for data, bound in ((store.value.a, store.value.b), (store.value.b, store.value.a)):
        if _loads_elementwise(data, func.params[0], store):
            value = _bound_value(bound, func, args, var2val)
            if value is not None:
                return op, value
    return None


def _prim_func(mod: tvm.IRModule, callee: relax.Expr) -> tirx.PrimFunc | None:
    if not isinstance(callee, tvm.ir.GlobalVar) or callee not in mod.get_global_vars():
        return None
    func = mod[callee]
    return func if isinstance(func, tirx.PrimFunc) else None


def _buffer_stores(node) -> Iterator[tirx.BufferStore]:
    """Every BufferStore under ``node`` (blocks, loops and sequences only: what TE emits)."""
    if isinstance(node, tirx.BufferStore):
        yield node
        return
    for attr in ("block", "body", "seq"):
        child = getattr(node, attr, None)
        if child is None:
            continue
        for item in child if isinstance(child, tvm.ir.Array | list) else [child]:
            yield from _buffer_stores(item)


def _loads_elementwise(expr, source, store: tirx.BufferStore) -> bool:
    """``expr`` reads ``source`` at exactly the indices ``store`` writes."""
    return (
        isinstance(expr, tvm.ir.TensorLoad)
        and expr.source.same_as(source)
        and len(expr.indices) == len(store.indices)
        and all(a.same_as(b) for a, b in zip(expr.indices, store.indices))
    )


def _bound_value(
    bound, func: tirx.PrimFunc, args: list[relax.Expr], var2val: Mapping[relax.Var, relax.Expr]
) -> float | None:
    if isinstance(bound, tirx.Cast):
        bound = bound.value
    if isinstance(bound, tirx.FloatImm | tirx.IntImm):
        return float(bound.value)
    if isinstance(bound, tvm.ir.TensorLoad) and all(_is_zero(i) for i in bound.indices):
        # a scalar, or a one-element tensor (exporters write Clip bounds of shape [1] too)
        for param, arg in zip(list(func.params)[1 : len(args)], args[1:]):
            if bound.source.same_as(param):
                return scalar_value(arg, var2val)
    return None


def _is_zero(index) -> bool:
    return isinstance(index, tirx.IntImm) and int(index.value) == 0
