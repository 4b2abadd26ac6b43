"""Change the floating-point type of a whole ONNX model (float16 runs, float64 references)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import FcmError

if TYPE_CHECKING:
    import onnx

# ONNX's TensorProto.DataType values (fixed by the ONNX spec): the command line lists the
# precisions at start-up, and importing onnx for them took 0.8 s of the 0.1 s it needs otherwise
FLOAT, FLOAT16, DOUBLE, BFLOAT16 = 1, 10, 11, 16
FLOAT_TYPES = (FLOAT, FLOAT16, BFLOAT16, DOUBLE)
PRECISIONS = {"fp32": FLOAT, "fp16": FLOAT16, "fp64": DOUBLE}
MODEL_PRECISIONS = ("fp32", "fp16")  # what compile, plan and tune build in; fp64 serves references


def cast_model(model: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """A copy of ``model`` whose float tensors, inputs, outputs, constants and casts are ``elem_type``."""
    import onnx

    cast = onnx.ModelProto()
    cast.CopyFrom(model)
    graph = cast.graph
    for tensor in graph.initializer:
        tensor.CopyFrom(_cast_tensor(tensor, elem_type))
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type in FLOAT_TYPES:
            value.type.tensor_type.elem_type = elem_type
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                attribute.t.CopyFrom(_cast_tensor(attribute.t, elem_type))
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i in FLOAT_TYPES:
                attribute.i = elem_type
    _cast_batchnorm_outputs(graph, elem_type)
    return cast


def _cast_batchnorm_outputs(graph: onnx.GraphProto, elem_type: int) -> None:
    """Follow each BatchNormalization by a Cast back to ``elem_type``.

    TVM legalizes a float16 ``batch_norm`` into a PrimFunc that computes and returns float32 (the
    Relax types still say float16), which the next float16 operator then rejects; the Cast (an
    ``astype`` to float16 in Relax) converts it back. FoldBatchNorm folds the Cast away with the
    BatchNorm wherever a chain is fused.
    """
    from onnx import helper

    nodes = []
    for node in graph.node:
        nodes.append(node)
        if node.op_type == "BatchNormalization" and elem_type != FLOAT:
            output = node.output[0]
            node.output[0] = f"{output}__{node.name}_unconverted"
            nodes.append(helper.make_node("Cast", [node.output[0]], [output], to=elem_type))
    del graph.node[:]
    graph.node.extend(nodes)


def as_precision(model: onnx.ModelProto, precision: str | None) -> onnx.ModelProto:
    """``model`` as compile, plan and tune take it: as given for None, else with every float
    tensor in ``precision`` (fp16: float16 storage and arithmetic; the FCMs accumulate in fp32)."""
    if precision is None:
        return model
    if precision not in MODEL_PRECISIONS:
        raise FcmError(f"precision must be one of {', '.join(MODEL_PRECISIONS)}, not {precision!r}")
    return cast_model(model, PRECISIONS[precision])


def with_precision(model: onnx.ModelProto, precision: str) -> onnx.ModelProto:
    """``model`` in "fp32" (unchanged), "fp16" or "fp64"."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return model if precision == "fp32" else cast_model(model, PRECISIONS[precision])


def _cast_tensor(tensor: onnx.TensorProto, elem_type: int) -> onnx.TensorProto:
    from onnx import helper, numpy_helper

    if tensor.data_type not in FLOAT_TYPES or tensor.data_type == elem_type:
        return tensor
    # order="C", not np.ascontiguousarray: that makes a 0-d tensor (a Clip bound) 1-d
    array = numpy_helper.to_array(tensor).astype(helper.tensor_dtype_to_np_dtype(elem_type), order="C")
    return numpy_helper.from_array(array, tensor.name)
