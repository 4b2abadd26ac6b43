"""A float64 reference for an ONNX model: the same graph, promoted to double, run by onnx's
own numpy ReferenceEvaluator. Independent of TVM and onnxruntime, so it can judge both."""

from __future__ import annotations

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from .precision import with_precision


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
