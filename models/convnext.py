"""ConvNeXt-T (Liu et al. 2022), as torchvision.models.convnext_tiny builds it.

A 4x4/4 patchify stem with LayerNorm, four stages of ConvNeXt blocks (DW 7x7 -> LayerNorm ->
PW to 4x channels -> GELU -> PW back -> layer scale -> residual) separated by LayerNorm + 2x2/2
downsampling convs, then global pooling, LayerNorm and the classifier. The pointwise MLP is
written as 1x1 convolutions on NCHW (timm's ``conv_mlp`` form); torchvision permutes to NHWC and
uses Linear layers, which is the same function with the same parameters.
"""

from __future__ import annotations

from typing import NamedTuple

from .graph import GraphBuilder, Value

LN_EPS = 1e-6
MLP_RATIO = 4


class Stage(NamedTuple):
    depth: int
    dim: int


TINY = (Stage(3, 96), Stage(3, 192), Stage(9, 384), Stage(3, 768))


def block(b: GraphBuilder, x: Value) -> Value:
    channels = x.channels
    y = b.conv(x, channels, 7, groups=channels, bias=True)
    y = b.layer_norm_2d(y, LN_EPS)
    y = b.conv(y, MLP_RATIO * channels, 1, bias=True, act="gelu")
    y = b.conv(y, channels, 1, bias=True)
    y = b.scale(y, b.rng.uniform(0.1, 0.5, (channels, 1, 1)), trainable=True)  # layer scale
    return b.add(x, y)


def build(b: GraphBuilder, x: Value, stages: tuple[Stage, ...] = TINY) -> Value:
    with b.scope("features.0"):
        x = b.conv(x, stages[0].dim, 4, stride=4, padding=0, bias=True)
        x = b.layer_norm_2d(x, LN_EPS)
    for index, stage in enumerate(stages):
        if index > 0:
            with b.scope(f"features.{2 * index}"):
                x = b.layer_norm_2d(x, LN_EPS)
                x = b.conv(x, stage.dim, 2, stride=2, padding=0, bias=True)
        for repeat in range(stage.depth):
            with b.scope(f"features.{2 * index + 1}.{repeat}"):
                x = block(b, x)
    with b.scope("classifier"):
        x = b.layer_norm(b.flatten(b.global_avg_pool(x)), LN_EPS)
        return b.linear(x, 1000)
