"""Stock TVM's own schedule of a task, kept as a tuning record: the floor a tuned database stands on."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from fcm_tvm.default_schedules import commit_default, default_rules, default_schedule, is_default
from fcm_tvm.models import build_model
from fcm_tvm.tuning import tuning_module
from fcm_tvm.tuning_progress import TaskProgress
from tests.test_frontend import separable_block


@pytest.fixture(scope="module")
def cuda_tasks():
    """MobileNetV2's tuning tasks for the H100 (no GPU needed to extract or schedule them)."""
    module, target = tuning_module(build_model("mobilenet_v2", batch=1), "h100", fuse="none")
    return ms.relax_integration.extract_tasks(module, target), target


def test_the_default_rules_are_the_stock_cuda_pipelines_and_none_for_cpus(cuda_tasks):
    _, target = cuda_tasks
    assert [type(rule).__name__ for rule in default_rules(target)] == [
        "Matmul",
        "GEMV",
        "Reduction",
        "GeneralReduction",
        "Fallback",
    ]
    _, cpu = tuning_module(separable_block(), "llvm", fuse="none")
    assert default_rules(cpu) == []


@pytest.mark.slow
def test_every_dlight_schedule_replays_from_a_database_to_the_same_kernel(cuda_tasks, tmp_path: Path):
    tasks, target = cuda_tasks
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    rules_used = set()
    for task in tasks:
        schedule, rule = default_schedule(task.dispatched[0], target, default_rules(target))
        rules_used.add(rule)
        commit_default(database, task, target, 1e-5)
        replayed = database.query_schedule(task.dispatched[0], target, "main")
        assert tvm_ffi.structural_equal(replayed.mod, schedule.mod), task.task_name
    assert {"Matmul", "Fallback", "Reduction"} <= rules_used


def commit_other_schedule(database, task, target, seconds: float) -> None:
    """A record of ``task`` whose trace is not the default schedule's (the function unscheduled),
    as a tuned record looks to :func:`is_default`."""
    other = tvm.s_tir.Schedule(task.dispatched[0])
    other.get_sblock("root")
    args = ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])
    workload = database.commit_workload(task.dispatched[0])
    database.commit_tuning_record(ms.database.TuningRecord(other.trace, workload, [seconds], target, args))


def test_a_record_is_the_default_schedule_only_with_the_default_trace(cuda_tasks, tmp_path: Path):
    tasks, target = cuda_tasks
    task = tasks[0]
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    commit_default(database, task, target, 1e-5)
    workload = database.commit_workload(task.dispatched[0])
    assert is_default(database.get_top_k(workload, 1)[0])
    commit_other_schedule(database, task, target, 1e-6)
    assert not is_default(database.get_top_k(workload, 1)[0])


def test_a_tuned_record_is_adopted_only_for_its_own_kind_of_target(cuda_tasks, tmp_path: Path):
    from fcm_tvm.tuning import _Session

    tasks, target = cuda_tasks
    task = tasks[0]
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    commit_other_schedule(database, task, target, 1e-6)
    session = SimpleNamespace(database=database, target=target)
    assert _Session.tuned_seconds(session, task) == pytest.approx(1e-6)
    session.target = tvm.target.Target("llvm")
    assert _Session.tuned_seconds(session, task) is None  # a CUDA record never tunes a CPU task


class Raises:
    def apply(self, *_):
        raise ValueError("this rule fails on this function")


class Declines:
    def apply(self, *_):
        return None


def test_a_rule_that_raises_is_passed_over_like_one_that_declines(cuda_tasks):
    tasks, target = cuda_tasks
    fallback = default_rules(target)[-1]
    _, rule = default_schedule(tasks[0].dispatched[0], target, [Raises(), Declines(), fallback])
    assert rule == "Fallback"


def test_on_a_cpu_the_function_stays_as_it_is_and_its_record_still_counts(tmp_path: Path):
    module, cpu = tuning_module(separable_block(), "llvm", fuse="none")
    task = ms.relax_integration.extract_tasks(module, cpu)[0]
    schedule, rule = default_schedule(task.dispatched[0], cpu, default_rules(cpu))
    assert rule == "unscheduled"
    assert tvm_ffi.structural_equal(schedule.mod, task.dispatched[0])
    database = ms.database.JSONDatabase(work_dir=str(tmp_path))
    commit_default(database, task, cpu, 2e-6)
    workload = database.commit_workload(task.dispatched[0])
    assert [float(s) for s in database.get_top_k(workload, 1)[0].run_secs] == pytest.approx([2e-6])


def fake_progress(tmp_path: Path, times: dict[str, tuple[float | None, int]]) -> tuple[TaskProgress, list]:
    entries = {name: {"default_s": seconds, "weight": weight} for name, (seconds, weight) in times.items()}
    tasks = [SimpleNamespace(task_name=name) for name in times]
    return TaskProgress(tmp_path / "tasks.json", entries), tasks


def test_tasks_with_a_tuned_record_are_adopted_as_tuned_and_the_others_stay_to_tune(tmp_path: Path):
    progress, tasks = fake_progress(tmp_path, {"tuned_before": (9e-6, 1), "untuned": (5e-6, 1)})
    for entry in progress.entries.values():
        entry.update(trials=0, best_s=None)
    tuned_elsewhere = {"tuned_before": 3e-6}
    assert progress.adopt(tasks, lambda task: tuned_elsewhere.get(task.task_name)) == 1
    assert [progress.tuned(task) for task in tasks] == [True, False]
    assert progress.entries["tuned_before"]["best_s"] == 3e-6
    assert progress.adopt(tasks, lambda task: tuned_elsewhere.get(task.task_name)) == 0  # once


def test_tuning_focuses_on_the_tasks_that_take_the_given_share_of_the_time(tmp_path: Path):
    progress, tasks = fake_progress(
        tmp_path,
        {"small": (1e-6, 1), "single": (10e-6, 1), "repeated": (5e-6, 3), "broken": (None, 1)},
    )
    focus = {share: [task.task_name for task in progress.focus(tasks, share)] for share in (0.5, 0.9, 1.0)}
    assert focus[0.5] == ["broken", "repeated"]  # a task whose default failed comes first
    assert focus[0.9] == ["broken", "repeated", "single"]
    assert focus[1.0] == ["broken", "repeated", "single", "small"]
