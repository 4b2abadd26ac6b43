"""Shipped tuning records: found by (GPU, model, batch, precision, graph), used by bench and compile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from fcm_tvm import cli, records
from fcm_tvm.benchmarks import end_to_end
from fcm_tvm.errors import FcmError


def fake_database(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / records.WORKLOADS).write_text("")
    (folder / records.DATABASE).write_text("")
    return folder


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch) -> Path:
    """An empty shipped-records folder in place of fcm_tvm/data/tuning."""
    root = tmp_path / "tuning"
    root.mkdir()
    monkeypatch.setattr(records, "shipped_root", lambda: root)
    return root


def test_the_package_data_folder_is_where_records_ship():
    assert records.shipped_root().parts[-3:] == ("fcm_tvm", "data", "tuning")


def test_work_directories_are_named_by_model_batch_precision_and_graph():
    assert records.record_name("mobilenet_v2", 1, "fp32", "none") == "mobilenet_v2_b1_fp32_stock"
    assert records.record_name("efficientnet_b0", 32, "fp16", "auto") == "efficientnet_b0_b32_fp16_fcm"
    assert records.record_name("efficientnet_b0", 32, "fp16", "all") == "efficientnet_b0_b32_fp16_fcm"


def test_shipped_records_are_looked_up_per_gpu_and_case(shipped: Path):
    stock = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "none") == stock
    assert records.shipped_records("a100", "mobilenet_v2", 1, "fp32", "none") is None
    assert records.shipped_records("h100", "mobilenet_v2", 32, "fp32", "none") is None
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp16", "none") is None
    assert records.shipped_records("h100", "efficientnet_b0", 1, "fp32", "none") is None
    assert records.shipped_cases("h100") == ["mobilenet_v2_b1_fp32_stock"]
    assert records.shipped_cases("a100") == []


def test_the_fused_graph_uses_its_own_records_else_the_stock_graphs(shipped: Path):
    stock = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "auto") == stock
    fused = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_fcm")
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "auto") == fused
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "none") == stock


def test_a_folder_without_both_database_files_is_not_a_database(shipped: Path):
    half = shipped / "h100" / "mobilenet_v2_b1_fp32_stock"
    half.mkdir(parents=True)
    (half / records.DATABASE).write_text("")
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "none") is None
    assert records.shipped_cases("h100") == []


def test_an_h200_uses_the_h100s_records_where_it_has_none_of_its_own(shipped: Path):
    h100 = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    assert records.shipped_records("h200", "mobilenet_v2", 1, "fp32", "auto") == h100
    assert records.shipped_cases("h200") == ["h100/mobilenet_v2_b1_fp32_stock"]
    h200 = fake_database(shipped / "h200" / "mobilenet_v2_b1_fp32_stock")
    assert records.shipped_records("h200", "mobilenet_v2", 1, "fp32", "auto") == h200
    assert records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "auto") == h100  # never the other way
    assert records.shipped_records("a100", "mobilenet_v2", 1, "fp32", "auto") is None


def test_an_h200_borrows_case_by_case(shipped: Path):
    own_fp16 = fake_database(shipped / "h200" / "mobilenet_v2_b1_fp16_stock")
    h100_fp32 = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    assert records.shipped_records("h200", "mobilenet_v2", 1, "fp16", "none") == own_fp16
    assert records.shipped_records("h200", "mobilenet_v2", 1, "fp32", "none") == h100_fp32
    assert records.shipped_cases("h200") == ["h100/mobilenet_v2_b1_fp32_stock", "mobilenet_v2_b1_fp16_stock"]


class CompileSpy:
    """Stands in for fcm_tvm.compile: notes the records it was given, then fails the build."""

    def __init__(self) -> None:
        self.records: list = []

    def __call__(self, model, target, **options):
        self.records.append(options.get("tuning_records"))
        raise FcmError("stopped by the test")


@pytest.fixture
def compile_spy(monkeypatch) -> CompileSpy:
    spy = CompileSpy()
    monkeypatch.setattr("fcm_tvm.compiler.compile", spy)
    return spy


def test_bench_falls_back_to_the_records_shipped_for_the_targets_gpu(shipped, compile_spy, tmp_path):
    stock = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    rows = end_to_end.bench(
        ["mobilenet_v2"], ["stock-tuned", "fcm-tuned"], [1], ["fp32"], "h100", None, tmp_path, energy=False
    )
    assert compile_spy.records == [stock, stock]
    assert [row["status"] for row in rows] == ["failed: stopped by the test"] * 2


def test_bench_on_an_h200_uses_its_own_records_then_the_h100s_and_says_which(shipped, compile_spy, tmp_path):
    h100 = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    h200 = fake_database(shipped / "h200" / "mobilenet_v2_b1_fp16_stock")
    rows = end_to_end.bench(
        ["mobilenet_v2"], ["stock-tuned"], [1], ["fp32", "fp16"], "h200", None, tmp_path, energy=False
    )
    assert compile_spy.records == [h100, h200]
    assert [row["tuning_records"] for row in rows] == [str(h100), str(h200)]
    context = json.loads((tmp_path / "bench.json").read_text())["context"]
    assert context["gpu"] == "h200"
    assert context["tuning_records"] == [str(shipped / "h200"), str(shipped / "h100")]


def test_bench_on_an_h100_borrows_the_h200s_fp16_records_and_names_the_card_it_ran_on(
    shipped, compile_spy, tmp_path, monkeypatch
):
    h100 = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    h200 = fake_database(shipped / "h200" / "mobilenet_v2_b1_fp16_stock")
    card = SimpleNamespace(device_name="NVIDIA H100 80GB HBM3")
    monkeypatch.setattr("fcm_tvm.target.local_cuda_device", lambda: card)
    end_to_end.bench(
        ["mobilenet_v2"], ["stock-tuned"], [1], ["fp32", "fp16"], "h200", None, tmp_path, energy=False
    )
    assert compile_spy.records == [h100, h200]  # planned for the H200, run on an H100: both said
    context = json.loads((tmp_path / "bench.json").read_text())["context"]
    assert context["gpu"] == "h200" and context["device"] == "NVIDIA H100 80GB HBM3"
    compile_spy.records.clear()
    end_to_end.bench(["mobilenet_v2"], ["stock-tuned"], [1], ["fp16"], "h100", None, tmp_path, energy=False)
    assert compile_spy.records == [h200]  # the H100 has no fp16 records of its own


def test_bench_without_shipped_records_reports_the_tuned_variants_as_missing(shipped, compile_spy, tmp_path):
    fake_database(shipped / "a100" / "mobilenet_v2_b1_fp32_stock")  # another GPU's
    rows = end_to_end.bench(
        ["mobilenet_v2"], ["stock-tuned"], [1], ["fp32"], "h100", None, tmp_path, energy=False
    )
    assert compile_spy.records == []
    assert rows[0]["status"].startswith("no tuning records")


def test_bench_prefers_the_records_it_is_given(shipped, compile_spy, tmp_path):
    fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    given = fake_database(tmp_path / "mine" / "mobilenet_v2_b1_fp32_stock")
    end_to_end.bench(
        ["mobilenet_v2"], ["stock-tuned"], [1], ["fp32"], "h100", tmp_path / "mine", tmp_path, energy=False
    )
    assert compile_spy.records == [given]


def test_compile_with_shipped_records_applies_the_zoo_models_folder(shipped, compile_spy, tmp_path, capsys):
    stock = fake_database(shipped / "h100" / "mobilenet_v2_b1_fp32_stock")
    args = ["compile", "mobilenet_v2", "--target", "h100", "--tuning-records", "shipped"]
    assert cli.main([*args, "--fuse", "none", "-o", str(tmp_path / "m.so")]) == cli.EXIT_ERROR
    assert compile_spy.records == [stock]
    assert "fcm-tvm: error: stopped by the test" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("model", "target", "expected"),
    [
        (
            "mobilenet_v2",
            "h100",
            "no tuning records ship for mobilenet_v2 (batch 1, fp32) on h100; shipped: ",
        ),
        ("mobilenet_v2", "llvm", "records ship for GPUs only"),
        ("not_a_zoo_model.onnx", "h100", "needs a zoo model name"),
    ],
)
def test_compile_with_shipped_records_explains_what_is_missing(
    model, target, expected, shipped, compile_spy, capsys
):
    fake_database(shipped / "h100" / "efficientnet_b0_b1_fp32_stock")
    assert cli.main(["compile", model, "--target", target, "--tuning-records", "shipped"]) == cli.EXIT_ERROR
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("fcm-tvm: error:") and expected in error
    assert compile_spy.records == []
    if target == "h100" and model == "mobilenet_v2":
        assert error.endswith("shipped: efficientnet_b0_b1_fp32_stock")


def measured_database(folder: Path) -> Path:
    """A work directory with two workloads, the second measured twice."""
    folder.mkdir(parents=True)
    (folder / records.WORKLOADS).write_text('["w0"]\n["w1"]\n')
    lines = [[0, [["t0"], [2e-6]]], [1, [["slow"], [9e-6]]], [1, [["fast"], [3e-6]]]]
    (folder / records.DATABASE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_packed_records_ship_pruned_and_are_unpacked_into_the_cache(
    shipped: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setenv("FCM_TVM_CACHE", str(tmp_path / "cache"))
    source = measured_database(tmp_path / "work")
    case = shipped / "h100" / "mobilenet_v2_b1_fp32_stock"
    assert records.pack_database(source, case) == 2
    assert sorted(path.name for path in case.iterdir()) == [
        "database_tuning_record.json.xz",
        "database_workload.json.xz",
    ]
    assert records.shipped_cases("h100") == ["mobilenet_v2_b1_fp32_stock"]
    folder = records.shipped_records("h100", "mobilenet_v2", 1, "fp32", "auto")
    assert folder == tmp_path / "cache" / "tuning" / "h100" / "mobilenet_v2_b1_fp32_stock"
    records.prune_database(source, tmp_path / "pruned")
    for name in (records.DATABASE, records.WORKLOADS):
        assert (folder / name).read_text() == (tmp_path / "pruned" / name).read_text()


def test_a_newer_packed_file_replaces_the_cached_copy(shipped: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FCM_TVM_CACHE", str(tmp_path / "cache"))
    case = shipped / "h100" / "mnasnet1_0_b1_fp32_stock"
    records.pack_database(measured_database(tmp_path / "work"), case)
    cached = records.unpacked(case) / records.DATABASE
    cached.write_text("stale\n")
    os.utime(cached, (0, 0))  # older than the packed file
    assert "stale" not in (records.unpacked(case) / records.DATABASE).read_text()


def test_every_shipped_database_holds_one_measured_record_per_workload(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FCM_TVM_CACHE", str(tmp_path / "cache"))
    cases = records.shipped_cases("h100")
    for batch in (1, 32):
        for model in ("mobilenet_v2", "mnasnet1_0", "efficientnet_b0", "mobilenet_v3_large"):
            assert records.record_name(model, batch, "fp32", "none") in cases
    assert {"mobilenet_v2_b1_fp16_stock", "mnasnet1_0_b1_fp16_stock"} <= set(records.shipped_cases("h200"))
    shipped = [path for path in records.shipped_root().glob("*/*") if records.has_records(path)]
    for case in shipped:
        folder = records.unpacked(case)
        workloads = (folder / records.WORKLOADS).read_text().splitlines()
        measured = list(records.measured_records(folder / records.DATABASE))
        assert sorted(index for index, _, _ in measured) == list(range(len(workloads))), case
        assert all(seconds is not None and seconds > 0 for _, _, seconds in measured), case


FRESH_FP16_BUILD = """
from fcm_tvm import compile
from fcm_tvm.models import build_model
from fcm_tvm.precision import with_precision
from fcm_tvm.records import shipped_records

model = with_precision(build_model("mobilenet_v2", batch=1), "fp16")
compile(model, "h200", fuse="none", tuning_records=shipped_records("h200", "mobilenet_v2", 1, "fp16", "none"))
"""


@pytest.mark.slow
def test_fp16_records_with_tensor_core_schedules_replay_in_a_process_that_never_tuned(tmp_path):
    folder = records.shipped_records("h200", "mobilenet_v2", 1, "fp16", "none")
    assert folder is not None and "wmma" in (folder / records.DATABASE).read_text()
    environment = {**os.environ, "FCM_TVM_CACHE": str(tmp_path)}
    build = [sys.executable, "-c", FRESH_FP16_BUILD]
    result = subprocess.run(build, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
