"""Read an ONNX model, check it up front, and import it into Relax with TVM's own importer.

Everything that can go wrong with a user's model is caught here and explained in one line
(a missing file, bytes that are not ONNX, an op TVM cannot import, a dynamic shape with no
``input_shapes``), so that nothing fails later deep inside TVM.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import helper

from .errors import ModelError

ModelLike = str | os.PathLike | bytes | onnx.ModelProto
MIN_OPSET, MAX_OPSET = 7, 23  # opsets this importer has converters for


@dataclass(frozen=True)
class TensorInfo:
    """Name, static shape and dtype of a graph input or output."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @staticmethod
    def from_json(data: dict) -> TensorInfo:
        return TensorInfo(data["name"], tuple(data["shape"]), data["dtype"])


def load_onnx(model: ModelLike) -> onnx.ModelProto:
    """The model as a checked ``ModelProto``, from a path, serialized bytes or a proto."""
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, bytes | bytearray):
        proto = _parse(bytes(model), "the given bytes")
    elif isinstance(model, str | os.PathLike):
        proto = _read_file(Path(model))
    else:
        raise ModelError(f"expected an ONNX path, bytes or onnx.ModelProto, not {type(model).__name__}")
    _check(proto)
    return proto


def _read_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        # onnx.load also reads weights stored as external data beside the file
        return onnx.load(str(path))
    except Exception as error:
        raise ModelError(f"{path}: not a readable ONNX model ({_first_line(error)})") from None


def _parse(data: bytes, origin: str) -> onnx.ModelProto:
    try:
        return onnx.load_from_string(data)
    except Exception as error:
        raise ModelError(f"{origin}: not an ONNX model ({_first_line(error)})") from None


def _check(proto: onnx.ModelProto) -> None:
    if not proto.graph.node or not proto.graph.output:
        raise ModelError("not an ONNX model: the graph has no nodes or no outputs")
    opset = onnx_opset(proto)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ModelError(f"ONNX opset {opset} is not supported (supported: {MIN_OPSET} to {MAX_OPSET})")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as error:
        raise ModelError(f"invalid ONNX model: {_first_line(error)}") from None
    except ValueError as error:  # models over 2 GiB can only be checked by path
        warnings.warn(f"ONNX checker skipped: {_first_line(error)}", stacklevel=3)
    _check_ops(proto)
    _check_no_bfloat16(proto)


def _check_no_bfloat16(proto: onnx.ModelProto) -> None:
    """Refuse bfloat16: TVM 0.27's ONNX importer reads a bfloat16 weight's bit pattern as its value
    (measured: a DW/PW pair's outputs came out near 1e10), which would be a silently wrong model."""
    graph = proto.graph
    tensors = [(f"weight '{t.name}'", t.data_type) for t in graph.initializer]
    tensors += [(f"input '{v.name}'", v.type.tensor_type.elem_type) for v in graph.input]
    tensors += [(f"output '{v.name}'", v.type.tensor_type.elem_type) for v in graph.output]
    for what, elem_type in tensors:
        if elem_type == onnx.TensorProto.BFLOAT16:
            raise ModelError(
                f"{what} is bfloat16, which fcm-tvm does not support (TVM's ONNX importer misreads "
                "bfloat16 weights); convert the model to float16 or float32"
            )


def onnx_opset(proto: onnx.ModelProto) -> int:
    """The default-domain (ai.onnx) opset the model was written for."""
    for entry in proto.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return entry.version
    return 1


def _check_ops(proto: onnx.ModelProto) -> None:
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map  # the importer's own op table

    known = set(_get_convert_map()) | {"Constant", "If"}
    for index, node in enumerate(proto.graph.node):
        if node.domain not in ("", "ai.onnx"):
            raise ModelError(
                f"node '{_node_name(node, index)}': op {node.domain}.{node.op_type} is not supported"
            )
        if node.op_type not in known:
            raise ModelError(
                f"node '{_node_name(node, index)}': op {node.op_type} is not supported by TVM's ONNX importer"
            )


def _node_name(node: onnx.NodeProto, index: int) -> str:
    return node.name or f"#{index} {node.op_type}"


def graph_inputs(
    proto: onnx.ModelProto, input_shapes: dict[str, tuple[int, ...]] | None = None
) -> list[TensorInfo]:
    """The model's real inputs (not initializers) with static shapes, applying ``input_shapes``."""
    overrides = dict(input_shapes or {})
    initializers = {tensor.name for tensor in proto.graph.initializer}
    inputs = []
    for value in proto.graph.input:
        if value.name in initializers:
            continue
        shape = overrides.pop(value.name, None) or _static_shape(value)
        inputs.append(TensorInfo(value.name, tuple(int(d) for d in shape), _dtype(value)))
    if overrides:
        names = ", ".join(info.name for info in inputs)
        raise ModelError(
            f"input_shapes names unknown input(s) {', '.join(overrides)}; the inputs are: {names}"
        )
    for info in inputs:
        if any(d <= 0 for d in info.shape):
            raise ModelError(f"input '{info.name}' has a zero-sized dimension {list(info.shape)}")
    return inputs


def _static_shape(value: onnx.ValueInfoProto) -> tuple[int, ...]:
    dims = value.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in dims]
    if any(not isinstance(d, int) or d <= 0 for d in shape):
        shown = "[" + ",".join(str(d) for d in shape) + "]"
        raise ModelError(
            f"input '{value.name}' has a dynamic shape {shown}; give a static one with "
            f"--input-shapes {value.name}:[...] (input_shapes={{'{value.name}': (...)}})"
        )
    return tuple(shape)


def _dtype(value: onnx.ValueInfoProto) -> str:
    elem_type = value.type.tensor_type.elem_type
    try:
        return str(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, ValueError):
        raise ModelError(f"input '{value.name}' has an unsupported element type {elem_type}") from None


def import_onnx(proto: onnx.ModelProto, inputs: list[TensorInfo]):
    """Import into a Relax IRModule with weights as constants (what the fusion passes match on)."""
    from tvm.relax.frontend.onnx import from_onnx

    shapes = {info.name: list(info.shape) for info in inputs}
    dtypes = {info.name: info.dtype for info in inputs}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the importer re-runs the checker and warns on its own
            return from_onnx(proto, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as error:
        raise ModelError(f"TVM's ONNX importer failed: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    # TVM errors start with a traceback header; the message is the last meaningful line
    meaningful = [line for line in lines if not line.lstrip().startswith(("File ", "Traceback", "^"))]
    return (meaningful[-1] if meaningful else type(error).__name__).strip()[:300]
