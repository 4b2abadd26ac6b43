"""Stock TVM's own schedule of each tuning task, measured and kept as a tuning record.

MetaSchedule's best candidate can be slower than what the default pipeline gives the same
kernel (dlight on CUDA: 16 random candidates per task made MobileNetV2 28% slower on the H100).
A database that also holds the default schedule, measured by the same runner, never picks
something worse than stock for a kernel: "stock-tuned" is then the better of the two per kernel.
The measured default times also say where a model's time goes, which is where tuning pays
(:func:`fcm_tvm.tuning.tune` tunes tasks in that order).
"""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import tvm
from tvm.s_tir import meta_schedule as ms


@dataclass(frozen=True)
class MeasuredDefault:
    """One task under the default pipeline's schedule, measured (``seconds`` None: it failed)."""

    task_name: str
    rule: str  # the dlight rule that scheduled it, "unscheduled" where none did (CPU targets)
    seconds: float | None
    error: str | None = None


def default_rules(target: tvm.target.Target) -> list:
    """The dlight rules the stock pipeline applies for ``target``, in its order (none for CPUs)."""
    if target.kind.name != "cuda":
        return []
    from tvm.relax.backend.cuda import pipeline as cuda

    for item in cuda.legalize_passes(target):
        if item.info.name == "ApplyDefaultSchedule":
            return list(item.rules)
    raise RuntimeError("TVM's CUDA pipeline no longer applies dlight's ApplyDefaultSchedule")


def default_schedule(mod: tvm.IRModule, target: tvm.target.Target, rules: list) -> tuple[object, str]:
    """The schedule (traced) that the first applicable rule gives ``mod``'s "main", and its name.

    A rule that raises is skipped like one that declines: dlight's Matmul rule fails on some
    squeeze-excitation gates at batch 32 ("consumers of the cache-write stage that are not
    properly inlined"), and the next rule schedules them.
    """
    function = mod["main"]
    with target:
        for rule in rules:
            try:
                schedule = rule.apply(function, target, False)
            except Exception:  # a failing rule declines
                continue
            if schedule is not None:
                return schedule, type(rule).__name__
    return _unscheduled(mod), "unscheduled"


def _unscheduled(mod: tvm.IRModule):
    """``mod`` as it is, with a trace that only looks up the root block: MetaSchedule's databases
    skip records whose trace is empty."""
    schedule = tvm.s_tir.Schedule(mod)
    with contextlib.suppress(Exception):  # no root block: the record is skipped, the function stays
        schedule.get_sblock("root")
    return schedule


@tvm.transform.module_pass(opt_level=0, name="ApplyStockSchedule")
class ApplyStockSchedule:
    """dlight's ``ApplyDefaultSchedule`` with the stock rules, where a rule that raises declines.

    Stock TVM 0.27 stops with an error where dlight's first matching rule fails (EfficientNet-B0
    and MobileNetV3-Large at batch 32); here the next rule schedules that function. Everywhere
    else the result is the same kernel as stock's. ``rules``: those of the pass it replaces.
    """

    def __init__(self, rules: list) -> None:
        self.rules = rules

    def transform_module(self, mod: tvm.IRModule, _context) -> tvm.IRModule:
        updated = {}
        for global_var, function in mod.functions_items():
            if not isinstance(function, tvm.tirx.PrimFunc) or _is_scheduled(function):
                continue
            target = (function.attrs or {}).get("target") or tvm.target.Target.current(allow_none=False)
            schedule, rule = default_schedule(tvm.IRModule({"main": function}), target, self.rules)
            if rule != "unscheduled":
                updated[global_var] = schedule.mod["main"].with_attr("tirx.is_scheduled", True)
        for global_var, function in updated.items():
            mod[global_var] = function
        return mod


def _is_scheduled(function) -> bool:
    return function.attrs is not None and bool(function.attrs.get("tirx.is_scheduled", False))


def measure_defaults(tasks: list, target: tvm.target.Target, builder, runner) -> list[MeasuredDefault]:
    """Build every task's default schedule with ``builder`` and time it with ``runner``."""
    rules = default_rules(target)
    schedules = [default_schedule(task.dispatched[0], target, rules) for task in tasks]
    built = builder.build([ms.builder.BuilderInput(schedule.mod, target) for schedule, _ in schedules])
    futures = [
        None
        if result.error_msg
        else runner.run([ms.runner.RunnerInput(result.artifact_path, _device_type(target), _args(task))])[0]
        for task, result in zip(tasks, built)
    ]
    measured = []
    for task, (_, rule), result, future in zip(tasks, schedules, built, futures):
        outcome = future.result() if future is not None else None
        error = result.error_msg or (outcome.error_msg if outcome is not None else None)
        seconds = None if error else mean_seconds(outcome.run_secs)
        measured.append(MeasuredDefault(task.task_name, rule, seconds, error and str(error)[-300:]))
        if result.artifact_path:
            shutil.rmtree(Path(result.artifact_path).parent, ignore_errors=True)
    return measured


def commit_default(database, task, target: tvm.target.Target, seconds: float) -> None:
    """Add ``task``'s default schedule to ``database`` as a record that ran in ``seconds``."""
    mod = task.dispatched[0]
    schedule, _ = default_schedule(mod, target, default_rules(target))
    workload = database.commit_workload(mod)
    record = ms.database.TuningRecord(schedule.trace, workload, [seconds], target, _args(task))
    database.commit_tuning_record(record)


def is_default(record) -> bool:
    """Whether a database ``record`` holds its workload's default schedule, as
    :func:`commit_default` stores it (the same trace), rather than one that tuning found."""
    schedule, _ = default_schedule(record.workload.mod, record.target, default_rules(record.target))
    return str(schedule.trace) == str(record.trace)


def _device_type(target: tvm.target.Target) -> str:
    """The runner's name for the device a ``target`` runs on."""
    return "cuda" if target.kind.name == "cuda" else "cpu"


def _args(task) -> list:
    return ms.arg_info.ArgInfo.from_prim_func(task.dispatched[0]["main"])


def mean_seconds(run_secs) -> float:
    """The mean of a runner's or a record's run times."""
    values = [float(value) for value in run_secs]
    return sum(values) / len(values)
