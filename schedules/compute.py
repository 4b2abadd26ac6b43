"""The tensor expression of an FCM: what the fused kernel computes, independent of how.

Every stage is three TE stages with stable names, so that schedules can find them:

* ``s{i}_pad``: the zero-padded input of stage ``i`` (a DW's, or a PW's that feeds a DW);
* ``s{i}_acc``: the convolution sum, always accumulated in float32;
* ``s{i}_out``: bias, activation (and the residual for the last stage), cast to the storage dtype.

Intermediates are stored in the spec's dtype (float16 for float16 models), as an unfused graph
would store them; only the sums are float32.

A PW stage that feeds a DW stage computes over the DW's *padded* domain (from its own input,
zero-padded alike) and writes zeros in the border, so the DW reads it without a pad stage: a
fused kernel then produces its halo directly, and never has to index outside a tensor. A
schedule inlines the PW's pad stage or stages it in shared memory; a DW that reads the FCM input
gets a pad stage of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import tvm
from tvm import te, tirx
from tvm.tirx import Expr as PrimExpr

from ..errors import FcmError
from .spec import Depthwise, FcmSpec, Pointwise

ACCUMULATOR = "float32"

ActivationBuilder = Callable[[PrimExpr], PrimExpr]
Pads = tuple[int, int, int, int]  # top, left, bottom, right
NO_PADS: Pads = (0, 0, 0, 0)


def _f32(value: float) -> PrimExpr:
    return tirx.const(value, ACCUMULATOR)


def _relu6(x: PrimExpr) -> PrimExpr:
    return tirx.min(tirx.max(x, _f32(0)), _f32(6))


def _hardswish(x: PrimExpr) -> PrimExpr:
    # ONNX HardSwish: x * max(0, min(1, x / 6 + 1 / 2)) == x * relu6(x + 3) / 6
    return x * _relu6(x + _f32(3)) / _f32(6)


# Epilogues run on the float32 sum, so every builder takes and returns a float32 expression.
ACTIVATION_BUILDERS: dict[str, ActivationBuilder] = {
    "none": lambda x: x,
    "relu": lambda x: tirx.max(x, _f32(0)),
    "relu6": _relu6,
    "hardswish": _hardswish,
    "sigmoid": tirx.sigmoid,
    "silu": lambda x: x * tirx.sigmoid(x),
}


def _fast_sigmoid(x: PrimExpr) -> PrimExpr:
    """1 / (1 + e^-x) on CUDA's special-function unit (``__expf``, ``__fdividef``): a few float32
    ulps off, against some 20 instructions for the IEEE ``expf`` and division. CUDA only."""
    one = _f32(1)
    exp = tirx.call_pure_extern(ACCUMULATOR, "__expf", -x)
    return tirx.call_pure_extern(ACCUMULATOR, "__fdividef", one, one + exp)


# For float16 kernels on CUDA, whose storage rounds at 2^-11, far above the fast functions' error
# (an FCM of EfficientNet computes a SiLU for every element of its PW result, halo included).
FAST_ACTIVATION_BUILDERS: dict[str, ActivationBuilder] = {
    **ACTIVATION_BUILDERS,
    "sigmoid": _fast_sigmoid,
    "silu": lambda x: x * _fast_sigmoid(x),
}


def activation_builders(fast_math: bool) -> dict[str, ActivationBuilder]:
    """The builders of a kernel: :data:`FAST_ACTIVATION_BUILDERS` where ``fast_math`` (CUDA,
    float16), else the exact ones."""
    return FAST_ACTIVATION_BUILDERS if fast_math else ACTIVATION_BUILDERS


def stage_names(index: int) -> tuple[str, str, str]:
    """Names of stage ``index``'s TE stages: (pad, acc, out)."""
    return f"s{index}_pad", f"s{index}_acc", f"s{index}_out"


def fcm_compute(spec: FcmSpec, fast_math: bool = False) -> tuple[list[te.Tensor], te.Tensor]:
    """The FCM as TE: (inputs in ``spec.param_shapes()`` order, output); ``fast_math`` as in
    :func:`activation_builders`."""
    _check_builders(spec)
    x = te.placeholder(spec.input.as_tuple(), spec.dtype, name="x")
    residual = te.placeholder(spec.output.as_tuple(), spec.dtype, name="residual") if spec.residual else None
    inputs = [x]
    builders = activation_builders(fast_math)
    current, current_is_padded = x, False
    for index, (stage, weight_shape) in enumerate(zip(spec.stages, spec.weight_shapes())):
        weight = te.placeholder(weight_shape, spec.dtype, name=f"w{index}")
        bias = te.placeholder((spec.shapes[index + 1].c,), spec.dtype, name=f"b{index}")
        inputs += [weight, bias]
        out_pads = _output_pads(spec, index)
        if isinstance(stage, Depthwise):
            padded = current if current_is_padded else _pad(index, stage.pads, current)
            acc = _depthwise_sum(index, stage, padded, weight)
        else:
            padded = current if out_pads == NO_PADS else _pad(index, out_pads, current)
            acc = _pointwise_sum(index, stage, padded, weight)
        is_last = index == len(spec.stages) - 1
        act = builders[stage.activation]
        current = _epilogue(index, act, acc, bias, residual if is_last else None, spec.dtype, out_pads)
        current_is_padded = _feeds_depthwise(spec, index)
    if residual is not None:
        inputs.append(residual)
    return inputs, current


