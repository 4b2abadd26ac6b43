"""fcm_tvm.compile on a real depthwise-separable network: CPU numerics, CUDA code that nvcc accepts."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import fcm_tvm
from fcm_tvm.models import build_model
from tests.conftest import relative_error

RESOLUTION = 96  # a real MobileNetV2, at a resolution that keeps CPU tests quick


@pytest.fixture(scope="module")
def mobilenet_v2():
    return build_model("mobilenet_v2", batch=1, resolution=RESOLUTION)


def onnxruntime_outputs(model, inputs: list[np.ndarray]) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [value.name for value in session.get_inputs()]
    return session.run(None, dict(zip(names, inputs)))


@pytest.mark.parametrize("fuse", ["none", "all"])
def test_llvm_build_matches_onnxruntime(mobilenet_v2, fuse, rng):
    compiled = fcm_tvm.compile(mobilenet_v2, target="llvm", fuse=fuse)
    if fuse == "all":
        assert compiled.fused, "MobileNetV2 has DW/PW chains to fuse"
    for _ in range(2):  # fresh inputs each time
        inputs = compiled.runner().random_inputs(int(rng.integers(1 << 31)))
        actual = compiled.run(*inputs)
        expected = onnxruntime_outputs(mobilenet_v2, inputs)
        assert relative_error(actual[0], expected[0]) < 1e-4


def test_cuda_build_generates_code_that_nvcc_compiles(mobilenet_v2, nvcc: str, tmp_path: Path):
    compiled = fcm_tvm.compile(mobilenet_v2, target="h100", fuse="none")
    source = tmp_path / "mobilenet_v2.cu"
    source.write_text(compiled.cuda_source())
    result = subprocess.run(
        [nvcc, "--cubin", "-arch=sm_90", "-o", str(tmp_path / "m.cubin"), str(source)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "m.cubin").stat().st_size > 0
    library = compiled.export_library(tmp_path / "mobilenet_v2.so")
    assert library.stat().st_size > 0


def vm_calls_per_function(executable) -> dict[str, list[str]]:
    """What each Relax VM function of ``executable`` calls, in order (from its text form)."""
    calls: dict[str, list[str]] = {}
    for line in executable.as_text().splitlines():
        if line.startswith("@") and line.endswith(":"):
            current = calls.setdefault(line[1:-1], [])
        elif line.strip().startswith("call "):
            current.append(line.split()[1])
    return calls


@pytest.mark.parametrize("fuse", ["none", "all"])
def test_cuda_graph_captures_every_kernel_between_the_first_and_the_last(mobilenet_v2, fuse):
    compiled = fcm_tvm.compile(mobilenet_v2, target="h100", fuse=fuse, cuda_graph=True)
    calls = vm_calls_per_function(compiled.executable)
    kernels = {name: [c for c in called if not c.startswith("vm.")] for name, called in calls.items()}
    assert "vm.builtin.cuda_graph.run_or_capture" in calls["main"]
    # the first conv reads the input and the classifier writes the output: both stay outside
    assert len(kernels["main"]) == 2
    assert len(kernels["main_cuda_graph_capture"]) > 10
    without = vm_calls_per_function(fcm_tvm.compile(mobilenet_v2, target="h100", fuse=fuse).executable)
    assert not any("cuda_graph" in name for name in without)
    assert sorted(kernels["main"] + kernels["main_cuda_graph_capture"]) == sorted(
        c for c in without["main"] if not c.startswith("vm.")
    )


def test_compiled_model_reports_its_signature(mobilenet_v2):
    compiled = fcm_tvm.compile(mobilenet_v2, target="llvm", fuse="none")
    assert compiled.inputs[0].shape == (1, 3, RESOLUTION, RESOLUTION)
    assert compiled.outputs[0].shape == (1, 1000)
    assert compiled.metadata()["fused"] == []


def test_a_float16_model_with_batchnorm_builds_and_runs_in_float16(rng):
    """TVM lowers a float16 BatchNormalization to float32 arithmetic; with_precision casts back."""
    from fcm_tvm.precision import with_precision
    from fcm_tvm.reference import float64_reference

    model = with_precision(build_model("mobilenet_v2", resolution=64), "fp16")
    runner = fcm_tvm.compile(model, "llvm").runner()
    inputs = [rng.standard_normal((1, 3, 64, 64)).astype(np.float16)]
    (output,) = runner.run(*inputs)
    assert output.dtype == np.float16
    assert relative_error(output, float64_reference(model, inputs)[0]) < 0.1  # fp16 accumulation on CPU


def test_precision_fp16_compiles_a_float32_model_in_float16(rng):
    """``precision="fp16"`` casts the model as the benchmarks do: float16 in, weights and out."""
    from fcm_tvm.reference import float64_reference
    from tests.test_frontend import separable_block

    model = separable_block()
    compiled = fcm_tvm.compile(model, "llvm", fuse="all", precision="fp16")
    assert compiled.inputs[0].dtype == "float16" and [chain.kind for chain in compiled.fused] == ["dw_pw"]
    inputs = [rng.standard_normal(compiled.inputs[0].shape).astype(np.float16)]
    (output,) = compiled.run(*inputs)
    assert output.dtype == np.float16
    assert relative_error(output, float64_reference(model, inputs)[0]) < 5e-3


def test_an_unknown_precision_is_refused_by_name():
    from fcm_tvm.errors import FcmError
    from tests.test_frontend import separable_block

    with pytest.raises(FcmError, match="precision must be one of fp32, fp16, not 'bf16'"):
        fcm_tvm.compile(separable_block(), "llvm", precision="bf16")


def test_the_precisions_name_onnxs_own_element_types():
    """fcm_tvm.precision spells ONNX's type numbers out, so that the command line starts without onnx."""
    import onnx

    from fcm_tvm import precision

    assert precision.PRECISIONS == {
        "fp32": onnx.TensorProto.FLOAT,
        "fp16": onnx.TensorProto.FLOAT16,
        "fp64": onnx.TensorProto.DOUBLE,
    }
    assert precision.BFLOAT16 == onnx.TensorProto.BFLOAT16
