"""What a Relax expression evaluates to at compile time, if the graph makes that obvious.

The ONNX importer does not fold its own constants: a conv bias arrives as ``reshape(const)``, a
Clip bound as ``where(isnan(const), -inf, const)``. The passes need those values (to fold
BatchNorm, to check that a Clip is a ReLU6) without running TVM's FoldConstant over the whole
model, so this module evaluates the few ops the importer wraps constants in, with numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import tvm
from tvm import relax, tirx

# op name -> numpy implementation taking (evaluated args, call); only pure, shape-static ops
_NUMPY_OPS: dict[str, Callable[[list, relax.Call], np.ndarray]] = {
    "relax.reshape": lambda args, call: np.reshape(args[0], [int(d) for d in call.args[1].values]),
    "relax.isnan": lambda args, call: np.isnan(args[0]),
    "relax.where": lambda args, call: np.where(args[0], args[1], args[2]),
    "relax.astype": lambda args, call: args[0].astype(str(call.attrs.dtype)),
}
# arguments that are shapes or attributes, not values to evaluate
_STATIC_ARGS = {"relax.reshape": 1}


def constant_value(expr: relax.Expr, var2val: Mapping[relax.Var, relax.Expr]) -> np.ndarray | None:
    """The value of ``expr`` as a numpy array, or None when it is not a compile-time constant."""
    if isinstance(expr, relax.Var):
        bound = var2val.get(expr)
        return None if bound is None else constant_value(bound, var2val)
    if isinstance(expr, tvm.ir.GenericConst):
        return expr.value.numpy()
    if isinstance(expr, tirx.IntImm | tirx.FloatImm):
        return np.array(expr.value)
    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op) and expr.op.name in _NUMPY_OPS:
        evaluated = _evaluate_args(expr, var2val)
        return None if evaluated is None else np.asarray(_NUMPY_OPS[expr.op.name](evaluated, expr))
    return None


def scalar_value(expr: relax.Expr, var2val: Mapping[relax.Var, relax.Expr]) -> float | None:
    """The value of ``expr`` when it is a compile-time constant with a single element."""
    value = constant_value(expr, var2val)
    if value is None or value.size != 1:
        return None
    return float(value.reshape(()))


def is_close(value: float, expected: float, dtype: str = "float32") -> bool:
    """``value`` is ``expected`` up to the rounding of ``dtype`` (1/6 is not exact in any float)."""
    eps = float(np.finfo(np.dtype(dtype)).eps) if dtype.startswith("float") else 0.0
    return abs(value - expected) <= 4 * eps * max(1.0, abs(expected))


def _evaluate_args(call: relax.Call, var2val: Mapping[relax.Var, relax.Expr]) -> list | None:
    static_from = _STATIC_ARGS.get(call.op.name, len(call.args))
    values = []
    for arg in list(call.args)[:static_from]:
        value = constant_value(arg, var2val)
        if value is None:
            return None
        values.append(value)
    return values
