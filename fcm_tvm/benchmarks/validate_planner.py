"""FusePlanner against measurement (issue 4): predicted vs ncu bytes, decisions vs measured times.

Two checks, both on data measured on the GPU host and saved in ``docs/results``:

- **Bytes.** For every (case, chain, variant) of an ``ncu_bytes`` file (``dram_bytes*.json``), the
  cost model's DRAM ledger as ncu sees one cold run (``ChainEstimate.dram_observed``: writes still
  in L2 at the end are not counted; ncu ``dram__bytes``) and its L2
  ledger (``requested``, ncu ``lts__t_bytes``) are recomputed for the chain the zoo gives and
  compared with the measurement: relative error per row, median absolute error overall and per
  variant. ``fcm`` is priced with the tiles of the kernel that was measured (the planner's when it
  fuses, else the kernel builder's defaults, as :class:`.layers.Workloads` builds it); ``stock`` as
  the unfused chain. The DRAM reads alone (``dram.read``) are compared too, as a diagnostic.
- **Decisions.** For every chain of a ``layers`` file the options fcm-tvm has are "fuse"
  (``fcm_us``) and "keep" (the unfused kernels: ``stock_tuned_us`` when measured, else
  ``stock_us``). The planner's choice (``fused_by_planner``) is right when its measured time is
  within 5% of the faster option. cuDNN is not an option fcm-tvm can pick; it is listed as context.

    python -m fcm_tvm.benchmarks.validate_planner --bytes docs/results/dram_bytes_b1_fp32.json \\
        --layers docs/results/layers.json --out docs/results

writes ``planner_validation.json`` (rows and summary) and ``planner_validation.md`` into ``--out``
and prints the tables. No GPU is needed: the measurements are read from files.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .chains import LayerCase
from .report import markdown_table

DRAM_ERROR_TARGET = 0.20  # median absolute relative error of predicted DRAM bytes
DECISION_TOLERANCE = 0.05  # a choice within 5% of the measured best option is right
DECISION_TARGET = 0.90  # share of chains whose choice must be right
MB = 1e6
VARIANTS = ("fcm", "stock", "stock_folded", "stock_tuned")  # every stock form is priced as the unfused chain
LEDGERS = ("dram", "dram_read", "l2")


# -- arithmetic ------------------------------------------------------------------------------


def parse_case(label: str) -> LayerCase:
    """The :class:`LayerCase` of a ``case`` label (``LayerCase.label``: ``<model>_b<batch>_<precision>``)."""
    parts = label.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].startswith("b") or not parts[1][1:].isdigit():
        raise ValueError(f"not a case label (<model>_b<batch>_<precision>): {label!r}")
    model, batch, precision = parts
    return LayerCase(model, int(batch[1:]), precision)


def relative_error(predicted: float | None, measured: float | None) -> float | None:
    """``(predicted - measured) / measured``; None when either is missing or nothing was measured."""
    if predicted is None or measured is None or not measured > 0:
        return None
    return (predicted - measured) / measured


def median_abs_error(errors: Iterable[float | None]) -> float | None:
    """Median of the absolute relative errors that are known (None if there are none)."""
    values = [abs(e) for e in errors if e is not None and math.isfinite(e)]
    return statistics.median(values) if values else None


def median_ratio(pairs: Iterable[tuple[float | None, float | None]]) -> float | None:
    """Median of ``a / b`` over the pairs where both are known and ``b`` is positive."""
    ratios = [a / b for a, b in pairs if a is not None and b is not None and b > 0]
    return statistics.median(ratios) if ratios else None


def choice_verdict(
    options: dict[str, float | None], chosen: str, tolerance: float = DECISION_TOLERANCE
) -> dict:
    """Measured best among ``options`` (name -> time, None: not measured) and whether ``chosen`` is
    within ``tolerance`` of it. A chosen option without a time is wrong; no times at all: unknown."""
    timed = {name: t for name, t in options.items() if t is not None and math.isfinite(t)}
    if not timed:
        return {"best": None, "best_us": None, "chosen_us": None, "vs_best": None, "right": None}
    best = min(timed, key=lambda name: timed[name])
    chosen_us = timed.get(chosen)
    vs_best = chosen_us / timed[best] if chosen_us is not None else None
    return {
        "best": best,
        "best_us": timed[best],
        "chosen_us": chosen_us,
        "vs_best": vs_best,
        "right": vs_best is not None and vs_best <= 1 + tolerance,
    }


# -- predictions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainPrediction:
    """The cost model's ledgers of one chain: the FCM kernel that was measured and the stock chain."""

    shape: str
    tiles: str  # of the FCM kernel that was built and measured
    planner_fuse: bool
    fcm: dict[str, float]  # ledger -> bytes (see :func:`ledgers`)
    stock: dict[str, float]  # one kernel per stage (BatchNorm folded: ``stock_folded``)
    spec: object = None  # the chain's FcmSpec, to price an FCM measured with other tiles
    stock_unfolded: dict[str, float] | None = None  # a separate BatchNorm kernel per stage (``stock``)


