"""The fcm-tvm command line, driven as a shell user would: a subprocess, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

import fcm_tvm as fcm_tvm_package
from fcm_tvm.cli import parse_input_shapes
from tests.test_frontend import separable_block


def fcm_tvm(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fcm_tvm.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "tiny.onnx"
    onnx.save(separable_block(), str(path))
    return path


@pytest.mark.parametrize("command", [[], ["compile"], ["run"], ["plan"], ["models"], ["tune"], ["bench"]])
def test_help_explains_every_command(command):
    result = fcm_tvm(*command, "--help")
    assert result.returncode == 0
    assert "usage: fcm-tvm" in result.stdout and "-h, --help" in result.stdout


def test_compile_then_run_on_the_cpu(tiny_model: Path, tmp_path: Path):
    library = tmp_path / "tiny.so"
    compiled = fcm_tvm("compile", str(tiny_model), "--target", "llvm", "--fuse", "none", "-o", str(library))
    assert compiled.returncode == 0, compiled.stderr
    assert library.is_file() and Path(f"{library}.json").is_file()
    assert "[fcm-tvm] compiling" in compiled.stderr  # progress goes to stderr
    ran = fcm_tvm(
        "run", str(library), "--device", "cpu", "--repeat", "2", "--outputs", str(tmp_path / "o.npz")
    )
    assert ran.returncode == 0, ran.stderr
    assert "output 0: shape [1, 16, 16, 16]" in ran.stdout and "latency (ms)" in ran.stdout
    assert (tmp_path / "o.npz").is_file()
    by_default = fcm_tvm("run", str(library), "--repeat", "0")  # a CPU library runs on the CPU
    assert by_default.returncode == 0, by_default.stderr
    assert "on cpu:0" in by_default.stderr and "output 0: shape [1, 16, 16, 16]" in by_default.stdout


def test_compile_for_cuda_dumps_the_cuda_source(tiny_model: Path, tmp_path: Path):
    library = tmp_path / "tiny_cuda.so"
    result = fcm_tvm(
        "compile",
        str(tiny_model),
        "--target",
        "h100",
        "--fuse",
        "none",
        "-o",
        str(library),
        "--dump-code",
        "cuda",
    )
    assert result.returncode == 0, result.stderr
    assert "__global__" in library.with_suffix(".cu").read_text()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["compile", "missing.onnx"], "no such file"),
        (["compile", "{model}", "--target", "tpu9"], "unknown target 'tpu9'"),
        (["compile", "{model}", "--input-shapes", "x:[1,8"], "cannot parse --input-shapes"),
        (["run", "missing.so"], "no such file"),
        (["compile", "{model}", "--batch", "8"], "--batch applies to zoo models"),
        (["plan", "mobilenet_v2", "--batch", "0"], "batch must be a positive integer, not 0"),
        (
            [
                "compile",
                "mobilenet_v2",
                "--target",
                "h200",
                "--batch",
                "8",
                "--precision",
                "fp16",
                "--tuning-records",
                "shipped",
            ],
            "no tuning records ship for mobilenet_v2 (batch 8, fp16) on h200",
        ),
    ],
)
def test_user_errors_are_one_line_and_exit_1(args, expected, tiny_model: Path):
    result = fcm_tvm(*[arg.format(model=tiny_model) for arg in args])
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("fcm-tvm: error:")
    assert expected in result.stderr and "Traceback" not in result.stderr


def test_a_file_that_is_not_onnx_fails_cleanly(tmp_path: Path):
    bogus = tmp_path / "model.onnx"
    bogus.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    result = fcm_tvm("compile", str(bogus))
    assert result.returncode == 1 and "Traceback" not in result.stderr


def test_a_misspelt_flag_is_a_usage_error():
    result = fcm_tvm("compile", "--targett", "cuda")
    assert result.returncode == 2 and "usage:" in result.stderr


def test_input_shapes_follow_tvmc_syntax():
    assert parse_input_shapes("input:[1,3,224,224]") == {"input": (1, 3, 224, 224)}
    assert parse_input_shapes("a:[1,2] b:[3]") == {"a": (1, 2), "b": (3,)}
    assert parse_input_shapes("input:0:[1, 3, 8, 8]") == {"input:0": (1, 3, 8, 8)}


def test_tune_exposes_its_trial_bounds_focus_and_budgets():
    result = fcm_tvm("tune", "--help")
    for flag in ("--trials ", "--trials-per-task", "--focus", "--time-budget", "--run-timeout"):
        assert flag in result.stdout


def test_plan_accepts_a_zoo_model_name_and_prints_a_total(tmp_path: Path):
    result = fcm_tvm("plan", "mobilenet_v2", "--gpu", "h100", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "FusePlanner on h100" in result.stdout and "\ntotal " in result.stdout
    assert "\nthe rewrite fuses " in result.stdout  # what the build then fuses, sub-chains included


def test_plan_writes_its_decisions_as_json(tmp_path: Path):
    result = fcm_tvm("plan", "mobilenet_v2", "--gpu", "h100", "--json", "plan.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["gpu"] == "h100" and len(written["chains"]) == written["totals"]["chains"] == 17
    assert sum(chain["fuse"] for chain in written["chains"]) == written["totals"]["fused"] > 0
    assert all(chain["fuse"] for chain in written["rewrite"])
    assert len(written["rewrite"]) >= written["totals"]["fused"]


def test_plan_takes_a_zoo_models_batch_and_precision_and_plans_on_that_gpus_own_chain_times(tmp_path: Path):
    args = ["--gpu", "h200", "--batch", "32", "--precision", "fp16", "--json", "plan.json"]
    result = fcm_tvm("plan", "mobilenet_v2", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "plan.json").read_text())
    first = written["chains"][0]
    assert first["dtype"] == "float16" and first["input"][0] == 32
    assert written["measured_on"] == ["h200", "h100"]
    h200_row = next(  # the H200's own time for this chain, not the H100's
        row
        for row in json.loads(
            (Path(fcm_tvm_package.__file__).parent / "data/measured/h200.json").read_text()
        )["chains"]
        if row["key"] == "32x32x112x112 dw3s1p1111:relu6 pw16:none float16"
    )
    assert first["fuse"] and first["fused"]["time_us"] == pytest.approx(h200_row["fcm_us"])


def test_compile_finds_the_records_shipped_for_its_batch_and_precision():
    from fcm_tvm.cli import _shipped_records_for, build_parser

    args = build_parser().parse_args(
        [
            "compile",
            "mobilenet_v2",
            "--target",
            "h200",
            "--batch",
            "32",
            "--precision",
            "fp16",
            "--tuning-records",
            "shipped",
        ]
    )
    assert _shipped_records_for(args).name == "mobilenet_v2_b32_fp16_stock"
    args = build_parser().parse_args(
        ["compile", "mobilenet_v2", "--target", "h100", "--tuning-records", "shipped"]
    )
    assert _shipped_records_for(args).name == "mobilenet_v2_b1_fp32_stock"


def test_tune_starts_from_the_shipped_records_of_its_case_where_asked():
    result = fcm_tvm(
        "tune",
        "mobilenet_v2",
        "--target",
        "h100",
        "--precision",
        "fp16",
        "--fuse",
        "none",
        "--start-from",
        "shipped",
    )
    assert "starting from the shipped tuning records" in result.stderr
    assert "mobilenet_v2_b1_fp16_stock" in result.stderr
    unshipped = fcm_tvm("tune", "mobilenet_v2", "--target", "h100", "--batch", "8", "--start-from", "shipped")
    assert (
        unshipped.returncode == 1
        and "no tuning records ship for mobilenet_v2 (batch 8, fp32)" in unshipped.stderr
    )


def test_plan_with_cuda_graph_decides_on_times_without_the_stock_launches(tmp_path: Path):
    reasons = {  # MobileNetV1 was profiled with ncu, MobileNetV2 timed inside a graph as well
        ("mobilenet_v1",): "measured against stock (GPU time)",
        ("mobilenet_v2", "--tuned"): "measured against tuned stock (in a CUDA graph)",
    }
    for (model, *flags), reason in reasons.items():
        result = fcm_tvm("plan", model, "--gpu", "h100", *flags, "--cuda-graph", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert reason in result.stdout


def test_models_exports_a_zoo_model_in_fp16(tmp_path: Path):
    result = fcm_tvm(
        "models", "mobilenet_v2", "--batch", "2", "--precision", "fp16", "-o", "m.onnx", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    (given,) = graph.input
    assert given.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert given.type.tensor_type.shape.dim[0].dim_value == 2
    assert {tensor.data_type for tensor in graph.initializer} <= {
        onnx.TensorProto.FLOAT16,
        onnx.TensorProto.INT64,
    }
