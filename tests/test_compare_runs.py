"""tests/gpu/compare_runs.py: the tables that say what a kernel change or a tile knob gained."""

import json
from pathlib import Path

from .conftest import gpu_script

compare = gpu_script("compare_runs")


def row(layer: str, reuse: int, us: float, ok: bool = True) -> dict:
    return {
        "name": f"{layer}@r{reuse}",
        "layer": layer,
        "tiles": {"patch_reuse": reuse},
        "fcm_us": us,
        "ok": ok,
    }


def saved(tmp_path: Path, name: str, rows: list[dict]) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(rows))
    return str(path)


def test_a_knob_is_weighed_per_chain_against_its_fastest_kernel_above_one():
    rows = [
        row("a", 1, 100.0),
        row("a", 2, 80.0),
        row("b", 1, 30.0),
        row("b", 3, 60.0),
        row("c", 2, 10.0),  # nothing at 1 to weigh it against
    ]
    assert compare.knob_gains(rows, "patch_reuse") == [("a", 100.0, 80.0, 2), ("b", 30.0, 60.0, 3)]


def test_the_knob_table_counts_correct_kernels_only_and_ends_with_the_geometric_mean(tmp_path):
    sweep = saved(
        tmp_path,
        "sweep.json",
        [
            row("a", 1, 100.0),
            row("a", 2, 50.0),
            row("a", 4, 5.0, ok=False),
            row("b", 1, 30.0),
            row("b", 3, 60.0),
        ],
    )
    last = compare.knob_table(sweep, "patch_reuse")[-1]
    assert "geometric mean of 2 (1 faster)" in last and last.endswith("| 1.000 |")  # 2x and 0.5x


def test_an_ab_table_compares_only_kernels_correct_in_both_runs(tmp_path):
    before = saved(tmp_path, "before.json", [row("a", 1, 10.0), row("b", 1, 20.0), row("c", 1, 5.0)])
    after = saved(tmp_path, "after.json", [row("a", 1, 5.0), row("b", 1, 40.0, ok=False), row("c", 1, 5.0)])
    lines = compare.ab_table(before, after)
    assert [line.split(" | ")[0] for line in lines[2:-1]] == ["| a@r1", "| c@r1"]
    assert lines[-1] == "| geometric mean of 2 | | | 0.707 |"  # 0.5x and 1x
