"""A float64 reference for an ONNX model: the same graph, promoted to double, run by onnx's
own numpy ReferenceEvaluator. Independent of TVM and onnxruntime, so it can judge both."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from .precision import with_precision

NUMPY_ACTIVATIONS = {  # the stage activations of schedules.spec, in float64
    "none": lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.clip(v, 0.0, 6.0),
    "hardswish": lambda v: v * np.clip(v / 6.0 + 0.5, 0.0, 1.0),
    "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
    "silu": lambda v: v / (1.0 + np.exp(-v)),
}


def float64_reference(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` computed in float64 for the given inputs (in graph-input order)."""
    promoted = with_precision(model, "fp64")
    initializers = {tensor.name for tensor in promoted.graph.initializer}
    names = [value.name for value in promoted.graph.input if value.name not in initializers]
    feeds = {
        name: value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value
        for name, value in zip(names, inputs)
    }
    return list(ReferenceEvaluator(promoted).run(None, feeds))


def excite_reference(
    x: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
    activation: str,
    gate: str,
) -> np.ndarray:
    """Squeeze-excitation in float64: ``x * gate(W2 . act(W1 . mean(x) + b1) + b2)`` (arguments
    in the kernel's order, see ``schedules.squeeze_excite``)."""
    scale = excite_gate_reference(x, w1, b1, w2, b2, activation, gate)
    return np.asarray(x, np.float64) * scale[:, :, None, None]


def excite_gate_reference(
    x: np.ndarray,
    w1: np.ndarray,
    b1: np.ndarray,
    w2: np.ndarray,
    b2: np.ndarray,
    activation: str,
    gate: str,
) -> np.ndarray:
    """Squeeze-excitation's ``(N, C)`` gate in float64: ``gate(W2 . act(W1 . mean(x) + b1) + b2)``."""
    x, w1, b1, w2, b2 = (np.asarray(a, np.float64) for a in (x, w1, b1, w2, b2))
    hidden = NUMPY_ACTIVATIONS[activation](x.mean(axis=(2, 3)) @ w1[:, :, 0, 0].T + b1)
    scale = hidden @ w2[:, :, 0, 0].T + b2
    return 1 / (1 + np.exp(-scale)) if gate == "sigmoid" else np.clip(scale / 6 + 0.5, 0, 1)


def gated_pw_reference(
    x: np.ndarray,
    gate: np.ndarray,
    w: np.ndarray,
    b: np.ndarray,
    residual: np.ndarray | None,
    activation: str,
) -> np.ndarray:
    """A pointwise convolution of the gated input in float64: ``act(W . (x * gate) + b) [+ residual]``
    (arguments in the kernel's order, see ``schedules.gated_pw_tc``)."""
    scaled = np.asarray(x, np.float64) * np.asarray(gate, np.float64)[:, :, None, None]
    out = np.einsum("oc,nchw->nohw", np.asarray(w, np.float64)[:, :, 0, 0], scaled)
    out = NUMPY_ACTIVATIONS[activation](out + np.asarray(b, np.float64)[None, :, None, None])
    return out if residual is None else out + np.asarray(residual, np.float64)