def _feeds_depthwise(spec: FcmSpec, index: int) -> bool:
    return index + 1 < len(spec.stages) and isinstance(spec.stages[index + 1], Depthwise)


def _output_pads(spec: FcmSpec, index: int) -> Pads:
    """A PW stage feeding a DW stage writes the DW's zero-padded input; other stages write no padding."""
    if isinstance(spec.stages[index], Pointwise) and _feeds_depthwise(spec, index):
        return spec.stages[index + 1].pads
    return NO_PADS


def _check_builders(spec: FcmSpec) -> None:
    missing = sorted({s.activation for s in spec.stages} - ACTIVATION_BUILDERS.keys())
    if missing:
        raise FcmError(f"no TE expression for activation(s) {', '.join(missing)}")


def _as_acc(value: PrimExpr) -> PrimExpr:
    return value.astype(ACCUMULATOR)  # a no-op on float32


def _inside(pads: Pads, height: int, width: int, y: PrimExpr, x: PrimExpr) -> PrimExpr:
    """Whether padded coordinate (y, x) lies on the unpadded ``height x width`` image."""
    top, left, _, _ = pads
    return tirx.all(y >= top, y < height + top, x >= left, x < width + left)


def _pad(index: int, pads: Pads, data: te.Tensor) -> te.Tensor:
    n, c, h, w = (int(d) for d in data.shape)
    top, left, bottom, right = pads
    zero = tirx.const(0, data.dtype)
    return te.compute(
        (n, c, h + top + bottom, w + left + right),
        lambda b, ch, y, x: tirx.if_then_else(
            _inside(pads, h, w, y, x), data[b, ch, y - top, x - left], zero
        ),
        name=stage_names(index)[0],
    )


def _depthwise_sum(index: int, stage: Depthwise, padded: te.Tensor, weight: te.Tensor) -> te.Tensor:
    n, c, hp, wp = (int(d) for d in padded.shape)
    k, s = stage.kernel, stage.stride
    out_h, out_w = (hp - k) // s + 1, (wp - k) // s + 1
    ky = te.reduce_axis((0, k), name="ky")
    kx = te.reduce_axis((0, k), name="kx")
    return te.compute(
        (n, c, out_h, out_w),
        lambda b, ch, y, x: te.sum(
            _as_acc(padded[b, ch, y * s + ky, x * s + kx]) * _as_acc(weight[ch, 0, ky, kx]), axis=[ky, kx]
        ),
        name=stage_names(index)[1],
    )


def _pointwise_sum(index: int, stage: Pointwise, data: te.Tensor, weight: te.Tensor) -> te.Tensor:
    """The 1x1 sum over ``data``: zero-padded when the stage writes a DW's padded input (its
    epilogue zeroes the border, where the sum saw only zeros but the bias would not be)."""
    n, c, h, w = (int(d) for d in data.shape)
    ci = te.reduce_axis((0, c), name="ci")
    return te.compute(
        (n, stage.out_channels, h, w),
        lambda b, co, y, x: te.sum(_as_acc(data[b, ci, y, x]) * _as_acc(weight[co, ci, 0, 0]), axis=ci),
        name=stage_names(index)[1],
    )


def _epilogue(
    index: int,
    act: ActivationBuilder,
    acc: te.Tensor,
    bias: te.Tensor,
    residual: te.Tensor | None,
    dtype: str,
    pads: Pads,
) -> te.Tensor:
    _, _, hp, wp = (int(d) for d in acc.shape)
    top, left, bottom, right = pads

    def value(b, ch, y, x):
        result = act(acc[b, ch, y, x] + _as_acc(bias[ch]))
        if residual is not None:
            result = result + _as_acc(residual[b, ch, y, x])
        if pads != NO_PADS:
            inside = _inside(pads, hp - top - bottom, wp - left - right, y, x)
            result = tirx.if_then_else(inside, result, _f32(0))
        return result.astype(dtype)

    return te.compute(acc.shape, value, name=stage_names(index)[2])


def fcm_te_primfunc(spec: FcmSpec, name: str = "fcm", fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The unscheduled PrimFunc of ``spec``: parameters ``x, (w, b)*, [residual], out``."""
    inputs, output = fcm_compute(spec, fast_math)
    func = te.create_prim_func([*inputs, output])
    return func.with_attr("global_symbol", name)
