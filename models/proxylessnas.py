"""ProxylessNAS-GPU (Cai et al. 2019, Figure 4), from the released ``proxyless_gpu`` net config.

The searched network is a list of mobile inverted bottlenecks (MBConv with expansion ratio and
kernel size chosen per layer, ReLU6), some of them searched away to identity ("zero" layers,
written ``None`` here). The first layer of each stage but the first has stride 2; a layer has a
shortcut when it keeps shape.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import inverted_residual, pooled_classifier
from .graph import GraphBuilder, Value

BN_EPS = 1e-3
STEM, LAST = 40, 1728


class MBConv(NamedTuple):
    out: int
    kernel: int
    expansion: int


SKIP = None  # a layer the search replaced with the identity

STAGES: tuple[tuple[MBConv | None, ...], ...] = (
    (MBConv(24, 3, 1),),
    (MBConv(32, 5, 3), SKIP, SKIP, SKIP),
    (MBConv(56, 7, 3), SKIP, SKIP, MBConv(56, 3, 3)),
    (
        MBConv(112, 7, 6),
        SKIP,
        SKIP,
        MBConv(112, 5, 3),
        MBConv(128, 5, 6),
        SKIP,
        MBConv(128, 3, 3),
        MBConv(128, 5, 3),
    ),
    (MBConv(256, 7, 6), MBConv(256, 7, 6), MBConv(256, 7, 6), MBConv(256, 5, 6), MBConv(432, 7, 6)),
)


def build(b: GraphBuilder, x: Value) -> Value:
    with b.scope("first_conv"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="relu6")
    for stage_index, stage in enumerate(STAGES):
        for index, layer in enumerate(stage):
            if layer is SKIP:
                continue
            with b.scope(f"blocks.{stage_index}.{index}"):
                x = inverted_residual(
                    b,
                    x,
                    expanded=x.channels * layer.expansion,
                    out=layer.out,
                    kernel=layer.kernel,
                    stride=2 if index == 0 and stage_index > 0 else 1,
                    act="relu6",
                    bn_eps=BN_EPS,
                )
    with b.scope("feature_mix_layer"):
        x = b.conv(x, LAST, 1, bn_eps=BN_EPS, act="relu6")
    with b.scope("classifier"):
        return pooled_classifier(b, x)
