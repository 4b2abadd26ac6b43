"""Per-model bench runs joined into one report: a case's ratios come from its own two rows, a
failed or untimed case is listed without a ratio and left out of the geometric means."""

from __future__ import annotations

import json
import math

import pytest

from fcm_tvm.benchmarks.combine import combine, ratio_rows, summary


def bench_run(model: str, stock_ms: float, fcm_ms: float | None, joules=(2.0, 1.0)) -> dict:
    common = {"model": model, "batch": 1, "precision": "fp32"}
    fcm = {**common, "variant": "fcm-tuned", "fused": 3, "status": "ok"}
    if fcm_ms is None:
        fcm["status"] = "WRONG RESULT: not timed"
    else:
        fcm.update(median_ms=fcm_ms, joules_per_inference=joules[1])
    stock = {**common, "variant": "stock-tuned", "median_ms": stock_ms, "status": "ok"}
    stock["joules_per_inference"] = joules[0]
    return {"context": {"gpu": "h100"}, "rows": [stock, fcm]}


def write_runs(folder, runs: dict) -> list:
    paths = []
    for model, run in runs.items():
        path = folder / f"bench_{model}.json"
        path.write_text(json.dumps(run))
        paths.append(path)
    return paths


def test_each_case_is_the_baseline_over_the_variant_of_its_own_rows():
    rows = bench_run("a", 2.0, 1.0)["rows"] + bench_run("b", 3.0, 2.0, joules=(1.0, 0.8))["rows"]
    table = ratio_rows(rows, "fcm-tuned", "stock-tuned")
    assert [(row["model"], row["speedup"], row["energy_ratio"]) for row in table] == [
        ("a", 2.0, 0.5),
        ("b", 1.5, pytest.approx(0.8)),
    ]


def test_the_geometric_means_skip_a_case_not_timed_and_slower_cases_are_named():
    rows = bench_run("a", 2.0, 1.0)["rows"] + bench_run("b", 1.0, 2.0)["rows"]
    rows += bench_run("c", 1.0, None)["rows"]
    totals = summary(ratio_rows(rows, "fcm-tuned", "stock-tuned"))
    assert totals["cases"] == 3 and totals["cases_timed"] == 2
    assert totals["geomean_speedup"] == pytest.approx(math.sqrt(2.0 * 0.5))
    assert totals["slower_cases"] == ["b"]


def test_a_case_not_timed_keeps_its_status_in_the_table(tmp_path):
    paths = write_runs(tmp_path, {"a": bench_run("a", 2.0, 1.0), "c": bench_run("c", 1.0, None)})
    text = combine(tmp_path / "zoo", paths, "fcm-tuned", "stock-tuned")
    assert "| c | 1 | fp32 | 3 | 1.000 ms |  |  |  | WRONG RESULT: not timed |" in text
    assert "| geomean (1 of 2) | | | | | | 2.000x | 0.500x | |" in text
    report = json.loads((tmp_path / "zoo.json").read_text())
    assert [run["source"] for run in report["runs"]] == ["bench_a.json", "bench_c.json"]
    assert len(report["rows"]) == 4 and (tmp_path / "zoo.md").is_file()
