"""Where a build's stock kernels spend their time, read from a tuning database (no GPU needed).

Every task MetaSchedule extracts from a build keeps its best measured record in the database
(``fcm-tvm tune`` measures every task's default schedule too), so the database already says what
each stock kernel of the build costs on the GPU that tuned it: the record's mean run time times
the task's calls per inference. This prints that for the stock graph (``--fuse none``) and for
fcm-tvm's (``auto``), where the FCM and squeeze-excitation kernels have no record and are listed
apart. It is how the largest stock kernels left around the FCMs were found (docs/kernels.md)::

    python -m fcm_tvm.benchmarks.record_times efficientnet_b0 --batch 32 --precision fp16 \\
        --gpu h100 --records h200 --json times.json

The times are those the records hold: measured in isolation by MetaSchedule's runner on the
records' GPU (``--records``), not inside this build's CUDA graph.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import tvm

from ..default_schedules import mean_seconds
from ..errors import FcmError
from ..models import build_model
from ..pipeline import register_tensor_intrinsics, replays_tensor_intrinsics
from ..precision import as_precision
from ..records import shipped_records, unpacked
from ..target import resolve_target
from ..tuning import tuning_module


@dataclass(frozen=True)
class TaskTime:
    """One extracted task: its name, calls per inference, the record's mean time, its shapes."""

    name: str
    calls: int
    us_per_call: float | None  # None: no record (an FCM, or a task the database lacks)
    shapes: list[list[int]]

    @property
    def total_us(self) -> float:
        return self.calls * (self.us_per_call or 0.0)


def task_times(module: tvm.IRModule, target: tvm.target.Target, database) -> list[TaskTime]:
    """Every task of ``module`` (after the stock pipeline's fusion) with its record's time."""
    from tvm.s_tir import meta_schedule as ms

    found = []
    for task in ms.relax_integration.extract_tasks(module, target):
        mod = task.dispatched[0]
        known = database.has_workload(mod)
        record = database.query_tuning_record(mod, target, task.task_name) if known else None
        mean_us = mean_seconds(record.run_secs) * 1e6 if record is not None and record.run_secs else None
        shapes = [[int(d) for d in param.shape] for param in mod["main"].params]
        found.append(TaskTime(task.task_name, int(task.weight), mean_us, shapes))
    return sorted(found, key=lambda t: -t.total_us)


def open_database(folder: Path):
    """A MetaSchedule database read from a copy of ``folder`` (queries may write to it)."""
    from tvm.s_tir import meta_schedule as ms

    copy = Path(tempfile.mkdtemp(prefix="fcm-record-times-")) / "db"
    shutil.copytree(folder, copy)
    if replays_tensor_intrinsics(copy):  # fp16 records replay tensor-core schedules
        register_tensor_intrinsics()
    return ms.database.JSONDatabase(work_dir=str(copy))


def records_folder(records: str, model: str, batch: int, precision: str) -> Path:
    """A database folder, or the stock records shipped for the case on GPU ``records``."""
    if Path(records).is_dir():
        return unpacked(Path(records))
    folder = shipped_records(records, model, batch, precision, "none")
    if folder is None:
        raise FcmError(f"no {records} records ship for {model} at batch {batch} in {precision}")
    return folder


def format_table(label: str, times: list[TaskTime], top: int) -> str:
    known = sum(t.total_us for t in times)
    missing = [t.name for t in times if t.us_per_call is None]
    lines = [f"== {label}: {len(times)} tasks, {known:.0f} us with records, {len(missing)} without"]
    for t in times[:top]:
        if t.us_per_call is not None:
            shapes = " ".join("x".join(map(str, shape)) for shape in t.shapes)
            cost = f"{t.total_us:8.1f} us  {t.calls:2d} x {t.us_per_call:7.1f}"
            lines.append(f"  {cost}  {t.name:44s} {shapes}")
    if missing:
        lines.append("  without records: " + ", ".join(sorted(missing)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a zoo model name")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    parser.add_argument("--gpu", default="h100", help="the GPU the build plans for (default: h100)")
    parser.add_argument("--records", help="the shipped records' GPU (default: --gpu) or a database folder")
    parser.add_argument("--top", type=int, default=25, help="tasks listed per graph (default: 25)")
    parser.add_argument("--json", help="also write every task as JSON here")
    args = parser.parse_args(argv)
    folder = records_folder(args.records or args.gpu, args.model, args.batch, args.precision)
    resolved = resolve_target(args.gpu)
    database = open_database(folder)
    proto = as_precision(build_model(args.model, batch=args.batch), args.precision)
    report = {"model": args.model, "batch": args.batch, "precision": args.precision, "records": str(folder)}
    for fuse in ("none", "auto"):
        module, _ = tuning_module(proto, resolved, fuse, cuda_graph=True)  # as a graph build with records
        times = task_times(module, resolved.tvm_target, database)
        report[fuse] = [{**asdict(t), "total_us": t.total_us} for t in times]
        print(format_table(f"{args.model} b{args.batch} {args.precision} fuse={fuse}", times, args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
