"""Issue 8: odd but valid models compile correctly (fused where supported, stock otherwise);
invalid ones stop with a clear error that names the node and the reason."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper

import fcm_tvm
from fcm_tvm import FcmError
from tests.conftest import relative_error


def conv_graph(
    convs: list[dict],
    in_channels: int = 8,
    size: int = 12,
    dtype=TensorProto.FLOAT,
    outputs: int = 1,
    seed: int = 0,
) -> onnx.ModelProto:
    """A chain of Conv nodes (each a dict of out_channels/kernel/group/strides/pads/dilations) with ReLUs."""
    rng = np.random.default_rng(seed)
    nodes, initializers, current, channels = [], [], "x", in_channels
    for index, conv in enumerate(convs):
        kernel, group = conv.get("kernel", 1), conv.get("group", 1)
        out_channels = conv.get("out_channels", channels)
        weight = rng.standard_normal((out_channels, channels // group, kernel, kernel)) / np.sqrt(
            channels // group * kernel * kernel
        )
        initializers.append(numpy_helper.from_array(weight.astype(np.float32), f"w{index}"))
        attributes = {key: conv[key] for key in ("strides", "pads", "dilations") if key in conv}
        nodes.append(
            helper.make_node(
                "Conv",
                [current, f"w{index}"],
                [f"c{index}"],
                name=f"conv{index}",
                group=group,
                kernel_shape=[kernel, kernel],
                **attributes,
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{index}"], [f"r{index}"]))
        current, channels = f"r{index}", out_channels
    names = [current] + [f"c{i}" for i in range(len(convs) - 1)][: outputs - 1]
    graph = helper.make_graph(
        nodes,
        "convs",
        [helper.make_tensor_value_info("x", dtype, [1, in_channels, size, size])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in names],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


def check_against_onnxruntime(model: onnx.ModelProto, rng) -> fcm_tvm.compiler.CompiledModel:
    compiled = fcm_tvm.compile(model, target="llvm", fuse="all")
    inputs = compiled.runner().random_inputs(int(rng.integers(1 << 31)))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": inputs[0]})
    actual = compiled.run(*inputs)
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert relative_error(a, e) < 1e-4
    return compiled


DW = {"kernel": 3, "group": 8, "pads": [1, 1, 1, 1]}
PW = {"out_channels": 16}


def test_a_plain_separable_pair_is_fused(rng):
    assert check_against_onnxruntime(conv_graph([DW, PW]), rng).fused


@pytest.mark.parametrize(
    "first",
    [
        {"kernel": 3, "group": 4, "pads": [1, 1, 1, 1]},  # grouped, not depthwise
        {"kernel": 3, "group": 8, "pads": [2, 2, 2, 2], "dilations": [2, 2]},  # dilated
        {"kernel": 3, "group": 8, "out_channels": 16, "pads": [1, 1, 1, 1]},  # channel multiplier 2
        {"kernel": 4, "group": 8, "pads": [1, 1, 2, 2]},  # 4x4 kernel
    ],
    ids=["grouped", "dilated", "multiplier-2", "kernel-4"],
)
def test_unsupported_depthwise_variants_compile_stock_and_correct(first, rng):
    compiled = check_against_onnxruntime(conv_graph([first, PW]), rng)
    assert compiled.fused == []


def test_asymmetric_padding_is_fused_or_stock_but_always_correct(rng):
    check_against_onnxruntime(conv_graph([{"kernel": 3, "group": 8, "pads": [0, 1, 2, 1]}, PW]), rng)


def test_an_intermediate_that_is_also_an_output_is_not_fused_away(rng):
    check_against_onnxruntime(conv_graph([DW, PW], outputs=2), rng)


def test_int8_inputs_are_refused_clearly():
    model = conv_graph([DW, PW], dtype=TensorProto.INT8)
    with pytest.raises(FcmError):
        fcm_tvm.compile(model, target="llvm")


def as_bfloat16(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with bfloat16 input, output and weights (each weight rounded to bfloat16)."""
    import ml_dtypes

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    for index, initializer in enumerate(graph.initializer):
        bits = numpy_helper.to_array(initializer).astype(ml_dtypes.bfloat16).view(np.uint16)
        graph.initializer[index].CopyFrom(
            helper.make_tensor(initializer.name, TensorProto.BFLOAT16, bits.shape, bits.flatten().tolist())
        )
    for value in [*graph.input, *graph.output]:
        value.type.tensor_type.elem_type = TensorProto.BFLOAT16
    del graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model)


def test_bfloat16_models_are_refused_clearly_not_miscompiled():
    """TVM's importer reads a bfloat16 weight's bits as its value: refused, never silently wrong."""
    with pytest.raises(FcmError, match="weight 'w0' is bfloat16, which fcm-tvm does not support"):
        fcm_tvm.compile(as_bfloat16(conv_graph([DW, PW])), target="llvm")
    x = helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [1, 8, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [1, 8, 4, 4])
    relu = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    with pytest.raises(FcmError, match="input 'x' is bfloat16"):
        fcm_tvm.compile(helper.make_model(relu, opset_imports=[helper.make_opsetid("", 17)]), "llvm")


def test_a_huge_dimension_is_refused_or_compiled_never_crashes():
    model = conv_graph([DW, PW])
    try:
        fcm_tvm.compile(model, target="llvm", fuse="all", input_shapes={"x": (1, 8, 1 << 16, 1 << 16)})
    except FcmError as error:
        assert "\n" not in str(error)
