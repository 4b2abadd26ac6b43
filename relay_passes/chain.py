"""Turn a matched chain into an :class:`FcmSpec`, or say why it is not one.

The matcher only knows the graph's shape; this module reads the convolutions' attributes and
types: a stage is depthwise when ``groups == channels`` with one filter per channel, pointwise
when it is a dense 1x1 convolution with stride 1 and no padding. Everything else (grouped or
dilated convolutions, channel multipliers, other layouts, mixed dtypes) is rejected with a reason,
and FcmSpec's own validation (kernels, strides, padding, residual shape) has the last word.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..schedules.spec import Depthwise, FcmSpec, Pointwise, Stage
from .constants import constant_value
from .matcher import ChainMatch, StageMatch, static_shape

LAYOUTS = {"data_layout": "NCHW", "kernel_layout": "OIHW", "out_layout": "NCHW"}


class Unsupported(Exception):
    """A matched chain that is not an FCM; the message says why."""


@dataclass(frozen=True)
class ConvInfo:
    """What a conv2d call computes, in plain integers."""

    in_shape: tuple[int, int, int, int]
    weight_shape: tuple[int, int, int, int]
    out_shape: tuple[int, int, int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right (Relax and ONNX order)
    dilation: tuple[int, int]
    groups: int
    dtype: str


def chain_spec(chain: ChainMatch) -> FcmSpec:
    """The FcmSpec ``chain`` computes; raises :class:`Unsupported` with the reason otherwise."""
    infos = [conv_info(stage.conv) for stage in chain.stages]
    stages = tuple(stage_of(stage, info) for stage, info in zip(chain.stages, infos))
    dtype = _common_dtype(chain, infos)
    n, c, h, w = infos[0].in_shape
    try:
        spec = FcmSpec(n, c, h, w, stages, residual=chain.residual is not None, dtype=dtype)
    except ValueError as error:
        raise Unsupported(str(error)) from None
    root_shape = static_shape(chain.root)
    if spec.output.as_tuple() != root_shape:  # guards the reading of Relax attributes above
        raise Unsupported(f"computed output {spec.output.as_tuple()} != graph's {root_shape}")
    return spec


def conv_info(conv: relax.Call) -> ConvInfo:
    attrs = conv.attrs
    for name, expected in LAYOUTS.items():
        layout = str(getattr(attrs, name))
        if layout != expected:
            raise Unsupported(f"conv2d {name} {layout} (supported: {expected})")
    shapes = [static_shape(e) for e in (conv.args[0], conv.args[1], conv)]
    if any(shape is None or len(shape) != 4 for shape in shapes):
        raise Unsupported("conv2d with a dynamic or non-4D shape")
    dtype = str(conv.ty.dtype)
    if attrs.out_dtype is not None and str(attrs.out_dtype) not in ("", "void", dtype):
        raise Unsupported(f"conv2d accumulating into {attrs.out_dtype}")
    return ConvInfo(
        *shapes,
        strides=tuple(int(s) for s in attrs.strides),
        padding=tuple(int(p) for p in attrs.padding),
        dilation=tuple(int(d) for d in attrs.dilation),
        groups=int(attrs.groups),
        dtype=dtype,
    )


def stage_of(stage: StageMatch, info: ConvInfo) -> Stage:
    """The stage as a Depthwise or Pointwise, judging the conv's groups, kernel and attributes."""
    if info.dilation != (1, 1):
        raise Unsupported(f"dilation {info.dilation}")
    channels = info.in_shape[1]
    out_channels, per_group, kh, kw = info.weight_shape
    if info.groups == 1 and (kh, kw) == (1, 1):
        return _pointwise(stage, info, out_channels)
    if info.groups == channels and per_group == 1 and (kh, kw) != (1, 1):
        if out_channels != channels:
            raise Unsupported(f"depthwise channel multiplier {out_channels // channels}")
        return _depthwise(stage, info, kh, kw)
    if info.groups == 1:
        raise Unsupported(f"dense {kh}x{kw} convolution")
    raise Unsupported(f"grouped {kh}x{kw} convolution ({info.groups} groups of {channels} channels)")


def _pointwise(stage: StageMatch, info: ConvInfo, out_channels: int) -> Pointwise:
    if info.strides != (1, 1):
        raise Unsupported(f"1x1 convolution with stride {info.strides}")
    if any(info.padding):
        raise Unsupported(f"1x1 convolution with padding {info.padding}")
    return Pointwise(out_channels, stage.activation)


def _depthwise(stage: StageMatch, info: ConvInfo, kh: int, kw: int) -> Depthwise:
    if kh != kw:
        raise Unsupported(f"depthwise kernel {kh}x{kw} is not square")
    if info.strides[0] != info.strides[1]:
        raise Unsupported(f"depthwise strides {info.strides} differ")
    default = Depthwise(kh, info.strides[0], activation=stage.activation)
    padding = None if info.padding == default.pads else info.padding
    return Depthwise(kh, info.strides[0], padding, stage.activation)


def _common_dtype(chain: ChainMatch, infos: list[ConvInfo]) -> str:
    typed = [info.dtype for info in infos] + [str(stage.weight.ty.dtype) for stage in chain.stages]
    if chain.residual is not None:
        typed.append(str(chain.residual.ty.dtype))
    if len(set(typed)) != 1:
        raise Unsupported(f"mixed dtypes {sorted(set(typed))}")
    return typed[0]


def kernel_args(
    chain: ChainMatch, spec: FcmSpec, var2val: Mapping[relax.Var, relax.Expr]
) -> list[relax.Expr]:
    """The FCM PrimFunc's inputs: ``x, (weight, bias) per stage, [residual]``, read off the graph.

    Weights pass through as the graph has them (ONNX layouts, constants or parameters); a missing
    bias becomes zeros and a bias add's operand becomes the ``(C,)`` vector the kernel takes.
    """
    args = [chain.input]
    for stage, after in zip(chain.stages, spec.shapes[1:]):
        args += [stage.weight, bias_vector(stage, after.c, spec.dtype, var2val)]
    if chain.residual is not None:
        args.append(chain.residual)
    return args


def bias_vector(
    stage: StageMatch, channels: int, dtype: str, var2val: Mapping[relax.Var, relax.Expr]
) -> relax.Expr:
    """The stage's bias as a ``(channels,)`` tensor; :class:`Unsupported` if it is not per-channel."""
    if stage.bias is None:
        return relax.const(np.zeros(channels, dtype))
    value = constant_value(stage.bias, var2val)
    if value is not None:
        try:
            vector = np.broadcast_to(value, (1, channels, 1, 1)).reshape(channels)
        except ValueError:
            raise Unsupported(f"bias of shape {value.shape} is not per-channel") from None
        return relax.const(vector.astype(dtype))
    source = var2val.get(stage.bias) if isinstance(stage.bias, relax.Var) else stage.bias
    per_channel = (1, channels, 1, 1)
    if (
        isinstance(source, relax.Call)
        and source.op.same_as(tvm.ir.Op.get("relax.reshape"))
        and static_shape(source) == per_channel
        and static_shape(source.args[0]) == (channels,)
    ):
        return source.args[0]  # the importer's reshape(b, [1, C, 1, 1]) of a weight parameter
    raise Unsupported(f"bias {static_shape(stage.bias)} is neither constant nor a reshaped (C,) vector")