def ledgers(estimate, gpu) -> dict[str, float]:
    """Bytes of a ``ChainEstimate`` (DRAM total, reads, writes as ncu sees them in one cold run;
    L2 requests) and its time in us."""
    dram = estimate.dram_observed(gpu)
    return {
        "dram": dram.total,
        "dram_read": dram.read,
        "dram_write": dram.written,
        "l2": estimate.requested.total,
        "time_us": estimate.time_s * 1e6,
    }


def built_smem_limit(gpu) -> int:
    """Shared memory per block the CUDA kernel builder allows for ``gpu``'s architecture (what
    ``fcm_primfunc`` uses to pick default tiles when the planner gives none)."""
    try:
        from ..schedules.cuda import max_shared_memory
        from ..target import cuda_target
    except ImportError:
        return gpu.smem_per_block
    return max_shared_memory(cuda_target(gpu))


def predict_case(case: LayerCase, gpu) -> list[ChainPrediction]:
    """Predictions for every chain of ``case``, in the order (and with the tiles) of :mod:`.layers`."""
    from ..planner.cost_model import estimate_fused, estimate_unfused
    from ..schedules.tiles import default_tiles
    from .chains import model_chains
    from .layers import describe, planner_tiles

    specs = [spec for spec, _ in model_chains(case)]
    smem = built_smem_limit(gpu)
    predictions = []
    for spec, (fuse, tiles) in zip(specs, planner_tiles(specs, gpu)):
        built = tiles or default_tiles(spec, smem)
        predictions.append(
            ChainPrediction(
                shape=describe(spec),
                tiles=built.label,
                planner_fuse=bool(fuse),
                fcm=ledgers(estimate_fused(spec, built, gpu), gpu),
                stock=ledgers(estimate_unfused(spec, gpu), gpu),
                spec=spec,
                stock_unfolded=ledgers(estimate_unfused(spec, gpu, epilogue_kernels=True), gpu),
            )
        )
    return predictions


Predictor = Callable[[str], list[ChainPrediction]]


def cached_predictor(gpu) -> Predictor:
    """``case label -> predictions``, each case built once."""
    cache: dict[str, list[ChainPrediction]] = {}

    def predict(label: str) -> list[ChainPrediction]:
        if label not in cache:
            cache[label] = predict_case(parse_case(label), gpu)
        return cache[label]

    return predict


# -- bytes -----------------------------------------------------------------------------------


def fcm_prediction(prediction: ChainPrediction, entry: dict, gpu) -> tuple[str, dict[str, float]]:
    """Tiles and ledger of the FCM that was measured: the tiles the profile run recorded (runs
    since 2026-11-26), else those the planner would pick now."""
    if not entry.get("tiles") or prediction.spec is None or gpu is None:
        return prediction.tiles, prediction.fcm
    from ..planner.cost_model import estimate_fused
    from ..schedules import FcmTiles

    tiles = FcmTiles(**entry["tiles"])
    return tiles.label, ledgers(estimate_fused(prediction.spec, tiles, gpu), gpu)


def stock_prediction(prediction: ChainPrediction, variant: str) -> dict[str, float]:
    """The unfused ledger of a stock variant: ``stock_folded`` runs a kernel per stage, ``stock``
    and ``stock_tuned`` a convolution and a BatchNorm kernel per stage."""
    if variant == "stock_folded" or prediction.stock_unfolded is None:
        return prediction.stock
    return prediction.stock_unfolded


