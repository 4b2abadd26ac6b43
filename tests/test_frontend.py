"""Bad models are stopped at the door with one line that names the problem."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import fcm_tvm
from fcm_tvm import FcmError, ModelError
from fcm_tvm.frontend import graph_inputs, load_onnx


def separable_block(shape=(1, 8, 16, 16), opset=17, extra_node=None) -> onnx.ModelProto:
    """x -> DW 3x3 -> ReLU -> PW 1x1 (16 channels): the smallest depthwise-separable graph."""
    rng = np.random.default_rng(0)
    channels = 8
    weights = [
        numpy_helper.from_array(rng.standard_normal((channels, 1, 3, 3)).astype(np.float32), "w_dw"),
        numpy_helper.from_array(rng.standard_normal((16, channels, 1, 1)).astype(np.float32), "w_pw"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_dw"], ["dw"], group=channels, kernel_shape=[3, 3], pads=[1] * 4),
        helper.make_node("Relu", ["dw"], ["act"]),
        helper.make_node("Conv", ["act", "w_pw"], ["y"], kernel_shape=[1, 1]),
    ]
    if extra_node is not None:
        nodes.append(extra_node)
    output = extra_node.output[0] if extra_node is not None else "y"
    graph = helper.make_graph(
        nodes,
        "separable",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [shape[0], 16, *shape[2:]])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def error_of(model, **options) -> str:
    with pytest.raises(FcmError) as error:
        fcm_tvm.compile(model, target="llvm", fuse="none", **options)
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_path_bytes_and_a_proto_are_all_accepted(tmp_path: Path):
    model = separable_block()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    for given in (model, model.SerializeToString(), path, str(path)):
        assert load_onnx(given).graph.node[0].op_type == "Conv"


def test_a_missing_file_is_named(tmp_path: Path):
    assert "no such file" in error_of(tmp_path / "absent.onnx")


def test_a_file_that_is_not_onnx_is_named(tmp_path: Path):
    path = tmp_path / "notes.onnx"
    path.write_text("these are not the weights you are looking for")
    assert "notes.onnx" in error_of(path)


def test_a_truncated_model_is_rejected(tmp_path: Path):
    data = separable_block().SerializeToString()
    path = tmp_path / "cut.onnx"
    path.write_bytes(data[: len(data) // 3])
    error_of(path)


def test_an_unknown_op_is_named_with_its_node():
    node = helper.make_node("FrobnicateTensor", ["y"], ["z"], name="frob_1")
    message = error_of(separable_block(extra_node=node))
    assert "frob_1" in message and "FrobnicateTensor" in message


def test_a_custom_domain_op_is_rejected():
    node = helper.make_node("Gelu", ["y"], ["z"], name="ms_gelu", domain="com.microsoft")
    model = separable_block(extra_node=node)
    model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    assert "com.microsoft" in error_of(model)


def test_a_dynamic_input_needs_input_shapes():
    model = separable_block(shape=("batch", 8, 16, 16))
    message = error_of(model)
    assert "dynamic" in message and "--input-shapes" in message
    compiled = fcm_tvm.compile(model, target="llvm", fuse="none", input_shapes={"x": (2, 8, 16, 16)})
    assert compiled.outputs[0].shape == (2, 16, 16, 16)


def test_input_shapes_must_name_real_inputs():
    assert "nonexistent" in error_of(separable_block(), input_shapes={"nonexistent": (1, 2)})


def test_zero_sized_dimensions_are_rejected():
    with pytest.raises(ModelError, match="zero-sized"):
        graph_inputs(separable_block(), {"x": (0, 8, 16, 16)})


def test_an_unsupported_opset_is_named():
    assert "opset 99" in error_of(separable_block(opset=99))


def test_a_wrong_type_of_model_argument_is_named():
    assert "int" in error_of(12345)
