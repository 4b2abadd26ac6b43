"""The model zoo: names, published parameter counts, and ``build_model``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache, partial

import numpy as np
import onnx
from onnx import helper

from fcm_tvm.errors import FcmError

from . import (
    convnext,
    efficientnet,
    mnasnet,
    mobilenet_v1,
    mobilenet_v2,
    mobilenet_v3,
    mobilevit,
    proxylessnas,
)
from .calibration import calibrate_batchnorm
from .graph import BatchNormStats, GraphBuilder, Value

MIN_RESOLUTION = 32  # every model here downsamples by 32

Build = Callable[[GraphBuilder, Value], Value]


@dataclass(frozen=True)
class ModelInfo:
    """One model of the zoo and the figure its parameter count is checked against."""

    name: str
    family: str
    published_params: int
    source: str  # where published_params comes from
    description: str
    build: Build = field(repr=False, compare=False)


_TV = "torchvision.models"
_MODELS = (
    ModelInfo(
        "mobilenet_v1",
        "MobileNetV1",
        4_231_976,
        "Howard et al. 2017 (4.2M); Keras MobileNet trainable parameters",
        "13 depthwise-separable layers, ReLU6",
        mobilenet_v1.build,
    ),
    ModelInfo(
        "mobilenet_v2",
        "MobileNetV2",
        3_504_872,
        f"{_TV}.mobilenet_v2",
        "17 inverted residuals (DW 3x3), ReLU6",
        mobilenet_v2.build,
    ),
    ModelInfo(
        "mobilenet_v3_small",
        "MobileNetV3",
        2_542_856,
        f"{_TV}.mobilenet_v3_small",
        "11 bottlenecks, DW 3x3/5x5, hardswish, SE with hardsigmoid",
        mobilenet_v3.build_small,
    ),
    ModelInfo(
        "mobilenet_v3_large",
        "MobileNetV3",
        5_483_032,
        f"{_TV}.mobilenet_v3_large",
        "15 bottlenecks, DW 3x3/5x5, hardswish, SE with hardsigmoid",
        mobilenet_v3.build_large,
    ),
    ModelInfo(
        "efficientnet_b0",
        "EfficientNet",
        5_288_548,
        f"{_TV}.efficientnet_b0",
        "16 MBConv blocks, DW 3x3/5x5, SiLU, SE with sigmoid",
        efficientnet.build,
    ),
    ModelInfo(
        "mnasnet1_0",
        "MnasNet",
        4_383_312,
        f"{_TV}.mnasnet1_0",
        "SepConv + 16 inverted residuals, DW 3x3/5x5, ReLU",
        mnasnet.build,
    ),
    ModelInfo(
        "proxylessnas_gpu",
        "ProxylessNAS",
        7_119_848,
        "Cai et al. 2019 (7.1M); pytorchcv proxylessnas_gpu",
        "searched MBConvs, DW 3x3/5x5/7x7, ReLU6",
        proxylessnas.build,
    ),
    ModelInfo(
        "convnext_tiny",
        "ConvNeXt",
        28_589_128,
        f"{_TV}.convnext_tiny",
        "DW 7x7 + LayerNorm + PW MLP with GELU, layer scale",
        convnext.build,
    ),
    ModelInfo(
        "mobilevit_xxs",
        "MobileViT",
        1_272_024,
        "timm mobilevit_xxs (paper: 1.3M)",
        "MV2 blocks + transformers over 2x2 patches, SiLU",
        partial(mobilevit.build, variant=mobilevit.XXS),
    ),
    ModelInfo(
        "mobilevit_xs",
        "MobileViT",
        2_317_848,
        "timm mobilevit_xs (paper: 2.3M)",
        "MV2 blocks + transformers over 2x2 patches, SiLU",
        partial(mobilevit.build, variant=mobilevit.XS),
    ),
    ModelInfo(
        "mobilevit_s",
        "MobileViT",
        5_578_632,
        "timm mobilevit_s (paper: 5.6M)",
        "MV2 blocks + transformers over 2x2 patches, SiLU",
        partial(mobilevit.build, variant=mobilevit.S),
    ),
)
MODELS = {info.name: info for info in _MODELS}


def list_models() -> list[ModelInfo]:
    return list(_MODELS)


def model_info(name: str) -> ModelInfo:
    if name not in MODELS:
        raise FcmError(f"unknown model {name!r}; known models: {', '.join(MODELS)}")
    return MODELS[name]


def build_model(
    name: str,
    *,
    batch: int = 1,
    resolution: int = 224,
    fold_bn: bool = False,
    seed: int = 0,
    opset: int = 17,
) -> onnx.ModelProto:
    """The named model as ONNX: NCHW float32 ``input`` (batch, 3, resolution, resolution) ->
    ``logits`` (batch, 1000), random weights drawn from ``seed``."""
    info = model_info(name)
    if not isinstance(batch, int) or batch < 1:
        raise FcmError(f"batch must be a positive integer, not {batch!r}")
    if not isinstance(resolution, int) or resolution < MIN_RESOLUTION:
        raise FcmError(f"resolution must be an integer of at least {MIN_RESOLUTION}, not {resolution!r}")
    stats = _bn_stats(name, seed, resolution)
    shape = (batch, 3, resolution, resolution)
    return _build(info, shape, fold_bn=fold_bn, seed=seed, opset=opset, bn_stats=stats)


def _build(info: ModelInfo, shape: tuple[int, ...], **builder_options) -> onnx.ModelProto:
    builder = GraphBuilder(**builder_options)
    return builder.finish(info.build(builder, builder.input(shape)), name=info.name)


@lru_cache(maxsize=32)
def _bn_stats(name: str, seed: int, resolution: int) -> tuple[BatchNormStats, ...]:
    return tuple(calibrate_batchnorm(MODELS[name].build, seed, resolution))


def count_parameters(model: onnx.ModelProto) -> int:
    """Trainable parameters, counted as torchvision and timm count them.

    Every floating-point initializer element counts except BatchNorm running mean and variance
    (buffers, not parameters) and scalars (constants such as ReLU6's bounds). BatchNorm scale and
    shift count, so a model built with ``fold_bn=True`` has fewer: each folded BatchNorm's two
    vectors become one conv bias.
    """
    running_stats = {
        name for node in model.graph.node if node.op_type == "BatchNormalization" for name in node.input[3:5]
    }
    total = 0
    for tensor in model.graph.initializer:
        is_float = helper.tensor_dtype_to_np_dtype(tensor.data_type).kind == "f"
        if is_float and tensor.dims and tensor.name not in running_stats:
            total += int(np.prod(tensor.dims))
    return total


def markdown_table() -> str:
    """The zoo as a markdown table: published and built parameter counts (docs/models.md)."""
    lines = [
        "| model | family | published | built | difference | source |",
        "|---|---|---:|---:|---:|---|",
    ]
    for info in _MODELS:
        # BatchNorm statistics do not change the count: skip the calibration
        built = count_parameters(_build(info, (1, 3, MIN_RESOLUTION, MIN_RESOLUTION)))
        difference = (built - info.published_params) / info.published_params
        lines.append(
            f"| `{info.name}` | {info.family} | {info.published_params:,} | {built:,} "
            f"| {difference:+.2%} | {info.source} |"
        )
    return "\n".join(lines)
