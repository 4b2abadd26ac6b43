"""Tiny depthwise-separable networks written the way real exporters write them.

The zoo writes clean graphs; ``torch.onnx`` (torchvision, timm) writes the same functions with
more plumbing, and an importer must accept every form. Each :class:`ExportStyle` names the forms
one exporter uses:

- constants as ``Constant`` nodes instead of initializers (torch.onnx's default),
- ``x.view(x.size(0), -1)`` exported as Shape -> Gather -> Unsqueeze -> Concat -> Reshape,
  or ``torch.flatten`` as Flatten; the classifier as Gemm with ``transB=1``,
- hardswish as ``x * HardSigmoid(x)`` and SiLU as ``x * Sigmoid(x)``,
- ReLU6 as Clip with min/max as inputs (opset >= 11),
- BatchNorm folded into the convolutions (torch.onnx in eval mode) or explicit,
- squeeze-and-excitation with GlobalAveragePool,

and :func:`save_with_external_data` stores the weights beside the model, as exports over 2 GiB
must be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from fcm_tvm.errors import FcmError

from .graph import GraphBuilder, Value

BN_EPS = 1e-5
CLASSES = 10


@dataclass(frozen=True)
class ExportStyle:
    name: str
    activation: str  # "relu6" (Clip), "hardswish" (x * HardSigmoid), "silu" (x * Sigmoid)
    se: tuple[str, str] | None  # squeeze-and-excitation's (activation, gate), if any
    flatten: str  # "shape_gather_reshape" or "flatten"
    constant_nodes: bool
    fold_bn: bool


STYLES = {
    style.name: style
    for style in (
        ExportStyle("torchvision_mobilenet_v2", "relu6", None, "shape_gather_reshape", True, True),
        ExportStyle("torchvision_mobilenet_v3", "hardswish", ("relu", "hardsigmoid"), "flatten", True, False),
        ExportStyle("timm_efficientnet", "silu", ("silu", "sigmoid"), "flatten", False, False),
    )
}


def build_tiny(
    style: str | ExportStyle, *, opset: int = 17, batch: int = 1, resolution: int = 32, seed: int = 0
) -> onnx.ModelProto:
    """stem conv -> DW 3x3 -> [SE] -> PW -> PW -> pool -> flatten -> Gemm, in ``style``'s forms."""
    style = _style(style)
    b = GraphBuilder(opset=opset, fold_bn=style.fold_bn, seed=seed, constant_nodes=style.constant_nodes)
    x = b.input((batch, 3, resolution, resolution))
    x = _act(b, b.conv(x, 16, 3, stride=2, bn_eps=BN_EPS), style.activation)
    x = _act(b, b.conv(x, 16, 3, groups=16, bn_eps=BN_EPS), style.activation)
    if style.se is not None:
        x = b.squeeze_excite(x, 8, act=style.se[0], gate=style.se[1])
    x = b.conv(x, 24, 1, bn_eps=BN_EPS)
    x = _act(b, b.conv(x, 32, 1, bn_eps=BN_EPS), style.activation)
    x = b.global_avg_pool(x)
    x = _flatten_by_shape(b, x) if style.flatten == "shape_gather_reshape" else b.flatten(x)
    return b.finish(b.linear(x, CLASSES), name=f"tiny_{style.name}")


def save_with_external_data(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` to ``path`` with every initializer in one ``<name>.data`` file beside it."""
    path = Path(path)
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{path.name}.data",
        size_threshold=0,
    )
    return path


def _style(style: str | ExportStyle) -> ExportStyle:
    if isinstance(style, ExportStyle):
        return style
    if style not in STYLES:
        raise FcmError(f"unknown export style {style!r}; known: {', '.join(STYLES)}")
    return STYLES[style]


def _act(b: GraphBuilder, x: Value, kind: str) -> Value:
    """Activations as torch.onnx writes them at every opset (never the HardSwish op)."""
    if kind == "relu6":
        return b.act(x, "relu6")  # Clip(x, min, max) with min and max as inputs
    if kind == "hardswish":
        (gate,) = b.node("HardSigmoid", [x.name], alpha=1 / 6, beta=0.5)
    else:
        (gate,) = b.node("Sigmoid", [x.name])
    return Value(b.node("Mul", [x.name, gate])[0], x.shape)


def _flatten_by_shape(b: GraphBuilder, x: Value) -> Value:
    """``x.view(x.size(0), -1)``: the batch size read from the tensor's shape at run time."""
    (shape,) = b.node("Shape", [x.name])
    (batch,) = b.node("Gather", [shape, b.constant(0, np.int64)], axis=0)
    (batch_1d,) = b.node("Unsqueeze", [batch, b.constant([0], np.int64)])
    (target,) = b.node("Concat", [batch_1d, b.constant([-1], np.int64)], axis=0)
    (name,) = b.node("Reshape", [x.name, target])
    return Value(name, (x.shape[0], int(np.prod(x.shape[1:]))))