def byte_rows(measured: list[dict], predict: Predictor, gpu=None) -> list[dict]:
    """One row per measured (case, chain, variant): measured and predicted bytes, relative errors."""
    rows = []
    for entry in measured:
        chains = predict(entry["case"])
        if not 0 <= entry["chain"] < len(chains):
            raise ValueError(f"{entry['case']} has {len(chains)} chains, not chain {entry['chain']}")
        prediction = chains[entry["chain"]]
        if entry.get("shape") and entry["shape"] != prediction.shape:
            raise ValueError(
                f"{entry['case']} chain {entry['chain']} measured as {entry['shape']!r}, "
                f"the zoo gives {prediction.shape!r}"
            )
        if entry["variant"] not in VARIANTS:
            raise ValueError(f"unknown variant {entry['variant']!r}")
        if entry["variant"] == "fcm":
            tiles, ledger = fcm_prediction(prediction, entry, gpu)
        else:
            tiles, ledger = None, stock_prediction(prediction, entry["variant"])
        row = {
            "case": entry["case"],
            "chain": entry["chain"],
            "shape": prediction.shape,
            "variant": entry["variant"],
            "tiles": tiles,
            "kernels": entry.get("kernels"),
            "measured_dram": entry["bytes"],
            "predicted_dram": ledger["dram"],
            "predicted_dram_read": ledger["dram_read"],
            "predicted_dram_write": ledger["dram_write"],
            "measured_l2": entry.get("l2_bytes"),
            "predicted_l2": ledger["l2"],
        }
        for name in LEDGERS:
            measured_key = "measured_l2" if name == "l2" else "measured_dram"
            row[f"{name}_error"] = relative_error(row[f"predicted_{name}"], row[measured_key])
        rows.append(row)
    return rows


def byte_summary(rows: list[dict]) -> dict:
    """Median absolute relative error per ledger, overall and per variant, and the DRAM target."""
    summary: dict = {"rows": len(rows), "chains": len({(r["case"], r["chain"]) for r in rows})}
    for name in LEDGERS:
        key = f"{name}_error"
        summary[f"{name}_median_abs_error"] = {
            "all": median_abs_error(r[key] for r in rows),
            **{v: median_abs_error(r[key] for r in rows if r["variant"] == v) for v in VARIANTS},
        }
    dram_errors = [abs(r["dram_error"]) for r in rows if r["dram_error"] is not None]
    within = sum(e < DRAM_ERROR_TARGET for e in dram_errors)
    summary["dram_within_target"] = within / len(dram_errors) if dram_errors else None
    overall = summary["dram_median_abs_error"]["all"]
    summary["dram_target"] = DRAM_ERROR_TARGET
    summary["dram_target_met"] = overall is not None and overall < DRAM_ERROR_TARGET
    return summary


# -- decisions -------------------------------------------------------------------------------


def decision_row(row: dict, prediction: ChainPrediction | None = None) -> dict:
    """The planner's recorded choice for a ``layers`` row against the measured times of its options;
    ``prediction`` adds what the planner decides now and the predicted times of the measured kernels."""
    tuned = row.get("stock_tuned_us")
    keep_source = "stock_tuned_us" if tuned is not None else "stock_us"
    keep_us = row.get(keep_source)
    options = {"fuse": row.get("fcm_us"), "keep": keep_us}
    chosen = "fuse" if row.get("fused_by_planner") else "keep"
    verdict = choice_verdict(options, chosen)
    with_cudnn = choice_verdict({**options, "cudnn": row.get("cudnn_us")}, chosen)
    return {
        "case": LayerCase(row["model"], row["batch"], row["precision"]).label,
        "chain": row["chain"],
        "shape": row.get("shape"),
        "chosen": chosen,
        "planner_now": None if prediction is None else ("fuse" if prediction.planner_fuse else "keep"),
        "predicted_fuse_us": None if prediction is None else prediction.fcm["time_us"],
        "predicted_keep_us": None if prediction is None else prediction.stock["time_us"],
        "fcm_us": row.get("fcm_us"),
        "keep_us": keep_us,
        "keep_source": keep_source,
        "cudnn_us": row.get("cudnn_us"),
        **verdict,
        "best_with_cudnn": with_cudnn["best"],
        "right_with_cudnn": with_cudnn["right"],
    }


