"""MetaSchedule tuning: the summary a run leaves behind, pruned databases, and a real (tiny) CPU run."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tvm

import fcm_tvm
from fcm_tvm.errors import FcmError
from fcm_tvm.records import DATABASE, WORKLOADS, pack_database, prune_database
from fcm_tvm.tuning import _StopSignals, tune
from fcm_tvm.tuning_progress import PROGRESS, TaskProgress, report
from fcm_tvm.tuning_summary import SUMMARY, log_offsets, summarize, table
from tests.conftest import relative_error
from tests.test_frontend import separable_block

TIR = "# from tvm.script import ir as I\n# from tvm.script import tirx as T\n\n@I.ir_module\nclass Module:\n"
TRACEBACK = (
    "LocalBuilder: An exception occurred\nTraceback (most recent call last):\n"
    + "".join(f'  File "frame{i}.py", line {i}, in f\n    call()\n' for i in range(8))
    + 'RuntimeError: Compilation error:\nkernel.cu(12): error: identifier "half4" is undefined\n'
)


def log_record(stamp: str, message: str) -> str:
    return f"2026-11-25 {stamp} [INFO] [task_scheduler.cc:134] {message}\n"


def trial(stamp: str, task: str, number: int, outcome: str) -> str:
    return log_record(stamp, f"[Task #0: {task}] Trial #{number}: {outcome}")


def ok(stamp: str, task: str, number: int) -> str:
    return trial(stamp, task, number, "GFLOPs: 27.4857. Time: 2.3844 us. Best GFLOPs: 27.4857")


def work_dir(tmp_path: Path, task_logs: dict[str, str], scheduler_log: str = "", started=None) -> Path:
    folder = tmp_path / "work"
    (folder / "logs").mkdir(parents=True)
    for task, text in task_logs.items():
        (folder / "logs" / f"tvm.s_tir.meta_schedule.logging.{task}.log").write_text(text)
    (folder / "logs" / "tvm.s_tir.meta_schedule.logging.task_scheduler.log").write_text(scheduler_log)
    if started is not None:
        plan = {"status": "running", "started": started, "tasks": 3, "trials": 64}
        (folder / SUMMARY).write_text(json.dumps(plan))
    return folder


def record(workload: int, seconds: list[float], tag: str = "t") -> str:
    return json.dumps([workload, [[[], [tag]], seconds, {"kind": "cuda"}, []]])


def test_summary_counts_each_candidate_once_by_outcome_and_groups_errors(tmp_path: Path):
    conv = "".join(ok("10:00:05", "conv2d", n) for n in (1, 2))
    conv += trial("10:00:06", "conv2d", 3, "Error in building:\n" + TRACEBACK + TIR)
    conv += trial("10:00:06", "conv2d", 4, "Error in building:\n" + TRACEBACK + TIR)
    dw = trial(
        "10:00:09", "dw", 1, "Error in building:\nLocalBuilder: Timeout, killed after 30 seconds\n" + TIR
    )
    dw += trial(
        "10:00:09", "dw", 2, "Error in running:\nLocalRunner: Timeout, killed after 30 seconds\n\n" + TIR
    )
    dw += trial(
        "10:00:09", "dw", 3, "Error in building:\nLocalBuilder: Timeout, killed after 30 seconds\n" + TIR
    )
    folder = work_dir(tmp_path, {"task_0_conv2d": conv, "task_1_dw": dw}, started="2026-11-25 10:00:00")

    summary = summarize(folder, status="finished", elapsed_s=12.34)

    data = json.loads((folder / SUMMARY).read_text())
    assert data == summary.to_json()
    assert data["candidates"] == {"measured": 7, "ok": 2, "build_failed": 4, "run_failed": 1}
    assert data["tasks_tuned"] == 1 and data["tasks"] == 3 and data["trials"] == 64  # the plan is kept
    assert data["status"] == "finished" and data["elapsed_s"] == 12.3
    errors = {(e["stage"], e["message"].splitlines()[-1]): e for e in data["errors"]}
    assert errors[("build", "LocalBuilder: Timeout, killed after 30 seconds")]["count"] == 2
    assert errors[("run", "LocalRunner: Timeout, killed after 30 seconds")]["count"] == 1
    compile_error = errors[("build", 'kernel.cu(12): error: identifier "half4" is undefined')]
    assert compile_error["count"] == 2 and compile_error["first_task"] == "conv2d"
    assert compile_error["message"].startswith("LocalBuilder: An exception occurred")
    assert all("ir_module" not in e["message"] for e in data["errors"])  # no TIR scripts, no traces
    assert len(compile_error["message"].splitlines()) <= 12  # a long traceback: head and tail only
    line = summary.line()
    assert "\n" not in line and "1/3 tasks" in line and "7 candidates: 2 ok, 4 failed to build" in line
    assert "first error: " in line


def test_summary_ignores_log_records_older_than_the_run(tmp_path: Path):
    earlier_run = "".join(ok("09:59:00", "conv2d", n) for n in range(1, 65))
    this_run = trial(
        "10:00:03", "conv2d", 65, "Error in building:\nLocalBuilder: Timeout, killed after 30 s\n"
    )
    folder = work_dir(tmp_path, {"task_0_conv2d": earlier_run + this_run}, started="2026-11-25 10:00:00")
    assert summarize(folder).data["candidates"] == {
        "measured": 1,
        "ok": 0,
        "build_failed": 1,
        "run_failed": 0,
    }


def test_summary_reads_only_what_the_logs_gained_since_the_run_began_even_within_one_second(tmp_path: Path):
    earlier_run = "".join(ok("10:00:00", "conv2d", n) for n in range(1, 3))
    folder = work_dir(tmp_path, {"task_0_conv2d": earlier_run}, started="2026-11-25 10:00:00")
    plan = json.loads((folder / SUMMARY).read_text())
    (folder / SUMMARY).write_text(json.dumps({**plan, "log_offsets": log_offsets(folder / "logs")}))
    with open(folder / "logs" / "tvm.s_tir.meta_schedule.logging.task_0_conv2d.log", "a") as log:
        log.write(ok("10:00:00", "conv2d", 3))
    assert summarize(folder).data["candidates"]["measured"] == 1


def test_a_run_that_never_reported_its_end_is_interrupted_and_its_cut_database_is_repaired(tmp_path: Path):
    folder = work_dir(tmp_path, {"task_0_conv2d": ok("10:00:05", "conv2d", 1)}, started="2026-11-25 10:00:00")
    (folder / WORKLOADS).write_text('["1", "AAAA"]\n["2", "BBBB"]\n')
    good = [record(0, [2e-6, 3e-6]), record(0, [1e10]), record(1, [1e10])]
    (folder / DATABASE).write_text("\n".join(good) + "\n" + record(1, [5e-6])[:40])  # killed mid-write

    data = summarize(folder).data

    assert data["status"] == "interrupted"
    assert (folder / DATABASE).read_text().splitlines() == good
    assert data["database"] == {
        "records": 3,
        "valid_records": 1,
        "workloads": 2,
        "workloads_with_valid_records": 1,
    }


def test_batches_report_the_time_spent_building_and_measuring(tmp_path: Path):
    scheduler = (
        log_record("10:00:00", "Sending 64 sample(s) to builder")
        + log_record("10:02:30", "Build errors: 59 sample(s)")
        + log_record("10:02:30", "Sending 5 valid sample(s) to runner")
        + log_record("10:02:34", '[Updated] Task #0: "conv2d"')
        + log_record("10:02:40", "Sending 64 sample(s) to builder")
        + log_record("10:02:50", "Sending 64 valid sample(s) to runner")
        + log_record("10:03:00", '[Updated] Task #1: "dw"')
    )
    folder = work_dir(tmp_path, {}, scheduler)
    batches = summarize(folder).data["batches"]
    assert batches == {"count": 2, "build_s": 160.0, "measure_s": 14.0, "build_s_per_batch": 80.0}


def test_the_table_has_a_row_per_run_and_their_first_errors(tmp_path: Path):
    log = trial("10:00:01", "dw", 1, "Error in building:\nLocalBuilder: Timeout, killed after 30 seconds\n")
    summary = summarize(work_dir(tmp_path, {"task_0_dw": log}), status="finished")
    lines = table([summary]).splitlines()
    assert lines[0].startswith("| work dir | status | tasks tuned |") and len(lines) == 4
    assert lines[2].startswith("| work | finished | 0/") and " | 1 | 0 | 1 | 0 |" in lines[2]
    assert lines[3] == "work: 1 x build: LocalBuilder: Timeout, killed after 30 seconds"


def test_pruning_keeps_the_fastest_measured_record_of_each_workload(tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    (source / WORKLOADS).write_text('["h0", "W0"]\n["h1", "W1"]\n["h2", "W2"]\n')
    records = [
        record(0, [3e-6], "slow"),
        record(2, [2e-6, 2e-6], "fast2"),
        record(0, [1e10], "failed"),
        record(1, [1e10], "failed"),  # workload 1 never ran: it is left out
        record(0, [1e-6, 2e-6], "fast0"),
        record(2, [5e-6], "slow2"),
    ]
    (source / DATABASE).write_text("\n".join(records) + "\n")

    assert prune_database(source, tmp_path / "pruned") == 2

    workloads = (tmp_path / "pruned" / WORKLOADS).read_text().splitlines()
    kept = [json.loads(line) for line in (tmp_path / "pruned" / DATABASE).read_text().splitlines()]
    assert workloads == ['["h0", "W0"]', '["h2", "W2"]']
    assert [(index, rec[0][1][0]) for index, rec in kept] == [(0, "fast0"), (1, "fast2")]


def test_pruning_a_database_without_a_measured_record_writes_nothing(tmp_path: Path):
    source = tmp_path / "source"
    source.mkdir()
    (source / WORKLOADS).write_text('["h0", "W0"]\n')
    (source / DATABASE).write_text(record(0, [1e10]) + "\n")
    assert prune_database(source, tmp_path / "pruned") == 0
    assert not (tmp_path / "pruned").exists()


def test_a_stop_signal_during_tuning_is_an_interrupt_that_is_noted():
    before = signal.getsignal(signal.SIGTERM)
    stop = _StopSignals()
    with pytest.raises(KeyboardInterrupt), stop:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; this is never reached in full
    assert stop.received == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before


def test_tune_rejects_counts_and_shares_out_of_range():
    pytest.importorskip("xgboost")
    with pytest.raises(FcmError, match="--trials-per-task must be positive"):
        tune(separable_block(), "llvm", work_dir="unused", trials=10, trials_per_task=0)
    with pytest.raises(FcmError, match="--trials must be positive"):
        tune(separable_block(), "llvm", work_dir="unused", trials=0)
    with pytest.raises(FcmError, match="--focus is a share"):
        tune(separable_block(), "llvm", work_dir="unused", focus=1.5)
    with pytest.raises(FcmError, match="--time-budget must be positive"):
        tune(separable_block(), "llvm", work_dir="unused", time_budget_s=0)


@pytest.fixture(scope="module")
def tuned_runs(tmp_path_factory) -> dict[str, Path]:
    """Real MetaSchedule runs on the CPU, all in one fixture: MetaSchedule's loggers keep the
    handler of the pytest capture they were first used under, so tuning again under another
    test's capture fails. The separable block has two tasks. ``full``: both tuned, two candidates
    each, then the same command again; ``focused``: only the slowest; ``budget``: a time budget
    spent before the first task."""
    pytest.importorskip("xgboost")
    root = tmp_path_factory.mktemp("tuning")
    full = root / "separable_b1_fp32_stock"
    options = {"trials": 4, "trials_per_task": 2, "fuse": "none"}
    assert tune(separable_block(), "llvm", work_dir=full, **options) == full
    after_first = (full / DATABASE).read_text()
    tune(separable_block(), "llvm", work_dir=full, **options)
    (root / "after_first_run.json").write_text(after_first)
    focused = tune(separable_block(), "llvm", work_dir=root / "focused", focus=0.01, **options)
    budget = tune(separable_block(), "llvm", work_dir=root / "budget", time_budget_s=1e-3, **options)
    started = root / "started"
    tune(separable_block(), "llvm", work_dir=started, start_from=focused, focus=1.0, **options)
    return {"full": full, "focused": focused, "budget": budget, "started": started, "root": root}


@pytest.fixture(scope="module")
def tuned(tuned_runs: dict[str, Path]) -> Path:
    return tuned_runs["full"]


def progress_of(folder: Path) -> dict[str, dict]:
    return json.loads((folder / PROGRESS).read_text())["tasks"]


@pytest.mark.slow
def test_every_task_keeps_its_measured_default_schedule_as_a_record(tuned: Path):
    tasks = progress_of(tuned)
    assert len(tasks) == 2
    for entry in tasks.values():
        assert entry["rule"] == "unscheduled"  # CPU targets have no dlight rules
        assert entry["default_s"] > 0 and entry["default_committed"]
        assert entry["trials"] == 2 and entry["best_s"] <= entry["default_s"]
    measured = sum(entry["trials"] for entry in tasks.values())
    assert len((tuned / DATABASE).read_text().splitlines()) == measured + 2  # + one default per task


@pytest.mark.slow
def test_tuning_starts_with_the_task_that_takes_the_most_default_time(tuned_runs: dict[str, Path]):
    tasks = progress_of(tuned_runs["focused"])
    slowest = max(tasks, key=lambda name: tasks[name]["default_s"] * tasks[name]["weight"])
    assert [name for name, entry in tasks.items() if entry["trials"]] == [slowest]
    assert all(entry["default_committed"] for entry in tasks.values())


@pytest.mark.slow
def test_a_spent_time_budget_tunes_nothing_and_still_records_the_defaults(tuned_runs: dict[str, Path]):
    tasks = progress_of(tuned_runs["budget"])
    assert all(entry["trials"] == 0 and entry["default_committed"] for entry in tasks.values())
    assert len((tuned_runs["budget"] / DATABASE).read_text().splitlines()) == 2


@pytest.mark.slow
def test_running_the_same_command_again_goes_on_where_the_last_run_stopped(tuned_runs: dict[str, Path]):
    after_first = (tuned_runs["root"] / "after_first_run.json").read_text()
    assert (tuned_runs["full"] / DATABASE).read_text() == after_first  # all was done: nothing added
    assert all(entry["trials"] == 2 for entry in progress_of(tuned_runs["full"]).values())
    summary = json.loads((tuned_runs["full"] / SUMMARY).read_text())  # of the second run, within seconds
    assert summary["candidates"]["measured"] == 0 and summary["tasks_tuned"] == 0


@pytest.mark.slow
def test_a_run_started_from_a_database_tunes_only_the_tasks_it_holds_no_tuned_record_of(
    tuned_runs: dict[str, Path],
):
    before, after = progress_of(tuned_runs["focused"]), progress_of(tuned_runs["started"])
    tuned_before = {name for name, entry in before.items() if entry["trials"]}
    assert len(tuned_before) == 1 and after.keys() == before.keys()
    for name, entry in after.items():
        assert entry.get("adopted", False) == (name in tuned_before)
        assert entry["trials"] == (0 if name in tuned_before else 2)
    started_records = (tuned_runs["started"] / DATABASE).read_text().splitlines()
    assert set((tuned_runs["focused"] / DATABASE).read_text().splitlines()) <= set(started_records)
    assert "adopted" in report(TaskProgress.load(tuned_runs["started"]))
    summary = summarize(tuned_runs["started"])
    assert summary.data["adopted"] == 1
    assert "1/2 tasks tuned (1 more adopted from the starting database)" in summary.line()


def test_a_starting_database_must_hold_records_and_go_into_a_new_work_directory(tmp_path: Path):
    with pytest.raises(FcmError, match="no tuning records to start from"):
        tune(separable_block(), "llvm", work_dir=tmp_path / "new", start_from=tmp_path / "empty")
    used = tmp_path / "used"
    used.mkdir()
    for name in (DATABASE, WORKLOADS):
        (used / name).write_text("")
    with pytest.raises(FcmError, match="already holds a database"):
        tune(separable_block(), "llvm", work_dir=used, start_from=used)


@pytest.mark.slow
def test_a_tuning_run_writes_its_summary(tuned: Path):
    data = json.loads((tuned / SUMMARY).read_text())
    assert data["status"] == "finished" and data["fuse"] == "none"
    assert data["tasks"] == 2 and data["trials_per_task"] == 2 and data["trials_per_iter"] == 2
    assert data["builder"]["kind"].startswith("in-process")
    assert data["runner"]["timeout_s"] > 0
    assert sorted(data["task_names"]) == sorted(progress_of(tuned))


@pytest.mark.slow
def test_the_progress_report_totals_the_kernel_time_before_and_after(tuned: Path):
    tasks = progress_of(tuned)
    text = report(TaskProgress.load(tuned))
    default = sum(e["default_s"] * e["weight"] for e in tasks.values()) * 1e6
    best = sum(e["best_s"] * e["weight"] for e in tasks.values()) * 1e6
    total = f"kernel time, tasks x occurrences: default {default:.1f} us, best {best:.1f} us"
    assert text.splitlines()[-1] == total
    assert all(f"| {name} | 1 | unscheduled |" in text for name in tasks)


def scheduled_functions(monkeypatch) -> list[set[str]]:
    """Spy on the database pass: the names of the PrimFuncs it leaves scheduled, per compile."""
    applied: list[set[str]] = []
    real = tvm.relax.transform.MetaScheduleApplyDatabase

    def spy(*args, **kwargs):
        database_pass = real(*args, **kwargs)

        @tvm.transform.module_pass(opt_level=0, name="SpyApplyDatabase")
        def run(module, context):
            module = database_pass(module)
            applied.append(
                {
                    gv.name_hint
                    for gv, func in module.functions.items()
                    if isinstance(func, tvm.tirx.PrimFunc)
                    and func.attrs
                    and "tirx.is_scheduled" in func.attrs
                }
            )
            return module

        return run

    monkeypatch.setattr(tvm.relax.transform, "MetaScheduleApplyDatabase", spy)
    return applied


@pytest.mark.slow
def test_compile_applies_the_tuned_database_and_its_pruned_and_packed_copies(
    tuned: Path, tmp_path: Path, monkeypatch, rng
):
    applied = scheduled_functions(monkeypatch)
    model = separable_block()
    x = rng.standard_normal((1, 8, 16, 16)).astype(np.float32)
    expected = fcm_tvm.compile(model, "llvm", fuse="none").run(x)[0]
    assert applied == []  # no records, no database pass

    every_task = set(progress_of(tuned))  # each has its default record at least
    prune_database(tuned, tmp_path / "pruned")
    pack_database(tuned, tmp_path / "packed")
    monkeypatch.setenv("FCM_TVM_CACHE", str(tmp_path / "cache"))
    for records in (tuned, tmp_path / "pruned", tmp_path / "packed"):
        actual = fcm_tvm.compile(model, "llvm", fuse="none", tuning_records=records).run(x)[0]
        assert relative_error(actual, expected) < 1e-5
        assert applied.pop() == every_task


def test_a_model_tuned_in_fp16_gives_tasks_in_float16():
    from fcm_tvm.tuning import tuning_module

    module, _ = tuning_module(separable_block(), "llvm", fuse="none", precision="fp16")
    main = module["main"].script()
    assert 'x: R.Tensor((1, 8, 16, 16), dtype="float16")' in main and "float32" not in main


@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tuning_sees_the_fcms_of_a_build_with_records(cuda_graph):
    """The build that uses the records plans against tuned stock (and, with graphs, without
    launches): MobileNetV2 in fp16 at batch 32 fuses other chains then than an untuned build, and
    what is tuned must be what that build runs around its FCMs."""
    from fcm_tvm.frontend import graph_inputs, import_onnx
    from fcm_tvm.models import build_model
    from fcm_tvm.pipeline import apply_fusion, fused_chains
    from fcm_tvm.precision import as_precision
    from fcm_tvm.target import resolve_target
    from fcm_tvm.tuning import tuning_module

    proto = as_precision(build_model("mobilenet_v2", batch=32), "fp16")

    def fused(**planned) -> list:
        module = import_onnx(proto, graph_inputs(proto, None))
        return [chain.spec for chain in apply_fusion(module, resolve_target("h100"), "auto", **planned)[1]]

    built = fused(tuned=True, cuda_graph=cuda_graph)
    module, _ = tuning_module(proto, "h100", fuse="auto", cuda_graph=cuda_graph)
    assert [chain.spec for chain in fused_chains(module)] == built
    assert built != fused(tuned=False, cuda_graph=False)
