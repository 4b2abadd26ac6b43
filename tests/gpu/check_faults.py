"""Faults on the GPU give clear errors (issue 8): run on the GPU host with the runtime only.

    python tests/gpu/check_faults.py build DIR    # here: the faulty artifacts below
    python tests/gpu/check_faults.py run DIR      # GPU host: expects a DeviceError, not a crash

Prints one line per check, ``PASS`` or ``FAIL``, and exits 1 on any FAIL.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

SHAPE = (64, 8, 512, 512)  # 0.5 GB in and out; 4096 channels in between: 275 GB
RELU_SHAPE = (1, 64, 64, 64)
# A target that claims 4096 threads per block: TVM schedules the kernel for it, nvcc compiles it,
# and the driver refuses the launch (the limit is 1024) -- a real kernel launch failure.
LYING_TARGET = {"kind": "cuda", "arch": "sm_90", "max_threads_per_block": 4096, "max_num_threads": 4096}


def build(folder: Path) -> None:
    import onnx
    from onnx import helper, numpy_helper

    import fcm_tvm

    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.standard_normal((4096, 8, 1, 1)).astype(np.float32), "w_up"),
        numpy_helper.from_array(rng.standard_normal((8, 4096, 1, 1)).astype(np.float32), "w_down"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w_up"], ["up"]),
        helper.make_node("Relu", ["up"], ["act"]),
        helper.make_node("Conv", ["act", "w_down"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "huge_intermediate",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, SHAPE)],
        weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folder.mkdir(parents=True, exist_ok=True)
    fcm_tvm.compile(model, "h100", fuse="none").export_library(folder / "huge.so")
    fcm_tvm.compile(relu_model(), LYING_TARGET, fuse="none").export_library(folder / "launch.so")
    fcm_tvm.compile(relu_model(), "h100", fuse="none").export_library(folder / "relu.so")
    (folder / "not_a_library.so").write_bytes(b"\x7fELF but not really")


def relu_model():
    import onnx
    from onnx import helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, RELU_SHAPE)
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, RELU_SHAPE)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def without_nvcc() -> dict:
    """The environment of a runtime host with no CUDA toolkit: no nvcc on PATH or in CUDA_HOME."""
    import os

    path = [p for p in os.environ.get("PATH", "").split(":") if not (Path(p) / "nvcc").exists()]
    return {"PATH": ":".join(path), "CUDA_HOME": "/nonexistent-cuda"}


def run(folder: Path) -> int:
    import fcm_tvm
    from fcm_tvm.errors import FcmError

    results = []

    def expect_error(label: str, action, words: str) -> None:
        try:
            action()
        except FcmError as error:
            ok = words in str(error).lower()
            results.append(ok)
            print(f"{'PASS' if ok else 'FAIL'} {label}: {type(error).__name__}: {error}")
        except Exception as error:  # anything else is a crash the user would not understand
            results.append(False)
            print(f"FAIL {label}: unexpected {type(error).__name__}: {error}")
        else:
            results.append(False)
            print(f"FAIL {label}: no error")

    model = fcm_tvm.load(folder / "huge.so", "cuda")
    x = np.zeros(SHAPE, np.float32)
    expect_error("out of device memory", lambda: model.run(x), "memory")
    expect_error("a file that is no library", lambda: fcm_tvm.load(folder / "not_a_library.so"), "not")
    relu_input = np.random.default_rng().standard_normal(RELU_SHAPE).astype(np.float32)
    launch = fcm_tvm.load(folder / "launch.so", "cuda")
    expect_error("a kernel launch failure", lambda: launch.run(relu_input), "cuda_error_invalid_value")
    relu = fcm_tvm.load(folder / "relu.so", "cuda")  # the context survives a refused launch
    output = relu.run(relu_input)[0]
    ok = bool(np.array_equal(output, np.maximum(relu_input, 0)))
    results.append(ok)
    print(f"{'PASS' if ok else 'FAIL'} a correct model still runs after the refused launch")
    with patched_environment(without_nvcc()):
        expect_error(
            "no nvcc on the runtime host", lambda: fcm_tvm.load(folder / "relu.so", compiler="nvcc"), "nvcc"
        )
    return 0 if all(results) else 1


@contextlib.contextmanager
def patched_environment(values: dict):
    import os

    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


if __name__ == "__main__":
    command, folder = sys.argv[1], Path(sys.argv[2])
    if command == "build":
        build(folder)
        sys.exit(0)
    sys.exit(run(folder))
