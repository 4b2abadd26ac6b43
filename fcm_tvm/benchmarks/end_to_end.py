"""``fcm-tvm bench``: end-to-end latency and energy of fcm-tvm against stock TVM, side by side.

Every variant of a model is compiled and run in this one process on one GPU:

- ``stock``: TVM's default pipeline (dlight's schedules);
- ``stock-tuned``: the default pipeline with a MetaSchedule database of the unfused graph;
- ``fcm``: FusePlanner + FCM kernels, the rest default;
- ``fcm-tuned``: FCM kernels, the rest from a MetaSchedule database of the fused graph.

Each variant is first checked against a float64 reference (a failed check is reported as such,
never timed), then timed with the VM's time evaluator over several fresh input sets (median of
the medians). Then the energy per inference of all the case's variants is read from NVML in
turns, four readings of >= 1 s each (:func:`fcm_tvm.energy.interleaved_energy`): the median, and
the readings' spread.
"""

from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import records as shipped  # a module reference: tests point shipped_root elsewhere
from ..energy import EnergyRuns, interleaved_energy
from ..errors import FcmError
from ..records import find_records, tuning_dir
from .report import save_report

VARIANTS = {
    "stock": ("none", False),
    "stock-tuned": ("none", True),
    "fcm": ("auto", False),
    "fcm-tuned": ("auto", True),
}
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
LOG_SCALE_RANGE = 20  # the bar chart turns logarithmic when latencies span more than this
COLUMNS = [
    "model",
    "batch",
    "precision",
    "variant",
    "fused",
    "median_ms",
    "throughput_per_s",
    "joules_per_inference",
    "energy_spread",
    "speedup_vs_stock_tuned",
    "rel_error",
    "status",
]


@dataclass(frozen=True)
class BenchCase:
    model: str
    batch: int
    precision: str

    def records(self, roots: list[Path], fuse: str) -> Path | None:
        """The database for ``fuse`` under the first of ``roots`` that has one: the fused graph's
        if tuned, else the stock graph's; None where none has."""
        return find_records(roots, self.model, self.batch, self.precision, fuse)

    def looked_in(self, roots: list[Path], fuse: str) -> str:
        """Where :meth:`records` looked, for the message when it found nothing."""
        folders = [tuning_dir(root, self.model, self.batch, self.precision, fuse) for root in roots]
        return ", ".join(map(str, folders)) or "no tuning records given"


def progress(done: int, total: int, label: str) -> None:
    width = 30
    filled = width * done // max(total, 1)
    print(
        f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {label[:50]:50s}",
        end="",
        file=sys.stderr,
        flush=True,
    )
    if done == total:
        print(file=sys.stderr)


def bench_case(
    case: BenchCase,
    variants: list[str],
    target: str,
    tuning_roots: list[Path],
    input_sets: int,
    energy_meter,
    cuda_graph: bool = False,
) -> list[dict]:
    """Compile, check and time every variant of one (model, batch, precision)."""
    from ..compiler import compile as compile_model
    from ..models import build_model
    from ..precision import with_precision
    from ..reference import float64_reference

    onnx_model = with_precision(build_model(case.model, batch=case.batch), case.precision)
    rows, energy_batches = [], {}
    for variant in variants:
        fuse, tuned = VARIANTS[variant]
        row = {"model": case.model, "batch": case.batch, "precision": case.precision, "variant": variant}
        records = case.records(tuning_roots, fuse) if tuned else None
        if tuned and records is None:
            rows.append({**row, "status": f"no tuning records ({case.looked_in(tuning_roots, fuse)})"})
            continue
        if records is not None:
            row["tuning_records"] = str(records)
        try:
            compiled = compile_model(
                onnx_model, target, fuse=fuse, tuning_records=records, cuda_graph=cuda_graph
            )
            runner = compiled.runner()
            inputs = runner.random_inputs()
            error = _max_error(runner.run(*inputs), float64_reference(onnx_model, inputs))
            row.update(fused=len(compiled.fused), rel_error=error)
            if not error < TOLERANCE[case.precision]:
                rows.append({**row, "status": "WRONG RESULT: not timed"})
                continue
            medians = [
                runner.benchmark(*runner.random_inputs(), number=20, repeat=15).median_ms
                for _ in range(input_sets)
            ]
            row.update(median_ms=statistics.median(medians), status="ok")
            row["throughput_per_s"] = case.batch * 1e3 / row["median_ms"]
            if energy_meter is not None:
                energy_batches[variant] = _energy_batch(runner, inputs, row["median_ms"])
        except FcmError as failure:
            row["status"] = f"failed: {failure}"
        rows.append(row)
    if energy_batches:
        _add_energy(rows, interleaved_energy(energy_batches, energy_meter), case.batch)
    _add_speedups(rows)
    return rows


