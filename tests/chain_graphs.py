"""Small ONNX graphs of DW/PW chains, written the way exporters write them, for the pass tests.

A chain is a list of :class:`Conv` stages; each activation is named by its ONNX form (the same
function can be exported several ways, and the pass must recognise each), and ACTIVATION_OF
says which FcmSpec activation the form is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# ONNX form -> the FcmSpec activation it computes
ACTIVATION_OF = {
    "none": "none",
    "relu": "relu",
    "clip6": "relu6",  # Clip with min/max inputs (opset >= 11)
    "clip6_attr": "relu6",  # Clip with min/max attributes (opset < 11)
    "hardswish": "hardswish",  # HardSwish op (opset >= 14)
    "hardsigmoid_mul": "hardswish",  # x * HardSigmoid(x, alpha=1/6)
    "add_clip_mul_div": "hardswish",  # x * Clip(x + 3, 0, 6) / 6
    "sigmoid": "sigmoid",
    "silu": "silu",  # x * Sigmoid(x)
}
ELEM_TYPES = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}


@dataclass(frozen=True)
class Conv:
    """One convolution: ``dw`` (groups = channels), ``pw`` (1x1) or ``dense`` (kernel x kernel)."""

    op: str
    out_channels: int | None = None  # pw and dense (default: unchanged); dw: channels x multiplier
    kernel: int = 3
    stride: int = 1
    pads: tuple[int, int, int, int] | None = None  # ONNX order: top, left, bottom, right
    activation: str = "none"
    bias: bool = True
    batchnorm: bool = False
    groups: int | None = None  # overrides dw/pw grouping (for grouped convolutions)
    dilation: int = 1
    multiplier: int = 1  # dw channel multiplier


@dataclass
class GraphBuilder:
    """Accumulates nodes and random initializers; every name is unique."""

    dtype: str = "float32"
    seed: int = 0
    nodes: list = field(default_factory=list)
    initializers: list = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def constant(self, value: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.initializers.append(numpy_helper.from_array(np.asarray(value).astype(self.dtype), name))
        return name

    def random(self, shape: tuple[int, ...], prefix: str, scale: float = 1.0) -> str:
        return self.constant(self.rng.standard_normal(shape) * scale, prefix)

    def conv(self, x: str, channels: int, conv: Conv) -> tuple[str, int]:
        """Append ``conv`` (with bias, BatchNorm and activation) to ``x``; returns (output, channels)."""
        if conv.op == "pw":
            out_channels, groups, kernel = conv.out_channels or channels, conv.groups or 1, 1
        elif conv.op == "dw":
            out_channels, groups, kernel = channels * conv.multiplier, conv.groups or channels, conv.kernel
        else:
            out_channels, groups, kernel = conv.out_channels or channels, conv.groups or 1, conv.kernel
        half = kernel // 2
        pads = list(conv.pads) if conv.pads is not None else [half] * 4
        # ONNX pads are [x1_begin, x2_begin, x1_end, x2_end] = top, left, bottom, right
        fan_in = channels // groups * kernel * kernel
        weight = self.random((out_channels, channels // groups, kernel, kernel), "w", fan_in**-0.5)
        inputs = [x, weight] + ([self.random((out_channels,), "b", 0.1)] if conv.bias else [])
        y = self.node(
            "Conv",
            inputs,
            kernel_shape=[kernel, kernel],
            strides=[conv.stride] * 2,
            pads=pads,
            group=groups,
            dilations=[conv.dilation] * 2,
        )
        if conv.batchnorm:
            y = self.batchnorm(y, out_channels)
        return self.activation(y, conv.activation), out_channels

    def batchnorm(self, x: str, channels: int) -> str:
        gamma = self.constant(self.rng.uniform(0.5, 1.5, channels), "gamma")
        beta = self.random((channels,), "beta", 0.1)
        mean = self.random((channels,), "mean", 0.1)
        var = self.constant(self.rng.uniform(0.5, 1.5, channels), "var")
        return self.node("BatchNormalization", [x, gamma, beta, mean, var], epsilon=1e-3)

    def activation(self, x: str, form: str) -> str:
        scalar = lambda value: self.constant(np.array(value), "k")  # noqa: E731
        if form == "none":
            return x
        if form == "relu":
            return self.node("Relu", [x])
        if form == "clip6":
            return self.node("Clip", [x, scalar(0.0), scalar(6.0)])
        if form == "clip6_attr":
            return self.node("Clip", [x], min=0.0, max=6.0)
        if form == "hardswish":
            return self.node("HardSwish", [x])
        if form == "hardsigmoid_mul":
            return self.node("Mul", [x, self.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
        if form == "add_clip_mul_div":
            shifted = self.node("Add", [x, scalar(3.0)])
            clipped = self.node("Clip", [shifted, scalar(0.0), scalar(6.0)])
            return self.node("Div", [self.node("Mul", [x, clipped]), scalar(6.0)])
        if form == "sigmoid":
            return self.node("Sigmoid", [x])
        if form == "silu":
            return self.node("Mul", [x, self.node("Sigmoid", [x])])
        raise ValueError(f"unknown activation form {form}")

    def model(self, inputs: dict[str, tuple[int, ...]], outputs: list[str], opset: int) -> onnx.ModelProto:
        elem = ELEM_TYPES[self.dtype]
        graph = helper.make_graph(
            self.nodes,
            "chain",
            [helper.make_tensor_value_info(name, elem, list(shape)) for name, shape in inputs.items()],
            [helper.make_tensor_value_info(name, elem, None) for name in outputs],
            self.initializers,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # output shapes
        onnx.checker.check_model(model)
        return model


def chain_model(
    stages: list[Conv],
    shape: tuple[int, int, int, int] = (1, 8, 10, 10),
    *,
    residual: bool = False,
    stock_ops: bool = False,
    opset: int = 17,
    dtype: str = "float32",
    seed: int = 0,
) -> onnx.ModelProto:
    """Input ``x`` -> [stock prologue] -> stages -> [+ residual] -> [stock epilogue] -> output.

    With ``stock_ops`` a dense 3x3 conv + ReLU comes before the chain and a Mul by a scalar after
    it: neighbours the pass must leave alone (and that FuseOps would like to merge with the FCM).
    """
    builder = GraphBuilder(dtype, seed)
    x, channels = "x", shape[1]
    if stock_ops:
        x, channels = builder.conv(x, channels, Conv("dense", activation="relu"))
    chain_input = x
    for stage in stages:
        x, channels = builder.conv(x, channels, stage)
    if residual:
        x = builder.node("Add", [x, chain_input])
    if stock_ops:
        x = builder.node("Mul", [x, builder.constant(np.array(0.5), "k")])
    return builder.model({"x": shape}, [x], opset)


def random_inputs(model: onnx.ModelProto, rng: np.random.Generator) -> list[np.ndarray]:
    """Fresh standard-normal inputs for every graph input, in graph order."""
    arrays = []
    for value in model.graph.input:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)
        arrays.append(rng.standard_normal(dims).astype(dtype))
    return arrays


def batchnorm_blocks_model(
    shape: tuple[int, int, int, int] = (1, 8, 10, 10), seed: int = 0
) -> onnx.ModelProto:
    """A float32 network of Conv + BatchNormalization blocks, as real networks are exported: a dense
    3x3 conv (stock TVM's, its BatchNorm is not folded), a MobileNetV2 block (pw_dw_pw, Clip(0, 6),
    residual), then a MobileNetV1 block (dw_pw, ReLU). ``with_precision`` makes it float16."""
    builder = GraphBuilder("float32", seed)
    x, channels = builder.conv("x", shape[1], Conv("dense", bias=False, batchnorm=True, activation="relu"))
    block_input = x
    for conv in [
        Conv("pw", 32, bias=False, batchnorm=True, activation="clip6"),
        Conv("dw", bias=False, batchnorm=True, activation="clip6"),
        Conv("pw", shape[1], bias=False, batchnorm=True),
    ]:
        x, channels = builder.conv(x, channels, conv)
    x = builder.node("Add", [x, block_input])
    for conv in [Conv("dw", bias=False, batchnorm=True, activation="relu"), Conv("pw", 16, batchnorm=True)]:
        x, channels = builder.conv(x, channels, conv)
    return builder.model({"x": shape}, [x], 17)