def decision_summary(rows: list[dict]) -> dict:
    """How many choices were right (within the tolerance of the best fcm-tvm option), and context."""
    judged = [r for r in rows if r["right"] is not None]
    right = sum(bool(r["right"]) for r in judged)
    with_cudnn = [r for r in rows if r["right_with_cudnn"] is not None and r["cudnn_us"] is not None]
    fraction = right / len(judged) if judged else None
    return {
        "chains": len(judged),
        "right": right,
        "right_fraction": fraction,
        "tolerance": DECISION_TOLERANCE,
        "target": DECISION_TARGET,
        "target_met": fraction is not None and fraction >= DECISION_TARGET,
        "wrong": [f"{r['case']}#{r['chain']}" for r in judged if not r["right"]],
        "keep_source": sorted({r["keep_source"] for r in judged}),
        "fused_by_planner": sum(r["chosen"] == "fuse" for r in judged),
        "fuse_best": sum(r["best"] == "fuse" for r in judged),
        "stale": [
            f"{r['case']}#{r['chain']}"
            for r in rows
            if r["planner_now"] is not None and r["planner_now"] != r["chosen"]
        ],
        "measured_over_predicted_time": {
            option: median_ratio((r[f"{key}_us"], r[f"predicted_{option}_us"]) for r in rows)
            for option, key in (("fuse", "fcm"), ("keep", "keep"))
        },
        "context_cudnn": {
            "chains": len(with_cudnn),
            "cudnn_best": sum(r["best_with_cudnn"] == "cudnn" for r in with_cudnn),
            "right_fraction": (
                sum(bool(r["right_with_cudnn"]) for r in with_cudnn) / len(with_cudnn) if with_cudnn else None
            ),
        },
    }


def decision_rows(layer_rows: list[dict], predict: Predictor | None = None) -> list[dict]:
    """:func:`decision_row` for every row; ``predict`` adds what the planner decides now, if it can."""
    rows = []
    for row in layer_rows:
        prediction = None
        if predict is not None:
            label = LayerCase(row["model"], row["batch"], row["precision"]).label
            try:
                chains = predict(label)
            except Exception as error:  # a case the zoo cannot build here: no staleness check
                print(f"[validate] {label}: planner not rerun ({error})", file=sys.stderr)
            else:
                if 0 <= row["chain"] < len(chains):
                    prediction = chains[row["chain"]]
        rows.append(decision_row(row, prediction))
    return rows


# -- report ----------------------------------------------------------------------------------


def percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.0%}" if signed else f"{value:.0%}"


def megabytes(value: float | None) -> str:
    return "" if value is None else f"{value / MB:.3f}"


def byte_table(rows: list[dict]) -> str:
    display = [
        {
            "case": r["case"],
            "chain": r["chain"],
            "shape": r["shape"],
            "variant": r["variant"],
            "tiles": r["tiles"],
            "DRAM MB meas.": megabytes(r["measured_dram"]),
            "DRAM MB pred.": megabytes(r["predicted_dram"]),
            "DRAM err": percent(r["dram_error"], signed=True),
            "pred. reads MB": megabytes(r["predicted_dram_read"]),
            "reads err": percent(r["dram_read_error"], signed=True),
            "L2 MB meas.": megabytes(r["measured_l2"]),
            "L2 MB pred.": megabytes(r["predicted_l2"]),
            "L2 err": percent(r["l2_error"], signed=True),
        }
        for r in rows
    ]
    return markdown_table(display, list(display[0])) if display else "(no measured bytes)"


def decision_table(rows: list[dict]) -> str:
    def us(value: float | None) -> str:
        return "" if value is None else f"{value:.1f}"

    display = [
        {
            "case": r["case"],
            "chain": r["chain"],
            "shape": r["shape"],
            "fuse us": us(r["fcm_us"]),
            "keep us": us(r["keep_us"]) + (" (tuned)" if r["keep_source"] == "stock_tuned_us" else ""),
            "cudnn us": us(r["cudnn_us"]),
            "pred. fuse/keep us": (
                ""
                if r["predicted_fuse_us"] is None
                else f"{r['predicted_fuse_us']:.1f} / {r['predicted_keep_us']:.1f}"
            ),
            "best": r["best"],
            "planner": r["chosen"]
            + ("" if r["planner_now"] in (None, r["chosen"]) else f" (now {r['planner_now']})"),
            "chosen/best": "" if r["vs_best"] is None else f"{r['vs_best']:.2f}",
            "right": {True: "yes", False: "NO", None: "n/a"}[r["right"]],
        }
        for r in rows
    ]
    return markdown_table(display, list(display[0])) if display else "(no measured times)"


