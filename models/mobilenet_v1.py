"""MobileNetV1 (Howard et al. 2017, Table 1): a 3x3 stem and 13 depthwise-separable layers.

Each separable layer is DW 3x3 (+BN+ReLU6) then PW 1x1 (+BN+ReLU6), as in the TF-Slim/Keras
reference implementation (the paper writes ReLU; the released models use ReLU6). The paper's
table lists the second-to-last DW layer with stride 2 at 7x7 input, a known typo: it is stride 1.
"""

from __future__ import annotations

from typing import NamedTuple

from .blocks import pooled_classifier
from .graph import GraphBuilder, Value

BN_EPS = 1e-3  # Keras/TF-Slim BatchNormalization default
STEM = 32


class Separable(NamedTuple):
    """One row of Table 1: DW 3x3 with ``stride``, then PW to ``out`` channels."""

    out: int
    stride: int


LAYERS = (
    Separable(64, 1),
    Separable(128, 2),
    Separable(128, 1),
    Separable(256, 2),
    Separable(256, 1),
    Separable(512, 2),
    *[Separable(512, 1)] * 5,
    Separable(1024, 2),
    Separable(1024, 1),
)


def build(b: GraphBuilder, x: Value) -> Value:
    with b.scope("stem"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="relu6")
    for index, layer in enumerate(LAYERS):
        with b.scope(f"separable.{index}"):
            x = b.conv(x, x.channels, 3, stride=layer.stride, groups=x.channels, bn_eps=BN_EPS, act="relu6")
            x = b.conv(x, layer.out, 1, bn_eps=BN_EPS, act="relu6")
    with b.scope("classifier"):
        return pooled_classifier(b, x)
