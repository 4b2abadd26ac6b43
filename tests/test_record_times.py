"""record_times reads what a build's stock kernels cost from a tuning database: a task's time is
its record's mean run time times its calls, the FCMs have none, and a model without shipped
records is an error naming the case."""

from __future__ import annotations

import pytest

from fcm_tvm.benchmarks.record_times import format_table, main, open_database, task_times
from fcm_tvm.default_schedules import commit_default
from fcm_tvm.errors import FcmError
from fcm_tvm.models import build_model
from fcm_tvm.precision import as_precision
from fcm_tvm.target import resolve_target
from fcm_tvm.tuning import tuning_module


def database_with_one_record(tmp_path, module, target, seconds: float):
    """A database holding one record: the first task's default schedule, run in ``seconds``."""
    from tvm.s_tir import meta_schedule as ms

    task = ms.relax_integration.extract_tasks(module, target)[0]
    folder = tmp_path / "records"
    folder.mkdir()
    database = ms.database.JSONDatabase(
        str(folder / "database_workload.json"), str(folder / "database_tuning_record.json")
    )
    commit_default(database, task, target, seconds)
    return task.task_name, folder


def test_a_task_costs_its_record_mean_times_its_calls_and_fcms_have_no_record(tmp_path) -> None:
    resolved = resolve_target("h100")
    proto = as_precision(build_model("mobilenet_v2"), "fp32")
    stock, _ = tuning_module(proto, resolved, "none", cuda_graph=True)
    name, folder = database_with_one_record(tmp_path, stock, resolved.tvm_target, 3e-6)
    times = {t.name: t for t in task_times(stock, resolved.tvm_target, open_database(folder))}
    assert times[name].us_per_call == pytest.approx(3.0)
    assert times[name].total_us == pytest.approx(3.0 * times[name].calls)
    assert sum(t.us_per_call is not None for t in times.values()) == 1
    fused_module, _ = tuning_module(proto, resolved, "auto", cuda_graph=True)
    fused = task_times(fused_module, resolved.tvm_target, open_database(folder))
    assert any(t.name.startswith("fcm_") and t.us_per_call is None for t in fused)
    table = format_table("mobilenet_v2", list(times.values()), top=5)
    assert f"3.0  {name}" in table
    assert "without records:" in table


def test_a_case_without_shipped_records_is_an_fcm_error() -> None:
    with pytest.raises(FcmError, match="no h100 records ship for mobilenet_v2 at batch 7 in fp32"):
        main(["mobilenet_v2", "--batch", "7"])
