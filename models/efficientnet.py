"""EfficientNet-B0 (Tan & Le 2019, Table 1), as torchvision.models.efficientnet_b0 builds it.

Rows are MBConv stages: expansion ratio, kernel, stride of the first repeat, input and output
channels, repeats. Every block has squeeze-and-excitation with a bottleneck of a quarter of the
*block input* channels, SiLU inside and a sigmoid gate; activations are SiLU throughout.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import SqueezeExcite, inverted_residual, pooled_classifier
from .graph import GraphBuilder, Value

BN_EPS = 1e-3
STEM, LAST = 32, 1280


class Stage(NamedTuple):
    expansion: int
    kernel: int
    stride: int
    inp: int
    out: int
    repeats: int


B0 = (
    Stage(1, 3, 1, 32, 16, 1),
    Stage(6, 3, 2, 16, 24, 2),
    Stage(6, 5, 2, 24, 40, 2),
    Stage(6, 3, 2, 40, 80, 3),
    Stage(6, 5, 1, 80, 112, 3),
    Stage(6, 5, 2, 112, 192, 4),
    Stage(6, 3, 1, 192, 320, 1),
)


def build(b: GraphBuilder, x: Value) -> Value:
    with b.scope("features.0"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="silu")
    for index, stage in enumerate(B0, start=1):
        for repeat in range(stage.repeats):
            with b.scope(f"features.{index}.{repeat}"):
                x = inverted_residual(
                    b,
                    x,
                    expanded=x.channels * stage.expansion,
                    out=stage.out,
                    kernel=stage.kernel,
                    stride=stage.stride if repeat == 0 else 1,
                    act="silu",
                    bn_eps=BN_EPS,
                    se=SqueezeExcite(max(1, x.channels // 4), "silu", "sigmoid"),
                )
    with b.scope(f"features.{len(B0) + 1}"):
        x = b.conv(x, LAST, 1, bn_eps=BN_EPS, act="silu")
    with b.scope("classifier"):
        return pooled_classifier(b, x)
