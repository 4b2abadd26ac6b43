"""MobileNetV3-Large and -Small (Howard et al. 2019, Tables 1 and 2), as torchvision builds them.

Each row is one bottleneck: kernel, expansion size, output channels, squeeze-and-excitation,
activation (RE = ReLU, HS = hardswish) and stride. The SE bottleneck is
make_divisible(expanded / 4) with ReLU and a hardsigmoid gate. The head is a 1x1 conv to six
times the last block's channels, global pooling, Linear + hardswish, and the classifier.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import SqueezeExcite, inverted_residual, make_divisible
from .graph import GraphBuilder, Value

BN_EPS = 1e-3
STEM = 16
ACTIVATION = {"RE": "relu", "HS": "hardswish"}


class Bneck(NamedTuple):
    kernel: int
    expanded: int
    out: int
    se: bool
    act: str  # "RE" or "HS", as in the paper's tables
    stride: int


LARGE = (
    Bneck(3, 16, 16, False, "RE", 1),
    Bneck(3, 64, 24, False, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 1),
    Bneck(5, 72, 40, True, "RE", 2),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(5, 120, 40, True, "RE", 1),
    Bneck(3, 240, 80, False, "HS", 2),
    Bneck(3, 200, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 184, 80, False, "HS", 1),
    Bneck(3, 480, 112, True, "HS", 1),
    Bneck(3, 672, 112, True, "HS", 1),
    Bneck(5, 672, 160, True, "HS", 2),
    Bneck(5, 960, 160, True, "HS", 1),
    Bneck(5, 960, 160, True, "HS", 1),
)
SMALL = (
    Bneck(3, 16, 16, True, "RE", 2),
    Bneck(3, 72, 24, False, "RE", 2),
    Bneck(3, 88, 24, False, "RE", 1),
    Bneck(5, 96, 40, True, "HS", 2),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 240, 40, True, "HS", 1),
    Bneck(5, 120, 48, True, "HS", 1),
    Bneck(5, 144, 48, True, "HS", 1),
    Bneck(5, 288, 96, True, "HS", 2),
    Bneck(5, 576, 96, True, "HS", 1),
    Bneck(5, 576, 96, True, "HS", 1),
)
HIDDEN_LARGE, HIDDEN_SMALL = 1280, 1024  # width of the Linear + hardswish before the classifier


def build(b: GraphBuilder, x: Value, table: tuple[Bneck, ...], hidden: int) -> Value:
    with b.scope("features.0"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="hardswish")
    for index, row in enumerate(table, start=1):
        se = SqueezeExcite(make_divisible(row.expanded // 4), "relu", "hardsigmoid") if row.se else None
        with b.scope(f"features.{index}"):
            x = inverted_residual(
                b,
                x,
                expanded=row.expanded,
                out=row.out,
                kernel=row.kernel,
                stride=row.stride,
                act=ACTIVATION[row.act],
                bn_eps=BN_EPS,
                se=se,
            )
    with b.scope(f"features.{len(table) + 1}"):
        x = b.conv(x, 6 * x.channels, 1, bn_eps=BN_EPS, act="hardswish")
    with b.scope("classifier"):
        x = b.flatten(b.global_avg_pool(x))
        x = b.act(b.linear(x, hidden), "hardswish")
        return b.linear(x, 1000)


def build_large(b: GraphBuilder, x: Value) -> Value:
    return build(b, x, LARGE, HIDDEN_LARGE)


def build_small(b: GraphBuilder, x: Value) -> Value:
    return build(b, x, SMALL, HIDDEN_SMALL)