def summary_lines(bytes_summary: dict, decisions: dict) -> list[str]:
    lines = []
    if bytes_summary["rows"]:
        for name, what in (
            ("dram", "DRAM bytes (model's `dram` ledger vs ncu `dram__bytes`)"),
            ("dram_read", "DRAM reads only (`dram.read` vs ncu `dram__bytes`; diagnostic)"),
            ("l2", "L2 requests (`requested` ledger vs ncu `lts__t_bytes`; secondary)"),
        ):
            errors = bytes_summary[f"{name}_median_abs_error"]
            lines.append(
                f"- {what}: median |error| {percent(errors['all'])} "
                f"(fcm {percent(errors['fcm'])}, stock {percent(errors['stock'])}), "
                f"{bytes_summary['rows']} workloads of {bytes_summary['chains']} chains"
            )
        met = "met" if bytes_summary["dram_target_met"] else "MISSED"
        lines.append(
            f"- DRAM target (median |error| < {bytes_summary['dram_target']:.0%}): {met}; "
            f"{percent(bytes_summary['dram_within_target'])} of workloads are within it"
        )
    if decisions["chains"]:
        met = "met" if decisions["target_met"] else "MISSED"
        lines.append(
            f"- Decisions (fuse vs keep, {'/'.join(decisions['keep_source'])} for keep): "
            f"{decisions['right']} of {decisions['chains']} within {decisions['tolerance']:.0%} of the "
            f"measured best ({percent(decisions['right_fraction'])}); target >= "
            f"{decisions['target']:.0%}: {met}"
        )
        lines.append(
            f"- The planner fused {decisions['fused_by_planner']}; fusing was measured best on "
            f"{decisions['fuse_best']}; wrong: {', '.join(decisions['wrong']) or 'none'}"
        )
        ratios = decisions["measured_over_predicted_time"]
        if ratios["fuse"] is not None:
            lines.append(
                f"- Measured over predicted time, median: fuse {ratios['fuse']:.1f}x, "
                f"keep {ratios['keep']:.1f}x"
            )
        if decisions["stale"]:
            lines.append(
                f"- The planner now decides otherwise than recorded on: {', '.join(decisions['stale'])}"
            )
        context = decisions["context_cudnn"]
        if context["chains"]:
            lines.append(
                f"- Context, cuDNN as a third option (not one fcm-tvm can pick): fastest on "
                f"{context['cudnn_best']} of {context['chains']} chains; the planner's choice is within "
                f"{decisions['tolerance']:.0%} of the best of the three on "
                f"{percent(context['right_fraction'])}"
            )
    return lines


def validate(measured: list[dict], layer_rows: list[dict], predict: Predictor, gpu=None) -> dict:
    """Rows and summaries of both checks (``gpu`` prices FCMs measured with recorded tiles)."""
    rows_b = byte_rows(measured, predict, gpu)
    rows_d = decision_rows(layer_rows, predict)
    return {
        "summary": {"bytes": byte_summary(rows_b), "decisions": decision_summary(rows_d)},
        "bytes": rows_b,
        "decisions": rows_d,
    }


def render(result: dict, context: dict) -> str:
    summary = result["summary"]
    return "\n".join(
        [
            "# Planner validation",
            "",
            *[f"- {key}: {value}" for key, value in context.items()],
            "",
            "## Summary",
            "",
            *summary_lines(summary["bytes"], summary["decisions"]),
            "",
            "## Bytes per chain (error = (predicted - measured) / measured)",
            "",
            byte_table(result["bytes"]),
            "",
            f"## Decisions (right: chosen within {DECISION_TOLERANCE:.0%} of the faster of fuse and keep)",
            "",
            decision_table(result["decisions"]),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--bytes", type=Path, nargs="+", required=True, help="ncu_bytes outputs (dram_bytes*.json)"
    )
    parser.add_argument(
        "--layers", type=Path, nargs="+", required=True, help="layers benchmark outputs (layers*.json)"
    )
    parser.add_argument("--out", type=Path, default=Path("."))
    parser.add_argument("--gpu", default="h100", help="GPU the measurements were taken on")
    args = parser.parse_args(argv)

    from ..gpus import get_gpu

    gpu = get_gpu(args.gpu)
    measured = [entry for path in args.bytes for entry in json.loads(path.read_text())]
    layers = {path: json.loads(path.read_text()) for path in args.layers}
    layer_rows = [row for data in layers.values() for row in data.get("rows", [])]
    result = validate(measured, layer_rows, cached_predictor(gpu), gpu)
    context = {
        "gpu (cost model)": gpu.key,
        "bytes": ", ".join(map(str, args.bytes)) + " (ncu, cold L2 per workload)",
        "layers": ", ".join(
            f"{path} ({data.get('context', {}).get('gpu', '?')}, {data.get('context', {}).get('date', '?')})"
            for path, data in layers.items()
        ),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "planner_validation.json").write_text(json.dumps({"context": context, **result}, indent=1))
    text = render(result, context)
    (args.out / "planner_validation.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
