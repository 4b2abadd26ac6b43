"""Issue 3's per-layer targets, judged from one layer benchmark run and its ``ncu`` DRAM bytes.

Every chain is compared as a graph-captured model runs it (``layers --graph-clock``): the FCM
against (a) stock TVM's default kernels, (b) the same tuned by MetaSchedule, (c) cuDNN and
(d) the DRAM-traffic floor. The targets:

0. (first of all) every FCM matches the float64 reference;
1. the FCMs' geometric-mean speed-up over the faster of (b) and (c) is at least 1.5x;
2. on chains whose intermediate exceeds the L2, the FCM moves at most half the DRAM bytes of the
   unfused chain (the fewer of stock's and tuned stock's, from ``ncu_bytes``);
3. no chain the planner fuses is slower than (b).

    python -m fcm_tvm.benchmarks.layer_targets OUT_STEM layers.json... [dram_bytes.json...]

takes one or more layer runs (the per-case reports of ``layers --jobs`` too, should the joined
one be missing) and ncu runs, told apart by their content, and
writes ``OUT_STEM.json`` (chains, summaries, targets) and ``OUT_STEM.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from statistics import geometric_mean

from .chains import LayerCase
from .layers import GRAPH_BASELINES, best_baseline_ratio
from .report import markdown_table

SPEEDUP_TARGET = 1.5
DRAM_TARGET = 0.5
UNFUSED = ("stock", "stock_tuned")
CHAIN_COLUMNS = [
    "model",
    "batch",
    "precision",
    "kind",
    "shape",
    "fused_by_planner",
    "fcm_graph_us",
    "stock_graph_us",
    "stock_tuned_graph_us",
    "cudnn_graph_us",
    "floor_us",
    "speedup",
    "fcm_dram_mb",
    "unfused_dram_mb",
    "dram_ratio",
]
SUMMARY_COLUMNS = [
    "group",
    "chains",
    "timed",
    "geomean_speedup",
    "slower_than_best",
    "fused_slower_than_tuned",
]


def chain_rows(layer_rows: list[dict], dram_entries: Iterable[dict]) -> list[dict]:
    """The layer rows with their speed-up over the faster of tuned stock and cuDNN in graphs and,
    where ``ncu`` profiled the chain, the FCM's and the unfused chain's DRAM megabytes."""
    dram = {(entry["case"], entry["key"], entry["variant"]): entry["bytes"] for entry in dram_entries}
    rows = []
    for row in layer_rows:
        if is_wrong(row):
            rows.append({**row, **dict.fromkeys(("speedup", "fcm_dram_mb", "unfused_dram_mb", "dram_ratio"))})
            continue
        if row.get("fcm_graph_us") is None:
            raise ValueError(f"{row['shape']} ({row['model']}): no graph time; run layers with --graph-clock")
        case = LayerCase(row["model"], row["batch"], row["precision"]).label  # as profile runs name it
        fused = dram.get((case, row["key"], "fcm"))
        unfused = [dram[(case, row["key"], v)] for v in UNFUSED if (case, row["key"], v) in dram]
        rows.append(
            {
                **row,
                "speedup": best_baseline_ratio(row, "fcm_graph_us", GRAPH_BASELINES),
                "fcm_dram_mb": None if fused is None else fused / 1e6,
                "unfused_dram_mb": min(unfused) / 1e6 if unfused else None,
                "dram_ratio": fused / min(unfused) if fused is not None and unfused else None,
            }
        )
    return rows


def is_wrong(row: dict) -> bool:
    """Whether the FCM failed its float64 check (the layer run then does not time it)."""
    return row.get("status") == "WRONG RESULT"


def summary(label: str, rows: list[dict]) -> dict:
    """Chains, geomean speed-up, and how many are slower than the best baseline or, where the
    planner fuses them, than tuned stock."""
    speedups = [row["speedup"] for row in rows if row["speedup"]]
    return {
        "group": label,
        "chains": len(rows),
        "timed": len(speedups),
        "geomean_speedup": geometric_mean(speedups) if speedups else None,
        "slower_than_best": sum(s < 1 for s in speedups),
        "fused_slower_than_tuned": len(fused_slower_than_tuned(rows)),
    }


def fused_slower_than_tuned(rows: list[dict]) -> list[dict]:
    """Chains the planner fuses whose FCM is slower than the tuned stock chain (target 3)."""
    return [
        row
        for row in rows
        if row.get("fused_by_planner")
        and row.get("fcm_graph_us")
        and row.get("stock_tuned_graph_us")
        and row["fcm_graph_us"] > row["stock_tuned_graph_us"]
    ]


def summaries(rows: list[dict]) -> list[dict]:
    """Per model within each batch and precision, per batch and precision, and over all chains."""
    result = []
    for batch, precision in dict.fromkeys((row["batch"], row["precision"]) for row in rows):
        in_case = [row for row in rows if (row["batch"], row["precision"]) == (batch, precision)]
        for model in dict.fromkeys(row["model"] for row in in_case):
            of_model = [row for row in in_case if row["model"] == model]
            result.append(summary(f"{model}, batch {batch}, {precision}", of_model))
        result.append(summary(f"batch {batch}, {precision}", in_case))
    return [*result, summary("all", rows)]


def targets(rows: list[dict]) -> list[dict]:
    """Correctness and the three targets over all chains: what was asked, what was measured, met or not."""
    overall = summary("all", rows)
    geomean = overall["geomean_speedup"]
    profiled = [row for row in rows if row["dram_ratio"] is not None]
    worst_dram = max((row["dram_ratio"] for row in profiled), default=None)
    slower = fused_slower_than_tuned(rows)
    wrong = [row for row in rows if is_wrong(row)]
    caveat = untimed_baselines([row for row in rows if not is_wrong(row)])
    return [
        {
            "target": "every FCM matches float64 on fresh inputs",
            "measured": f"{len(wrong)} of {len(rows)} wrong: " + ", ".join(chain_name(r) for r in wrong)
            if wrong
            else f"all {len(rows)} correct",
            "met": not wrong,
        },
        {
            "target": f"geomean speed-up over the faster of tuned stock and cuDNN >= {SPEEDUP_TARGET}x",
            "measured": "no chain timed"
            if geomean is None
            else f"{geomean:.3f}x over {overall['timed']} of {overall['chains']} chains{caveat}",
            "met": geomean is not None and geomean >= SPEEDUP_TARGET,
        },
        {
            "target": f"DRAM bytes <= {DRAM_TARGET}x unfused where the intermediate exceeds L2",
            "measured": "no chain profiled"
            if worst_dram is None
            else f"worst {worst_dram:.3f}x over {len(profiled)} chains",
            "met": worst_dram is not None and worst_dram <= DRAM_TARGET,
        },
        {
            "target": "no chain the planner fuses slower than tuned stock",
            "measured": f"{len(slower)} slower: " + ", ".join(chain_name(r) for r in slower)
            if slower
            else "none slower",
            "met": not slower,
        },
    ]


def untimed_baselines(rows: list[dict]) -> str:
    """Which baselines some chains lack in graphs (their speed-up is over the others), as a remark."""
    lacking = {
        name: sum(1 for row in rows if not row.get(key))
        for name, key in (("tuned stock", "stock_tuned_graph_us"), ("cuDNN", "cudnn_graph_us"))
    }
    remarks = [f"{name} not timed in graphs on {count}" for name, count in lacking.items() if count]
    return f" ({'; '.join(remarks)})" if remarks else ""


def chain_name(row: dict) -> str:
    return f"{row['model']} b{row['batch']} {row['precision']} {row['shape']}"


def write_report(out_stem: Path, files: list[Path]) -> str:
    """Judge the layer runs among ``files`` (``layers.json``: a report with rows) with the DRAM
    bytes among them (``dram_bytes.json``: a list); save JSON and Markdown."""
    loaded = {path: json.loads(path.read_text()) for path in files}
    runs = {path: saved for path, saved in loaded.items() if isinstance(saved, dict)}
    if not runs:
        raise ValueError("no layers.json among the files")
    dram = [entry for saved in loaded.values() if isinstance(saved, list) for entry in saved]
    rows = chain_rows([row for saved in runs.values() for row in saved["rows"]], dram)
    context = {**next(iter(runs.values()))["context"], "runs": [str(path) for path in loaded]}
    report = {"context": context, "targets": targets(rows), "summaries": summaries(rows), "chains": rows}
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    out_stem.with_suffix(".json").write_text(json.dumps(report, indent=1))
    text = "\n\n".join(
        [
            f"# Per-layer targets (issue 3): {context.get('gpu', '')}",
            markdown_table(report["targets"], ["target", "measured", "met"]),
            markdown_table(report["summaries"], SUMMARY_COLUMNS),
            markdown_table(rows, CHAIN_COLUMNS),
        ]
    )
    out_stem.with_suffix(".md").write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_stem", type=Path, help="where to write OUT_STEM.json and OUT_STEM.md")
    parser.add_argument(
        "files",
        type=Path,
        nargs="+",
        help="layers.json of layers --graph-clock runs, dram_bytes.json of ncu_bytes",
    )
    args = parser.parse_args(argv)
    for path in args.files:
        if not path.is_file():
            parser.error(f"no such file: {path}")
    try:
        print(write_report(args.out_stem, args.files))
    except ValueError as error:
        parser.error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
