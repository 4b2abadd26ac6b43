"""Per-model ``fcm-tvm bench`` runs gathered into one report: a model per row, the speed-up and
energy ratio of one variant over a baseline, and their geometric means.

The GPU scripts bench one model per process (a crash or a timeout costs one model, not the
run), so each model's ``bench.json`` comes back alone; this joins them into the JSON, Markdown
table and bar chart that ``docs/`` publishes::

    python -m fcm_tvm.benchmarks.combine docs/results/NAME bench_a.json bench_b.json ...
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from .end_to_end import plot
from .report import markdown_table


def load_rows(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """Every run's rows and every run's context, in the order of ``paths``."""
    rows, contexts = [], []
    for path in paths:
        run = json.loads(path.read_text())
        rows += run["rows"]
        contexts.append({"source": path.name, **run["context"]})
    return rows, contexts


def ratio_rows(rows: list[dict], variant: str, baseline: str) -> list[dict]:
    """One row per (model, batch, precision) with both variants timed: times, speed-up, energy ratio.

    Cases where either variant failed or was not timed are kept, with their statuses, and no ratio.
    """
    cases: dict[tuple, dict] = {}
    for row in rows:
        cases.setdefault((row["model"], row["batch"], row["precision"]), {})[row["variant"]] = row
    table = []
    for (model, batch, precision), by_variant in cases.items():
        ours, base = by_variant.get(variant, {}), by_variant.get(baseline, {})
        entry = {
            "model": model,
            "batch": batch,
            "precision": precision,
            "fused": ours.get("fused"),
            f"{baseline}_ms": base.get("median_ms"),
            f"{variant}_ms": ours.get("median_ms"),
            "speedup": None,
            "energy_ratio": None,
            "status": _status(ours, base),
        }
        if ours.get("median_ms") and base.get("median_ms"):
            entry["speedup"] = base["median_ms"] / ours["median_ms"]
        if ours.get("joules_per_inference") and base.get("joules_per_inference"):
            entry["energy_ratio"] = ours["joules_per_inference"] / base["joules_per_inference"]
        table.append(entry)
    return table


def _status(ours: dict, base: dict) -> str:
    statuses = {ours.get("status", "not run"), base.get("status", "not run")}
    return "ok" if statuses == {"ok"} else "; ".join(sorted(statuses - {"ok"}))


def geomean(values: list[float]) -> float | None:
    return statistics.geometric_mean(values) if values else None


def summary(table: list[dict]) -> dict:
    """Geometric means of the ratios over the cases that have them, and the slowest case."""
    speedups = [row["speedup"] for row in table if row["speedup"]]
    energies = [row["energy_ratio"] for row in table if row["energy_ratio"]]
    return {
        "cases": len(table),
        "cases_timed": len(speedups),
        "geomean_speedup": geomean(speedups),
        "geomean_energy_ratio": geomean(energies),
        "min_speedup": min(speedups, default=None),
        "slower_cases": [row["model"] for row in table if row["speedup"] and row["speedup"] < 1],
    }


def markdown(table: list[dict], totals: dict, variant: str, baseline: str) -> str:
    columns = ["model", "batch", "precision", "fused", baseline, variant, "speed-up", "energy", "status"]
    cells = [
        {
            **row,
            baseline: _ms(row[f"{baseline}_ms"]),
            variant: _ms(row[f"{variant}_ms"]),
            "speed-up": _times(row["speedup"]),
            "energy": _times(row["energy_ratio"]),
        }
        for row in table
    ]
    geomeans = (
        f"| geomean ({totals['cases_timed']} of {totals['cases']}) | | | | | | "
        f"{_times(totals['geomean_speedup'])} | {_times(totals['geomean_energy_ratio'])} | |"
    )
    return markdown_table(cells, columns) + "\n" + geomeans


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3f} ms"


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}x"


def combine(out_stem: Path, paths: list[Path], variant: str, baseline: str) -> str:
    """Write ``OUT_STEM.json``, ``.md`` and ``.png``; return the Markdown table."""
    rows, contexts = load_rows(paths)
    table = ratio_rows(rows, variant, baseline)
    totals = summary(table)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    report = {"variant": variant, "baseline": baseline, "summary": totals, "ratios": table}
    report.update(runs=contexts, rows=rows)
    out_stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    text = markdown(table, totals, variant, baseline)
    sources = ", ".join(context["source"] for context in contexts)
    out_stem.with_suffix(".md").write_text(f"# {out_stem.name}\n\nfrom {sources}\n\n{text}\n")
    plot(rows, out_stem.with_suffix(".png"))
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_stem", type=Path, help="path of the report without its suffix")
    parser.add_argument("runs", type=Path, nargs="+", help="bench.json files of fcm-tvm bench")
    parser.add_argument("--variant", default="fcm-tuned")
    parser.add_argument("--baseline", default="stock-tuned")
    args = parser.parse_args(argv)
    print(combine(args.out_stem, args.runs, args.variant, args.baseline))


if __name__ == "__main__":
    main()
