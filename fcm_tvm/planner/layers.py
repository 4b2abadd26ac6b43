"""The depthwise-separable blocks of MobileNetV2 and EfficientNet-B0 (224x224 ImageNet) as data.

Each row is one inverted-residual block as the published architectures define it: input
channels and size, channels after the 1x1 expansion (0: no expansion), depthwise kernel and
stride, output channels. :func:`model_chains` turns a model's rows into the FCM chains the relax
pass would find: MobileNetV2 blocks are PW->DW->PW (DW->PW without expansion) with a residual
when shapes allow; EfficientNet-B0's squeeze-excitation sits between the depthwise and the
projection, so only its PW->DW pairs are chains.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import FcmError
from ..schedules.spec import Depthwise, FcmSpec, Pointwise


@dataclass(frozen=True)
class Block:
    """One inverted-residual block (square feature maps)."""

    name: str
    in_channels: int
    size: int
    expanded: int  # channels after the expansion 1x1; 0: the block has no expansion
    kernel: int
    stride: int
    out_channels: int


@dataclass(frozen=True)
class Model:
    blocks: tuple[Block, ...]
    activation: str  # after the expansion and the depthwise convolution
    squeeze_excite: bool  # SE between depthwise and projection: the projection is not in the chain


B = Block
MOBILENET_V2 = Model(
    blocks=(
        B("b1", 32, 112, 0, 3, 1, 16),
        B("b2", 16, 112, 96, 3, 2, 24),
        B("b3", 24, 56, 144, 3, 1, 24),
        B("b4", 24, 56, 144, 3, 2, 32),
        B("b5", 32, 28, 192, 3, 1, 32),
        B("b6", 32, 28, 192, 3, 1, 32),
        B("b7", 32, 28, 192, 3, 2, 64),
        B("b8", 64, 14, 384, 3, 1, 64),
        B("b9", 64, 14, 384, 3, 1, 64),
        B("b10", 64, 14, 384, 3, 1, 64),
        B("b11", 64, 14, 384, 3, 1, 96),
        B("b12", 96, 14, 576, 3, 1, 96),
        B("b13", 96, 14, 576, 3, 1, 96),
        B("b14", 96, 14, 576, 3, 2, 160),
        B("b15", 160, 7, 960, 3, 1, 160),
        B("b16", 160, 7, 960, 3, 1, 160),
        B("b17", 160, 7, 960, 3, 1, 320),
    ),
    activation="relu6",
    squeeze_excite=False,
)
EFFICIENTNET_B0 = Model(
    blocks=(
        B("b1", 32, 112, 0, 3, 1, 16),
        B("b2", 16, 112, 96, 3, 2, 24),
        B("b3", 24, 56, 144, 3, 1, 24),
        B("b4", 24, 56, 144, 5, 2, 40),
        B("b5", 40, 28, 240, 5, 1, 40),
        B("b6", 40, 28, 240, 3, 2, 80),
        B("b7", 80, 14, 480, 3, 1, 80),
        B("b8", 80, 14, 480, 3, 1, 80),
        B("b9", 80, 14, 480, 5, 1, 112),
        B("b10", 112, 14, 672, 5, 1, 112),
        B("b11", 112, 14, 672, 5, 1, 112),
        B("b12", 112, 14, 672, 5, 2, 192),
        B("b13", 192, 7, 1152, 5, 1, 192),
        B("b14", 192, 7, 1152, 5, 1, 192),
        B("b15", 192, 7, 1152, 5, 1, 192),
        B("b16", 192, 7, 1152, 3, 1, 320),
    ),
    activation="silu",
    squeeze_excite=True,
)
MODELS = {"mobilenet_v2": MOBILENET_V2, "efficientnet_b0": EFFICIENTNET_B0}


def block_chain(block: Block, model: Model, batch: int = 1, dtype: str = "float32") -> FcmSpec | None:
    """The FCM chain of ``block`` (None when the block has none, e.g. EfficientNet's first block)."""
    depthwise = Depthwise(block.kernel, block.stride, activation=model.activation)
    expand = (Pointwise(block.expanded, model.activation),) if block.expanded else ()
    project = () if model.squeeze_excite else (Pointwise(block.out_channels),)
    stages = (*expand, depthwise, *project)
    if len(stages) < 2:
        return None
    residual = bool(project) and block.stride == 1 and block.in_channels == block.out_channels
    return FcmSpec(batch, block.in_channels, block.size, block.size, stages, residual, dtype)


def model_chains(name: str, batch: int = 1, dtype: str = "float32") -> list[tuple[str, FcmSpec]]:
    """(block name, chain) of every block of model ``name`` that has a chain, in network order."""
    if name not in MODELS:
        raise FcmError(f"no layer table for model '{name}'; known: {', '.join(sorted(MODELS))}")
    model = MODELS[name]
    chains = [(block.name, block_chain(block, model, batch, dtype)) for block in model.blocks]
    return [(block_name, spec) for block_name, spec in chains if spec is not None]
