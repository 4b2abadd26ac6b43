"""Issue 3's per-layer targets as ``layer_targets`` judges a layer run and its ncu bytes."""

from __future__ import annotations

import json

import pytest

from fcm_tvm.benchmarks.layer_targets import chain_rows, main, summaries, targets


def layer_row(fcm: float, tuned: float, cudnn: float, fused: bool = True, key: str = "k", model: str = "m"):
    return {
        "model": model,
        "batch": 32,
        "precision": "fp32",
        "key": key,
        "kind": "pw_dw_pw",
        "shape": key,
        "fused_by_planner": fused,
        "fcm_graph_us": fcm,
        "stock_graph_us": 3 * tuned,
        "stock_tuned_graph_us": tuned,
        "cudnn_graph_us": cudnn,
        "floor_us": 1.0,
    }


def dram(key: str, variant: str, megabytes: float, model: str = "m") -> dict:
    return {"case": f"{model}_b32_fp32", "key": key, "variant": variant, "bytes": megabytes * 1e6}


def test_speedup_is_over_the_faster_of_tuned_stock_and_cudnn():
    rows = chain_rows([layer_row(10.0, tuned=30.0, cudnn=20.0), layer_row(10.0, tuned=15.0, cudnn=40.0)], [])
    assert [row["speedup"] for row in rows] == [2.0, 1.5]


def test_dram_ratio_is_against_the_fewer_unfused_bytes():
    entries = [dram("k", "fcm", 40.0), dram("k", "stock", 200.0), dram("k", "stock_tuned", 100.0)]
    (row,) = chain_rows([layer_row(10.0, 20.0, 20.0)], entries)
    assert (row["fcm_dram_mb"], row["unfused_dram_mb"], row["dram_ratio"]) == (40.0, 100.0, 0.4)


def test_a_chain_ncu_did_not_profile_has_no_dram_ratio():
    (row,) = chain_rows([layer_row(10.0, 20.0, 20.0)], [dram("other", "fcm", 1.0)])
    assert row["dram_ratio"] is None


def test_targets_met_when_fast_lean_and_never_slower_where_fused():
    entries = [dram("a", "fcm", 40.0), dram("a", "stock_tuned", 100.0)]
    rows = chain_rows([layer_row(10.0, 20.0, 30.0, key="a"), layer_row(10.0, 16.0, 30.0, key="b")], entries)
    assert [t["met"] for t in targets(rows)] == [True, True, True, True]


def test_targets_name_what_misses_them():
    entries = [dram("a", "fcm", 60.0), dram("a", "stock_tuned", 100.0)]
    layer_rows = [layer_row(10.0, 12.0, 30.0, key="a"), layer_row(10.0, 9.0, 30.0, key="slow")]
    _, speed, memory, never_slower = targets(chain_rows(layer_rows, entries))
    assert not speed["met"] and not memory["met"] and not never_slower["met"]
    assert "slow" in never_slower["measured"] and "0.600x" in memory["measured"]


def test_a_chain_the_planner_declines_may_be_slower_than_tuned_stock():
    rows = chain_rows([layer_row(10.0, 9.0, 30.0, fused=False)], [])
    assert targets(rows)[3]["met"]


def test_no_profiled_chain_does_not_meet_the_dram_target():
    assert not targets(chain_rows([layer_row(10.0, 20.0, 20.0)], []))[2]["met"]


def test_summaries_per_model_per_case_and_overall():
    rows = chain_rows([layer_row(10.0, 20.0, 40.0, model="a"), layer_row(10.0, 5.0, 40.0, model="b")], [])
    groups = {s["group"]: s for s in summaries(rows)}
    assert list(groups) == ["a, batch 32, fp32", "b, batch 32, fp32", "batch 32, fp32", "all"]
    assert groups["all"]["geomean_speedup"] == pytest.approx(1.0)
    assert groups["all"]["slower_than_best"] == 1
    assert groups["b, batch 32, fp32"]["fused_slower_than_tuned"] == 1


def test_main_writes_json_and_markdown(tmp_path):
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps({"context": {"gpu": "H100"}, "rows": [layer_row(10.0, 20.0, 30.0)]}))
    ncu = tmp_path / "dram_bytes.json"
    ncu.write_text(json.dumps([dram("k", "fcm", 10.0), dram("k", "stock", 50.0)]))
    assert main([str(tmp_path / "out" / "targets"), str(layers), str(ncu)]) == 0
    saved = json.loads((tmp_path / "out" / "targets.json").read_text())
    assert [t["met"] for t in saved["targets"]] == [True, True, True, True]
    assert "| geomean speed-up" in (tmp_path / "out" / "targets.md").read_text()


def test_a_run_without_graph_times_is_refused(tmp_path, capsys):
    layers = tmp_path / "layers.json"
    untimed = {**layer_row(1.0, 1.0, 1.0), "fcm_graph_us": None}
    layers.write_text(json.dumps({"context": {}, "rows": [untimed]}))
    with pytest.raises(SystemExit):
        main([str(tmp_path / "t"), str(layers)])
    assert "--graph-clock" in capsys.readouterr().err


def test_a_missing_file_is_named(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path / "t"), str(tmp_path / "absent.json")])
    assert "absent.json" in capsys.readouterr().err


def test_a_wrong_fcm_misses_the_first_target_and_is_named():
    wrong = {**layer_row(10.0, 20.0, 20.0, key="bad"), "fcm_graph_us": None, "status": "WRONG RESULT"}
    rows = chain_rows([wrong, layer_row(10.0, 20.0, 20.0)], [])
    correct, speed, *_ = targets(rows)
    assert not correct["met"] and "bad" in correct["measured"]
    assert speed["measured"] == "2.000x over 1 of 2 chains" and speed["met"]  # the wrong one is not timed


def test_a_run_without_cudnn_in_graphs_says_so():
    row = {**layer_row(10.0, 20.0, 30.0), "cudnn_graph_us": None}
    assert "cuDNN not timed in graphs on 1" in targets(chain_rows([row], []))[1]["measured"]


def test_per_case_runs_and_ncu_runs_are_told_apart_by_content(tmp_path):
    runs = []
    for model in ("a", "b"):
        runs.append(tmp_path / model / "layers.json")
        runs[-1].parent.mkdir()
        runs[-1].write_text(
            json.dumps({"context": {"gpu": "H100"}, "rows": [layer_row(10.0, 20.0, 30.0, model=model)]})
        )
    ncu = tmp_path / "dram_bytes.json"
    ncu.write_text(json.dumps([dram("k", "fcm", 10.0, model="b"), dram("k", "stock", 50.0, model="b")]))
    assert main([str(tmp_path / "t"), str(ncu), *map(str, runs)]) == 0
    saved = json.loads((tmp_path / "t.json").read_text())
    assert [(row["model"], row["dram_ratio"]) for row in saved["chains"]] == [("a", None), ("b", 0.2)]


def test_ncu_runs_alone_are_not_a_report(tmp_path, capsys):
    ncu = tmp_path / "dram_bytes.json"
    ncu.write_text("[]")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "t"), str(ncu)])
    assert "no layers.json" in capsys.readouterr().err


def test_a_run_without_tuned_stock_says_so():
    row = {**layer_row(10.0, 20.0, 30.0), "stock_tuned_graph_us": None}
    (speed,) = [t for t in targets(chain_rows([row], [])) if "geomean" in t["target"]]
    assert speed["measured"] == "3.000x over 1 of 1 chains (tuned stock not timed in graphs on 1)"