def _energy_batch(runner, inputs, median_ms: float) -> tuple:
    """A warmed-up call running the model about 0.2 s (between two reads of NVML's counter)."""
    runs = max(1, int(200 / max(median_ms, 1e-3)))
    batch = runner.evaluator(*inputs, number=runs)
    batch()
    return batch, runs


def _add_energy(rows: list[dict], energy: dict[str, EnergyRuns], batch: int) -> None:
    for row in rows:
        if (runs := energy.get(row["variant"])) is not None:
            row.update(joules_per_inference=runs.median / batch, energy_spread=runs.spread)


def _max_error(actual: list[np.ndarray], expected: list[np.ndarray]) -> float:
    errors = []
    for a, e in zip(actual, expected):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if a.shape != e.shape or not np.isfinite(a).all():
            return float("inf")
        errors.append(float(np.linalg.norm(a - e) / max(np.linalg.norm(e), 1e-30)))
    return max(errors)


def _add_speedups(rows: list[dict]) -> None:
    baseline = next(
        (r.get("median_ms") for r in rows if r["variant"] == "stock-tuned" and r.get("median_ms")), None
    )
    for row in rows:
        if baseline and row.get("median_ms"):
            row["speedup_vs_stock_tuned"] = baseline / row["median_ms"]


def plot(rows: list[dict], path: Path) -> bool:
    """A bar chart of median latency per model and variant (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    timed = [row for row in rows if row.get("median_ms")]
    if not timed:
        return False
    cases = sorted({(r["model"], r["batch"], r["precision"]) for r in timed})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in timed)]
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(cases)), 4))
    width = 0.8 / max(len(variants), 1)
    for index, variant in enumerate(variants):
        values = [
            next(
                (
                    r["median_ms"]
                    for r in timed
                    if (r["model"], r["batch"], r["precision"]) == case and r["variant"] == variant
                ),
                0,
            )
            for case in cases
        ]
        axis.bar([c + index * width for c in range(len(cases))], values, width, label=variant)
    axis.set_xticks([c + 0.4 - width / 2 for c in range(len(cases))])
    axis.set_xticklabels([f"{m}\nb{b} {p}" for m, b, p in cases], fontsize=7)
    axis.set_ylabel("median latency (ms)")
    latencies = [row["median_ms"] for row in timed]
    if max(latencies) > LOG_SCALE_RANGE * min(latencies):  # else bars from zero: ratios read true
        axis.set_yscale("log")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def bench(
    models: list[str],
    variants: list[str],
    batches: list[int],
    precisions: list[str],
    target: str,
    tuning_root: Path | None,
    out_dir: Path,
    input_sets: int = 3,
    energy: bool = True,
    cuda_graph: bool = False,
) -> list[dict]:
    """Run every case, print and save the table (JSON, Markdown, PNG); return the rows.

    ``tuning_root``: a folder of work directories named ``MODEL_bB_PRECISION_{stock,fcm}``; without
    it, the tuned variants use the records shipped for the target's GPU (``fcm_tvm/data/tuning``).
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise FcmError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(VARIANTS)}")
    gpu_key = _gpu_key(target)
    roots = [tuning_root] if tuning_root is not None else []
    if not roots and gpu_key and any(VARIANTS[v][1] for v in variants):
        roots = shipped.shipped_roots(gpu_key)
        where = " (then) ".join(map(str, roots))
        print(f"[bench] tuned variants use the records shipped in {where}", file=sys.stderr)
    meter = _energy_meter() if energy else None
    cases = [BenchCase(m, b, p) for m in models for b in batches for p in precisions]
    context = {
        "target": target,
        "variants": variants,
        "energy": meter is not None,
        "gpu": gpu_key,
        "device": _device_name(),  # may differ from the GPU it planned for (gpu)
        "tuning_records": [str(root) for root in roots] or None,
        "cuda_graph": cuda_graph,
    }
    rows: list[dict] = []
    for index, case in enumerate(cases):
        progress(index, len(cases), f"{case.model} b{case.batch} {case.precision}")
        rows += bench_case(case, variants, target, roots, input_sets, meter, cuda_graph)
        table = save_report(out_dir, "bench", rows, COLUMNS, context)  # after each case: partial runs count
    progress(len(cases), len(cases), "done")
    plot(rows, out_dir / "bench.png")
    print(table)
    return rows


def _gpu_key(target: str) -> str | None:
    """The GPU ``target`` plans for (``h200``, ...); None for a CPU target."""
    from ..target import resolve_target

    resolved = resolve_target(target)
    return resolved.gpu.key if resolved.is_cuda and resolved.gpu else None


def _device_name() -> str | None:
    from ..target import local_gpu_name  # not at import: the module loads without TVM

    return local_gpu_name()


def _energy_meter():
    from ..energy import EnergyMeter

    try:
        return EnergyMeter()
    except Exception as error:  # no NVML, or no energy counter on this GPU
        print(f"[bench] energy not measured: {error}", file=sys.stderr)
        return None
