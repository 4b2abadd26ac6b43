"""MobileNetV2 (Sandler et al. 2018, Table 2), as torchvision.models.mobilenet_v2 builds it.

Rows are the paper's (t, c, n, s): expansion factor, output channels, repeats, stride of the
first repeat. 17 inverted-residual blocks in 7 stages between a 3x3 stem and a 1x1 conv to 1280.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import inverted_residual, pooled_classifier
from .graph import GraphBuilder, Value

BN_EPS = 1e-5
STEM, LAST = 32, 1280


class Stage(NamedTuple):
    expansion: int  # t
    out: int  # c
    repeats: int  # n
    stride: int  # s


STAGES = (
    Stage(1, 16, 1, 1),
    Stage(6, 24, 2, 2),
    Stage(6, 32, 3, 2),
    Stage(6, 64, 4, 2),
    Stage(6, 96, 3, 1),
    Stage(6, 160, 3, 2),
    Stage(6, 320, 1, 1),
)


def build(b: GraphBuilder, x: Value) -> Value:
    with b.scope("features.0"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="relu6")
    index = 1
    for stage in STAGES:
        for repeat in range(stage.repeats):
            with b.scope(f"features.{index}"):
                x = inverted_residual(
                    b,
                    x,
                    expanded=x.channels * stage.expansion,
                    out=stage.out,
                    kernel=3,
                    stride=stage.stride if repeat == 0 else 1,
                    act="relu6",
                    bn_eps=BN_EPS,
                )
            index += 1
    with b.scope(f"features.{index}"):
        x = b.conv(x, LAST, 1, bn_eps=BN_EPS, act="relu6")
    with b.scope("classifier"):
        return pooled_classifier(b, x)
