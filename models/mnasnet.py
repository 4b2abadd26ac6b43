"""MnasNet-A1 without SE, depth multiplier 1.0: torchvision.models.mnasnet1_0 (Tan et al. 2019).

A 3x3 stem, a depthwise-separable "SepConv" layer to 16 channels, then six stacks of inverted
residuals (the expansion conv is always present), a 1x1 conv to 1280 and the classifier.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import inverted_residual, pooled_classifier
from .graph import GraphBuilder, Value

BN_EPS = 1e-5
STEM, SEPCONV, LAST = 32, 16, 1280


class Stack(NamedTuple):
    out: int
    kernel: int
    stride: int
    expansion: int
    repeats: int


STACKS = (
    Stack(24, 3, 2, 3, 3),
    Stack(40, 5, 2, 3, 3),
    Stack(80, 5, 2, 6, 3),
    Stack(96, 3, 1, 6, 2),
    Stack(192, 5, 2, 6, 4),
    Stack(320, 3, 1, 6, 1),
)


def build(b: GraphBuilder, x: Value) -> Value:
    with b.scope("layers.stem"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="relu")
        x = b.conv(x, STEM, 3, groups=STEM, bn_eps=BN_EPS, act="relu")
        x = b.conv(x, SEPCONV, 1, bn_eps=BN_EPS)
    for index, stack in enumerate(STACKS):
        for repeat in range(stack.repeats):
            with b.scope(f"layers.stack{index}.{repeat}"):
                x = inverted_residual(
                    b,
                    x,
                    expanded=x.channels * stack.expansion,
                    out=stack.out,
                    kernel=stack.kernel,
                    stride=stack.stride if repeat == 0 else 1,
                    act="relu",
                    bn_eps=BN_EPS,
                )
    with b.scope("layers.head"):
        x = b.conv(x, LAST, 1, bn_eps=BN_EPS, act="relu")
    with b.scope("classifier"):
        return pooled_classifier(b, x)
