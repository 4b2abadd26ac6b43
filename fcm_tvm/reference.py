"""A float64 reference for an ONNX model: the same graph, promoted to double, run by onnx's
own numpy ReferenceEvaluator. Independent of TVM and onnxruntime, so it can judge both."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

FLOAT_TYPES = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16)


def to_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose floating-point tensors, constants and casts are all float64."""
    promoted = onnx.ModelProto()
    promoted.CopyFrom(model)
    graph = promoted.graph
    for index, tensor in enumerate(graph.initializer):
        graph.initializer[index].CopyFrom(_promote_tensor(tensor))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type in FLOAT_TYPES:
            value.type.tensor_type.elem_type = TensorProto.DOUBLE
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(_promote_tensor(attribute.t))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i in FLOAT_TYPES:
                attribute.i = TensorProto.DOUBLE
    return promoted


def _promote_tensor(tensor: onnx.TensorProto) -> onnx.TensorProto:
    if tensor.data_type not in FLOAT_TYPES:
        return tensor
    array = numpy_helper.to_array(tensor).astype(np.float64)
    return numpy_helper.from_array(array, tensor.name)


def float64_reference(model: onnx.ModelProto, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Outputs of ``model`` computed in float64 for the given inputs (in graph-input order)."""
    promoted = to_float64(model)
    initializers = {tensor.name for tensor in promoted.graph.initializer}
    names = [value.name for value in promoted.graph.input if value.name not in initializers]
    feeds = {
        name: value.astype(np.float64) if np.issubdtype(value.dtype, np.floating) else value
        for name, value in zip(names, inputs)
    }
    return list(ReferenceEvaluator(promoted).run(None, feeds))
