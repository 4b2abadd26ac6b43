"""fcm_tvm.load: exported artifacts run with the TVM runtime alone, or fail with a clear reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fcm_tvm
from fcm_tvm import DeviceError, FcmError
from fcm_tvm.reference import float64_reference
from fcm_tvm.runner import device_error_summary
from fcm_tvm.runtime import register_cuda_compiler
from tests.conftest import relative_error
from tests.test_frontend import separable_block

RUNTIME_ONLY_SCRIPT = """
import sys, numpy as np, fcm_tvm
model = fcm_tvm.load(sys.argv[1], "cpu")
x = np.load(sys.argv[2])
np.save(sys.argv[3], model.run(x)[0])
assert "tvm.relax" not in sys.modules, "the runtime-only path imported the compiler"
print(model.benchmark(x, number=2, repeat=2).median_ms)
"""


@pytest.fixture(scope="module")
def cpu_artifact(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("artifact") / "block.so"
    fcm_tvm.compile(separable_block(), "llvm", fuse="none").export_library(path)
    return path


def test_an_artifact_runs_with_the_runtime_only(cpu_artifact: Path, tmp_path: Path, rng):
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    environment = {**os.environ, "TVM_USE_RUNTIME_LIB": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            RUNTIME_ONLY_SCRIPT,
            str(cpu_artifact),
            str(tmp_path / "x.npy"),
            str(tmp_path / "y.npy"),
        ],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    expected = float64_reference(separable_block(), [x])[0]
    assert relative_error(np.load(tmp_path / "y.npy"), expected) < 1e-5


def test_metadata_travels_beside_the_library(cpu_artifact: Path):
    metadata = json.loads(Path(f"{cpu_artifact}.json").read_text())
    assert metadata["inputs"] == [{"name": "x", "shape": [1, 8, 16, 16], "dtype": "float32"}]
    assert metadata["target_kind"] == "llvm" and metadata["fused"] == []


def test_wrong_inputs_are_named(cpu_artifact: Path):
    model = fcm_tvm.load(cpu_artifact, "cpu")
    with pytest.raises(FcmError, match="input 'x' must be float32"):
        model.run(np.zeros((1, 8, 15, 16), np.float32))
    with pytest.raises(FcmError, match="takes 1 input"):
        model.run()


def test_a_file_that_is_not_a_library_is_rejected(tmp_path: Path, cpu_artifact: Path):
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"not an ELF file")
    Path(f"{fake}.json").write_text(Path(f"{cpu_artifact}.json").read_text())
    with pytest.raises(FcmError, match="not a loadable TVM library"):
        fcm_tvm.load(fake, "cpu")


def test_a_library_without_metadata_is_rejected(tmp_path: Path, cpu_artifact: Path):
    bare = tmp_path / "bare.so"
    bare.write_bytes(cpu_artifact.read_bytes())
    with pytest.raises(FcmError, match="bare.so.json: missing"):
        fcm_tvm.load(bare, "cpu")


def test_a_cpu_artifact_cannot_be_sent_to_the_gpu_and_no_gpu_is_reported(cpu_artifact: Path):
    with pytest.raises(DeviceError):
        fcm_tvm.load(cpu_artifact, "cuda")


def test_an_unknown_device_or_compiler_is_named(cpu_artifact: Path):
    with pytest.raises(FcmError, match="unknown device 'tpu'"):
        fcm_tvm.load(cpu_artifact, "tpu")
    with pytest.raises(DeviceError, match="unknown CUDA compiler 'clang'"):
        register_cuda_compiler("sm_90", "clang")


def test_a_kernel_launch_failure_names_the_cuda_error_not_the_source():
    """TVM appends the module's whole CUDA source to a launch failure; the message keeps the cause."""
    tvm_message = (
        "InternalError: CUDALaunch Error: CUDA_ERROR_INVALID_VALUE\n grid=(64,1,1),  block=(4096,1,1)\n"
        "// func_name=relu_kernel\n// CUDA Source\n// -----------\n"
        'extern "C" __global__ void relu_kernel(float* x) {\n  x[0] = 0.f;\n}\n'
    )
    summary = device_error_summary(RuntimeError(tvm_message))
    assert summary == (
        "InternalError: CUDALaunch Error: CUDA_ERROR_INVALID_VALUE grid=(64,1,1),  block=(4096,1,1) "
        "in kernel relu_kernel"
    )
    oom = "Traceback...\nCUDA Runtime Error: cudaErrorMemoryAllocation (2): out of memory\n  at alloc.cc:12"
    assert device_error_summary(RuntimeError(oom)).endswith("out of memory")
    assert device_error_summary(ValueError("a\nlast line")) == "last line"


@pytest.mark.gpu
def test_a_cuda_artifact_matches_the_float64_reference_on_the_gpu(tmp_path: Path, rng):
    model = separable_block()
    path = fcm_tvm.compile(model, "cuda", fuse="none").export_library(tmp_path / "gpu.so")
    loaded = fcm_tvm.load(path, "cuda")
    for _ in range(3):
        x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
        assert relative_error(loaded.run(x)[0], float64_reference(model, [x])[0]) < 1e-5
