"""Blocks shared by several families: the inverted residual (MBConv) and the classifier head."""

from __future__ import annotations

from dataclasses import dataclass

from .graph import GraphBuilder, Value


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor``, never below 90% of ``value`` (TF/torchvision rule)."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


@dataclass(frozen=True)
class SqueezeExcite:
    """Squeeze-and-excitation after the depthwise conv: channels of the bottleneck and its activations."""

    channels: int
    act: str
    gate: str


def inverted_residual(
    b: GraphBuilder,
    x: Value,
    *,
    expanded: int,
    out: int,
    kernel: int,
    stride: int,
    act: str,
    bn_eps: float,
    se: SqueezeExcite | None = None,
) -> Value:
    """PW expand (omitted when ``expanded`` equals the input channels) -> DW -> [SE] -> PW project,
    with an identity shortcut when the block keeps shape (stride 1, same channels)."""
    y = x
    if expanded != x.channels:
        y = b.conv(y, expanded, 1, bn_eps=bn_eps, act=act)
    y = b.conv(y, expanded, kernel, stride=stride, groups=expanded, bn_eps=bn_eps, act=act)
    if se is not None:
        y = b.squeeze_excite(y, se.channels, act=se.act, gate=se.gate)
    y = b.conv(y, out, 1, bn_eps=bn_eps)
    return b.add(y, x) if stride == 1 and out == x.channels else y


def pooled_classifier(b: GraphBuilder, x: Value, classes: int = 1000) -> Value:
    """GlobalAveragePool -> Flatten -> Gemm, the head of every CNN here (dropout is a no-op)."""
    return b.linear(b.flatten(b.global_avg_pool(x)), classes)
