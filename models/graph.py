"""GraphBuilder: writes an ONNX graph layer by layer, with random seeded weights.

The model zoo describes each network as a layer table and walks it with these helpers.
Convolution and linear weights are normal with std ``1/sqrt(fan_in)`` (which keeps the mean
square of activations in expectation), biases and norm shifts small, norm scales in [0.5, 1.5].
BatchNorm running statistics are not random: random ones let scale errors compound layer after
layer until the logits explode. They are *calibrated* like a trained network's (see
``calibration.py``): a first build runs every BatchNorm in training mode on a random batch and
records its batch mean and variance, and the real build uses them.

All random numbers are drawn in the same order whatever ``fold_bn`` and ``opset`` are, so the
same seed gives the same function with folded or explicit BatchNorm, at every opset.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from fcm_tvm.errors import FcmError

MIN_OPSET, MAX_OPSET = 13, 18
IR_VERSION = 8  # read by every onnxruntime since 1.11 and by opset 18

ACTIVATIONS = ("none", "relu", "relu6", "hardswish", "hardsigmoid", "sigmoid", "silu", "gelu")
BIAS_STD = 0.1
BatchNormStats = tuple[np.ndarray, np.ndarray]  # running mean, running variance


@dataclass(frozen=True)
class Value:
    """A tensor of the graph: its name and static shape."""

    name: str
    shape: tuple[int, ...]

    @property
    def channels(self) -> int:
        return self.shape[1]


class GraphBuilder:
    """Accumulates nodes and initializers of one ONNX graph; every node and tensor name is unique.

    ``constant_nodes`` writes non-trainable constants (shapes, scalars) as ``Constant`` nodes, the
    way torch.onnx writes them, instead of initializers. BatchNorm running statistics are
    ``bn_stats`` in emission order if given, else random (fine for a few layers, not for a deep
    network). ``calibrate`` writes a *calibration* graph instead: its BatchNorms run in training
    mode and ``calibration_outputs`` names their batch statistics.
    """

    def __init__(
        self,
        *,
        opset: int = 17,
        fold_bn: bool = False,
        seed: int = 0,
        constant_nodes: bool = False,
        bn_stats: Sequence[BatchNormStats] | None = None,
        calibrate: bool = False,
    ) -> None:
        if not isinstance(opset, int) or not MIN_OPSET <= opset <= MAX_OPSET:
            raise FcmError(f"opset must be an integer from {MIN_OPSET} to {MAX_OPSET}, not {opset!r}")
        self.opset = opset
        self.fold_bn = fold_bn
        self.constant_nodes = constant_nodes
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self._scopes: list[str] = []
        self._ids = itertools.count()
        self.calibrating = calibrate
        self._bn_stats = None if bn_stats is None else iter(bn_stats)
        self.calibration_outputs: list[str] = []

    # ------------------------------------------------------------------ graph plumbing

    @contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Prefix the names of everything emitted inside (``features.3/Conv_41``), like torch.onnx."""
        self._scopes.append(name)
        try:
            yield
        finally:
            self._scopes.pop()

    def input(self, shape: Sequence[int], name: str = "input") -> Value:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return Value(name, tuple(shape))

    def node(self, op: str, inputs: Sequence[str], outputs: int = 1, **attributes) -> list[str]:
        """Emit one node; returns its output names."""
        name = "/".join([*self._scopes, f"{op}_{next(self._ids)}"])
        names = [f"{name}_output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, list(inputs), names, name=name, **attributes))
        return names

    def parameter(self, array: np.ndarray, what: str) -> str:
        """A trainable tensor (weight, bias, BatchNorm statistic), always an initializer."""
        name = "/".join([*self._scopes, f"{what}_{next(self._ids)}"])
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, np.float32), name))
        return name

    def constant(self, value, dtype=np.float32) -> str:
        """A non-trainable constant (a shape, a scalar): an initializer or a Constant node."""
        array = np.asarray(value, dtype=dtype)
        if self.constant_nodes:
            return self.node("Constant", [], value=numpy_helper.from_array(array, "value"))[0]
        name = f"const_{next(self._ids)}"
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def finish(self, output: Value, *, name: str = "fcm_tvm_model", output_name: str = "logits"):
        """The ModelProto, with ``output`` renamed to ``output_name``."""
        for node in self.nodes:
            node.input[:] = [output_name if i == output.name else i for i in node.input]
            node.output[:] = [output_name if o == output.name else o for o in node.output]
        graph = helper.make_graph(
            self.nodes,
            name,
            self.inputs,
            [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, list(output.shape))],
            self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="fcm-tvm"
        )
        model.ir_version = IR_VERSION
        return model

    # ------------------------------------------------------------------ random parameters

    def _normal(self, shape: Sequence[int], std: float) -> np.ndarray:
        return self.rng.normal(0.0, std, size=tuple(shape)).astype(np.float32)

    def _norm_parameters(self, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """Scale and shift of a BatchNorm or LayerNorm."""
        return self.rng.uniform(0.5, 1.5, channels).astype(np.float32), self._normal([channels], 0.2)

    def _running_stats(self, channels: int) -> BatchNormStats:
        if self.calibrating:  # placeholders: training mode ignores them
            return np.zeros(channels, np.float32), np.ones(channels, np.float32)
        if self._bn_stats is None:
            return self._normal([channels], 0.2), self.rng.uniform(0.5, 1.5, channels).astype(np.float32)
        try:
            mean, var = next(self._bn_stats)
        except StopIteration:
            raise FcmError("fewer BatchNorm statistics than BatchNorms: calibrate the same network") from None
        if mean.shape != (channels,):
            raise FcmError(f"BatchNorm statistics for {mean.shape} channels given to one of {channels}")
        return mean, var

    # ------------------------------------------------------------------ layers

    def conv(
        self,
        x: Value,
        out_channels: int,
        kernel: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        padding: int | None = None,
        bias: bool = False,
        bn_eps: float | None = None,
        act: str = "none",
    ) -> Value:
        """Conv2d (+ BatchNorm when ``bn_eps`` is given, folded into the conv if ``fold_bn``) + act.

        ``padding`` defaults to ``kernel // 2`` on every side, as the papers' "same" convolutions.
        """
        batch, in_channels, height, width = x.shape
        if in_channels % groups or out_channels % groups:
            raise FcmError(f"conv: {in_channels}->{out_channels} channels do not split into {groups} groups")
        pad = kernel // 2 if padding is None else padding
        fan_in = in_channels // groups * kernel * kernel
        weight = self._normal([out_channels, in_channels // groups, kernel, kernel], 1 / math.sqrt(fan_in))
        conv_bias = self._normal([out_channels], BIAS_STD) if bias else None
        norm = None
        if bn_eps is not None:
            norm = (*self._norm_parameters(out_channels), *self._running_stats(out_channels))
        folded = norm is not None and self.fold_bn and not self.calibrating
        if folded:
            weight, conv_bias = _fold_batchnorm(weight, conv_bias, *norm, bn_eps)
        inputs = [x.name, self.parameter(weight, "weight")]
        if conv_bias is not None:
            inputs.append(self.parameter(conv_bias, "bias"))
        (name,) = self.node(
            "Conv",
            inputs,
            kernel_shape=[kernel, kernel],
            strides=[stride, stride],
            pads=[pad] * 4,
            group=groups,
            dilations=[1, 1],
        )
        size = ((height + 2 * pad - kernel) // stride + 1, (width + 2 * pad - kernel) // stride + 1)
        y = Value(name, (batch, out_channels, *size))
        if norm is not None and not folded:
            y = self._batchnorm(y, norm, bn_eps)
        return self.act(y, act)

    def _batchnorm(self, x: Value, parameters: tuple[np.ndarray, ...], eps: float) -> Value:
        names = [self.parameter(p, what) for p, what in zip(parameters, ("scale", "B", "mean", "var"))]
        if not self.calibrating:
            return Value(self.node("BatchNormalization", [x.name, *names], epsilon=eps)[0], x.shape)
        # momentum 0: the running-statistics outputs are this batch's mean and variance
        name, mean, var = self.node(
            "BatchNormalization", [x.name, *names], 3, epsilon=eps, momentum=0.0, training_mode=1
        )
        self.calibration_outputs += [mean, var]
        return Value(name, x.shape)

    def linear(self, x: Value, out_features: int, *, bias: bool = True) -> Value:
        """A dense layer on the last axis: Gemm(transB=1) on (N, C), MatMul + Add on tokens."""
        in_features = x.shape[-1]
        weight = self._normal([out_features, in_features], 1 / math.sqrt(in_features))
        bias_value = self._normal([out_features], BIAS_STD) if bias else None
        shape = (*x.shape[:-1], out_features)
        if len(x.shape) == 2:
            inputs = [x.name, self.parameter(weight, "weight")]
            if bias_value is not None:
                inputs.append(self.parameter(bias_value, "bias"))
            return Value(self.node("Gemm", inputs, transB=1)[0], shape)
        (y,) = self.node("MatMul", [x.name, self.parameter(weight.T, "weight")])
        if bias_value is not None:
            (y,) = self.node("Add", [y, self.parameter(bias_value, "bias")])
        return Value(y, shape)

    def act(self, x: Value, kind: str) -> Value:
        """An activation, written in the ops that exporters use at this opset."""
        if kind not in ACTIVATIONS:
            raise FcmError(f"unknown activation {kind!r}; known: {', '.join(ACTIVATIONS)}")
        return x if kind == "none" else Value(getattr(self, f"_{kind}")(x.name), x.shape)

    def _relu(self, x: str) -> str:
        return self.node("Relu", [x])[0]

    def _relu6(self, x: str) -> str:
        return self.node("Clip", [x, self.constant(0.0), self.constant(6.0)])[0]

    def _hardsigmoid(self, x: str) -> str:
        return self.node("HardSigmoid", [x], alpha=1 / 6, beta=0.5)[0]

    def _hardswish(self, x: str) -> str:
        if self.opset >= 14:
            return self.node("HardSwish", [x])[0]
        return self.node("Mul", [x, self._hardsigmoid(x)])[0]

    def _sigmoid(self, x: str) -> str:
        return self.node("Sigmoid", [x])[0]

    def _silu(self, x: str) -> str:
        return self.node("Mul", [x, self._sigmoid(x)])[0]

    def _gelu(self, x: str) -> str:
        """The exact (erf) GELU as torch.onnx writes it below opset 20: x * 0.5 * (1 + erf(x/√2))."""
        (scaled,) = self.node("Div", [x, self.constant(math.sqrt(2.0))])
        (erf,) = self.node("Erf", [scaled])
        (shifted,) = self.node("Add", [erf, self.constant(1.0)])
        (product,) = self.node("Mul", [x, shifted])
        return self.node("Mul", [product, self.constant(0.5)])[0]

    def squeeze_excite(self, x: Value, squeeze_channels: int, *, act: str, gate: str) -> Value:
        """Squeeze-and-excitation: x * gate(conv(act(conv(mean over H, W))))."""
        pooled = self.global_avg_pool(x)
        hidden = self.conv(pooled, squeeze_channels, bias=True, act=act)
        scale = self.conv(hidden, x.channels, bias=True, act=gate)
        return self.mul(x, scale)

    def layer_norm(self, x: Value, eps: float) -> Value:
        """LayerNorm over the last axis: LayerNormalization from opset 17, its decomposition below."""
        gamma, beta = self._norm_parameters(x.shape[-1])
        scale, bias = self.parameter(gamma, "scale"), self.parameter(beta, "bias")
        if self.opset >= 17:
            (name,) = self.node("LayerNormalization", [x.name, scale, bias], axis=-1, epsilon=eps)
            return Value(name, x.shape)
        (mean,) = self.node("ReduceMean", [x.name], axes=[-1], keepdims=1)
        (centred,) = self.node("Sub", [x.name, mean])
        (square,) = self.node("Mul", [centred, centred])
        (variance,) = self.node("ReduceMean", [square], axes=[-1], keepdims=1)
        (std,) = self.node("Sqrt", [self.node("Add", [variance, self.constant(eps)])[0]])
        (normed,) = self.node("Div", [centred, std])
        (name,) = self.node("Add", [self.node("Mul", [normed, scale])[0], bias])
        return Value(name, x.shape)

    def layer_norm_2d(self, x: Value, eps: float) -> Value:
        """LayerNorm over the channels of NCHW (timm's LayerNorm2d): permute, normalise, permute back."""
        channels_last = self.transpose(x, (0, 2, 3, 1))
        return self.transpose(self.layer_norm(channels_last, eps), (0, 3, 1, 2))

    # ------------------------------------------------------------------ tensor plumbing

    def add(self, a: Value, b: Value) -> Value:
        return Value(self.node("Add", [a.name, b.name])[0], _broadcast(a.shape, b.shape))

    def mul(self, a: Value, b: Value) -> Value:
        return Value(self.node("Mul", [a.name, b.name])[0], _broadcast(a.shape, b.shape))

    def scale(self, x: Value, factor: np.ndarray | float, *, trainable: bool = False) -> Value:
        """x * factor; a trainable factor (a layer scale) counts as a parameter."""
        factor_name = self.parameter(factor, "gamma") if trainable else self.constant(factor)
        return Value(self.node("Mul", [x.name, factor_name])[0], x.shape)

    def global_avg_pool(self, x: Value) -> Value:
        return Value(self.node("GlobalAveragePool", [x.name])[0], (*x.shape[:2], 1, 1))

    def flatten(self, x: Value) -> Value:
        return Value(self.node("Flatten", [x.name], axis=1)[0], (x.shape[0], math.prod(x.shape[1:])))

    def reshape(self, x: Value, shape: Sequence[int]) -> Value:
        shape = tuple(shape)
        if math.prod(shape) != math.prod(x.shape):
            raise FcmError(f"reshape: {x.shape} has {math.prod(x.shape)} elements, {shape} does not")
        (name,) = self.node("Reshape", [x.name, self.constant(shape, np.int64)])
        return Value(name, shape)

    def transpose(self, x: Value, perm: Sequence[int]) -> Value:
        (name,) = self.node("Transpose", [x.name], perm=list(perm))
        return Value(name, tuple(x.shape[p] for p in perm))

    def matmul(self, a: Value, b: Value) -> Value:
        shape = (*_broadcast(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
        return Value(self.node("MatMul", [a.name, b.name])[0], shape)

    def softmax(self, x: Value, axis: int = -1) -> Value:
        return Value(self.node("Softmax", [x.name], axis=axis)[0], x.shape)

    def concat(self, values: Sequence[Value], axis: int = 1) -> Value:
        shape = list(values[0].shape)
        shape[axis] = sum(v.shape[axis] for v in values)
        return Value(self.node("Concat", [v.name for v in values], axis=axis)[0], tuple(shape))

    def split(self, x: Value, parts: int, axis: int = 0) -> list[Value]:
        """``parts`` equal slices along ``axis``, each with that axis squeezed away (torch.unbind)."""
        size = x.shape[axis] // parts
        pieces = self.node("Split", [x.name, self.constant([size] * parts, np.int64)], parts, axis=axis)
        shape = tuple(d for i, d in enumerate(x.shape) if i != axis % len(x.shape))
        axes = self.constant([axis], np.int64)
        return [Value(self.node("Squeeze", [piece, axes])[0], shape) for piece in pieces]

    def resize(self, x: Value, size: tuple[int, int]) -> Value:
        """Bilinear resize to ``size`` (F.interpolate(mode="bilinear", align_corners=False))."""
        sizes = self.constant([*x.shape[:2], *size], np.int64)
        (name,) = self.node(
            "Resize",
            [x.name, "", "", sizes],
            mode="linear",
            coordinate_transformation_mode="pytorch_half_pixel",
        )
        return Value(name, (*x.shape[:2], *size))


def _fold_batchnorm(weight, bias, gamma, beta, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Conv weight and bias that compute conv followed by inference-mode BatchNorm (in float64)."""
    factor = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    folded_weight = weight.astype(np.float64) * factor[:, None, None, None]
    base = np.zeros_like(factor) if bias is None else bias.astype(np.float64)
    folded_bias = (base - mean) * factor + beta
    return folded_weight.astype(np.float32), folded_bias.astype(np.float32)


def _broadcast(a: Sequence[int], b: Sequence[int]) -> tuple[int, ...]:
    try:
        return tuple(np.broadcast_shapes(tuple(a), tuple(b)))
    except ValueError:
        raise FcmError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast") from None
