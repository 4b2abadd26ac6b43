"""FuseSqueezeExcite on what TVM's ONNX importer emits: which squeeze-excitations it rewrites (all of
EfficientNet-B0's and MobileNetV3-Large's), what it leaves alone, and that the rewritten model
computes what the ONNX model computes (llvm, float64 reference, fresh random inputs)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import tvm
from tvm.relax.frontend.onnx import from_onnx

import fcm_tvm
from fcm_tvm.models import build_model
from fcm_tvm.models.graph import GraphBuilder
from fcm_tvm.precision import with_precision
from fcm_tvm.reference import float64_reference
from fcm_tvm.relay_passes import EXCITE_ATTR, FuseSqueezeExcite
from tests.conftest import relative_error

SM90 = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})


def se_model(act: str = "silu", gate: str = "sigmoid", extra_output: bool = False) -> onnx.ModelProto:
    """x (1, 24, 10, 10) -> squeeze-excitation (squeeze 6) -> output; ``extra_output``: the model
    also returns the means (which the kernel computes, so that another reader needs stock's)."""
    b = GraphBuilder()
    x = b.input((1, 24, 10, 10), name="x")
    y = b.squeeze_excite(x, 6, act=act, gate=gate)
    model = b.finish(y, output_name="y")
    if extra_output:
        mean_output = next(node.output[0] for node in model.graph.node if node.op_type == "GlobalAveragePool")
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(mean_output, onnx.TensorProto.FLOAT, None)
        )
    return model


def excite_records(mod: tvm.IRModule) -> list[dict]:
    return [
        json.loads(str(func.attrs[EXCITE_ATTR]))
        for _, func in mod.functions_items()
        if func.attrs is not None and EXCITE_ATTR in func.attrs
    ]


def rewritten(model: onnx.ModelProto, target=SM90) -> tvm.IRModule:
    return FuseSqueezeExcite(target)(from_onnx(model, keep_params_in_input=False))


@pytest.mark.parametrize(
    ("name", "steps", "kernels", "gate"),
    [("efficientnet_b0", 16, 10, "sigmoid"), ("mobilenet_v3_large", 8, 6, "hardsigmoid")],
)
def test_every_excite_step_of_the_headline_se_models_becomes_one_kernel_call(
    name, steps, kernels, gate
) -> None:
    mod = rewritten(with_precision(build_model(name), "fp16"))
    records = excite_records(mod)
    assert sum(record["calls"] for record in records) == steps
    assert len(records) == kernels  # equal steps share a kernel
    assert {(r["gate"], r["dtype"]) for r in records} == {(gate, "float16")}
    text = mod.script()
    assert text.count("R.mean(") == 1  # the kernels compute the means: only the classifier's pool stays
    assert text.count("R.call_tir(cls.fcm_se_") == steps


@pytest.mark.parametrize(("act", "gate"), [("silu", "sigmoid"), ("relu", "hardsigmoid")])
def test_the_rewritten_model_matches_float64_on_llvm(act, gate, rng) -> None:
    model = se_model(act, gate)
    mod = rewritten(model, tvm.target.Target("llvm"))
    assert [(r["activation"], r["gate"]) for r in excite_records(mod)] == [(act, gate)]
    x = rng.standard_normal((1, 24, 10, 10)).astype(np.float32)
    with tvm.target.Target("llvm"):
        vm = tvm.relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    actual = vm["main"](tvm.runtime.tensor(x)).numpy()
    assert relative_error(actual, float64_reference(model, [x])[0]) < 1e-5


def test_compile_reports_the_kernel_and_computes_the_same_with_and_without_it(rng) -> None:
    model = se_model()
    x = rng.standard_normal((1, 24, 10, 10)).astype(np.float32)
    fused = fcm_tvm.compile(model, "llvm")
    assert [chain.kind for chain in fused.fused] == ["se"]
    assert fcm_tvm.compile(model, "llvm", fuse="none").fused == []
    assert relative_error(fused.run(x)[0], float64_reference(model, [x])[0]) < 1e-5


def test_means_read_elsewhere_leave_the_block_to_stock() -> None:
    mod = rewritten(se_model(extra_output=True))
    assert excite_records(mod) == []
    assert mod.script().count("R.mean(") == 1


def test_a_hidden_vector_read_elsewhere_leaves_the_step_to_stock() -> None:
    model = se_model()
    hidden = next(node for node in model.graph.node if node.op_type == "Mul" and "Sigmoid" in node.input[1])
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(hidden.output[0], onnx.TensorProto.FLOAT, None)
    )
    assert excite_records(rewritten(model)) == []


def test_a_mean_over_one_axis_is_no_squeeze_excitation() -> None:
    model = se_model()
    pool = next(node for node in model.graph.node if node.op_type == "GlobalAveragePool")
    pool.op_type = "ReduceMean"  # opset 17: axes as an attribute
    pool.attribute.extend(
        [onnx.helper.make_attribute("axes", [3]), onnx.helper.make_attribute("keepdims", 1)]
    )
    assert excite_records(rewritten(model)) == []


def test_the_plan_counts_the_excite_steps_the_build_will_fuse() -> None:
    se_plan = fcm_tvm.plan(build_model("mobilenet_v3_large"), "h100")
    assert (
        "squeeze-excitation: 8 blocks, means included, become one kernel call each (6 distinct kernels"
        in se_plan.table()
    )
    assert [step["gate"] for step in se_plan.to_json()["excites"]] == ["hardsigmoid"] * 8
    plain = fcm_tvm.plan(build_model("mobilenet_v2"), "h100")
    assert "squeeze-excitation" not in plain.table() and plain.to_json()["excites"] == []
