"""MobileViT-XXS/XS/S (Mehta & Rastegari 2022, Table 4), as timm's ``mobilevit_*`` build them.

Stages 1-2 are MobileNetV2 blocks (MV2: expand, DW 3x3, project, SiLU); stages 3-5 each open
with a stride-2 MV2 block followed by a MobileViT block: a 3x3 conv and a 1x1 projection to the
transformer width (local representation), unfolding into 2x2 patches, pre-norm transformer
layers (4 heads, MLP ratio 2, SiLU), folding back, a 1x1 projection and a 3x3 fusion conv over
the concatenation with the block input. A feature map whose side is odd is bilinearly resized
to the next multiple of the patch size and back, as timm and ml-cvnets do.
"""

from __future__ import annotations

import math
from typing import NamedTuple

from .blocks import inverted_residual, make_divisible, pooled_classifier
from .graph import GraphBuilder, Value

BN_EPS, LN_EPS = 1e-5, 1e-5
STEM = 16
PATCH = 2
HEADS = 4
MLP_RATIO = 2


class MV2Stage(NamedTuple):
    out: int
    repeats: int
    stride: int


class ViTStage(NamedTuple):
    """A stride-2 MV2 block to ``out`` channels, then a MobileViT block of ``depth`` layers."""

    out: int
    dim: int
    depth: int


class Variant(NamedTuple):
    expansion: int
    mv2: tuple[MV2Stage, ...]
    vit: tuple[ViTStage, ...]
    features: int  # the 1x1 conv before pooling


XXS = Variant(
    2,
    (MV2Stage(16, 1, 1), MV2Stage(24, 3, 2)),
    (ViTStage(48, 64, 2), ViTStage(64, 80, 4), ViTStage(80, 96, 3)),
    320,
)
XS = Variant(
    4,
    (MV2Stage(32, 1, 1), MV2Stage(48, 3, 2)),
    (ViTStage(64, 96, 2), ViTStage(80, 120, 4), ViTStage(96, 144, 3)),
    384,
)
S = Variant(
    4,
    (MV2Stage(32, 1, 1), MV2Stage(64, 3, 2)),
    (ViTStage(96, 144, 2), ViTStage(128, 192, 4), ViTStage(160, 240, 3)),
    640,
)


def mv2(b: GraphBuilder, x: Value, out: int, stride: int, expansion: int) -> Value:
    expanded = make_divisible(x.channels * expansion)
    return inverted_residual(
        b, x, expanded=expanded, out=out, kernel=3, stride=stride, act="silu", bn_eps=BN_EPS
    )


def attention(b: GraphBuilder, x: Value) -> Value:
    """Multi-head self-attention over tokens (batch, tokens, dim), qkv in one Linear."""
    batch, tokens, dim = x.shape
    head_dim = dim // HEADS
    qkv = b.reshape(b.linear(x, 3 * dim), (batch, tokens, 3, HEADS, head_dim))
    q, k, v = b.split(b.transpose(qkv, (2, 0, 3, 1, 4)), 3, axis=0)
    scores = b.matmul(b.scale(q, head_dim**-0.5), b.transpose(k, (0, 1, 3, 2)))
    mixed = b.matmul(b.softmax(scores), v)
    return b.linear(b.reshape(b.transpose(mixed, (0, 2, 1, 3)), (batch, tokens, dim)), dim)


def transformer_layer(b: GraphBuilder, x: Value) -> Value:
    x = b.add(x, attention(b, b.layer_norm(x, LN_EPS)))
    hidden = b.act(b.linear(b.layer_norm(x, LN_EPS), MLP_RATIO * x.shape[-1]), "silu")
    return b.add(x, b.linear(hidden, x.shape[-1]))


def unfold(b: GraphBuilder, x: Value) -> Value:
    """(B, C, H, W) -> (B * P, N, C): one sequence of N patches per pixel position P in a patch."""
    batch, channels, height, width = x.shape
    rows, cols = height // PATCH, width // PATCH
    x = b.transpose(b.reshape(x, (batch * channels * rows, PATCH, cols, PATCH)), (0, 2, 1, 3))
    x = b.transpose(b.reshape(x, (batch, channels, rows * cols, PATCH * PATCH)), (0, 3, 2, 1))
    return b.reshape(x, (batch * PATCH * PATCH, rows * cols, channels))


def fold(b: GraphBuilder, x: Value, shape: tuple[int, int, int, int]) -> Value:
    """The inverse of :func:`unfold`."""
    batch, channels, height, width = shape
    rows, cols = height // PATCH, width // PATCH
    x = b.transpose(b.reshape(x, (batch, PATCH * PATCH, rows * cols, channels)), (0, 3, 2, 1))
    x = b.transpose(b.reshape(x, (batch * channels * rows, cols, PATCH, PATCH)), (0, 2, 1, 3))
    return b.reshape(x, shape)


def mobilevit_block(b: GraphBuilder, x: Value, dim: int, depth: int) -> Value:
    channels = x.channels
    y = b.conv(x, channels, 3, bn_eps=BN_EPS, act="silu")
    y = b.conv(y, dim, 1)
    height, width = y.shape[2:]
    padded = (math.ceil(height / PATCH) * PATCH, math.ceil(width / PATCH) * PATCH)
    if padded != (height, width):
        y = b.resize(y, padded)
    tokens = unfold(b, y)
    for layer in range(depth):
        with b.scope(f"transformer.{layer}"):
            tokens = transformer_layer(b, tokens)
    y = fold(b, b.layer_norm(tokens, LN_EPS), (*y.shape[:2], *padded))
    if padded != (height, width):
        y = b.resize(y, (height, width))
    y = b.conv(y, channels, 1, bn_eps=BN_EPS, act="silu")
    return b.conv(b.concat([x, y]), channels, 3, bn_eps=BN_EPS, act="silu")


def build(b: GraphBuilder, x: Value, variant: Variant) -> Value:
    with b.scope("stem"):
        x = b.conv(x, STEM, 3, stride=2, bn_eps=BN_EPS, act="silu")
    for index, stage in enumerate(variant.mv2):
        for repeat in range(stage.repeats):
            with b.scope(f"stages.{index}.{repeat}"):
                x = mv2(b, x, stage.out, stage.stride if repeat == 0 else 1, variant.expansion)
    for index, stage in enumerate(variant.vit, start=len(variant.mv2)):
        with b.scope(f"stages.{index}.0"):
            x = mv2(b, x, stage.out, 2, variant.expansion)
        with b.scope(f"stages.{index}.1"):
            x = mobilevit_block(b, x, stage.dim, stage.depth)
    with b.scope("final_conv"):
        x = b.conv(x, variant.features, 1, bn_eps=BN_EPS, act="silu")
    with b.scope("head"):
        return pooled_classifier(b, x)
