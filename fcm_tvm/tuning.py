"""``fcm-tvm tune``: MetaSchedule (XGBoost cost model) over everything that is not an FCM kernel.

FCM kernels carry ``tirx.is_scheduled`` and are skipped by task extraction, so tuning the fused
graph tunes exactly the stock kernels around them; tuning with ``fuse="none"`` gives the
stock-tuned baseline. The work directory is a MetaSchedule JSON database that ``compile`` and
``bench`` reuse through ``tuning_records=``.

MetaSchedule has no time budget: ``trials`` (all tasks together) and ``trials_per_task`` bound
the work, and tasks are tuned largest first (FLOPs x occurrences), so a run cut short by a
``timeout`` still leaves a usable database for the kernels that matter most. Every run writes
``tuning_summary.json`` into the work directory: what was tuned, how many candidates built,
ran or failed, the first distinct builder/runner errors and how long the batches took.
``python -m fcm_tvm.tuning WORK_DIR...`` rewrites it from the logs, e.g. after a kill.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import tvm

from .errors import FcmError
from .frontend import ModelLike, graph_inputs, import_onnx, load_onnx
from .in_process_builder import InProcessBuilder
from .pipeline import apply_fusion, tuning_passes
from .records import DATABASE as RECORDS
from .records import FAILED_RUN_SECS, WORKLOADS
from .target import TargetLike, resolve_target

log = logging.getLogger(__name__)

SUMMARY = "tuning_summary.json"
TRIALS_PER_ITER = 64  # MetaSchedule's batch: candidates built and measured together
RUN_TIMEOUT_S = {"cuda": 30.0, "cpu": 30.0}
MAX_ERRORS = 5
SEARCH_STRATEGIES = ("evolutionary", "replay-trace")


def tuning_module(
    model: ModelLike, target: TargetLike, fuse: str = "auto", input_shapes=None
) -> tuple[tvm.IRModule, tvm.target.Target]:
    """The module MetaSchedule sees: imported, fused as ``compile`` would, legalized and FuseTIR'd."""
    resolved = resolve_target(target)
    proto = load_onnx(model)
    module = import_onnx(proto, graph_inputs(proto, input_shapes))
    module, _ = apply_fusion(module, resolved, fuse)
    with resolved.tvm_target:
        module = tvm.transform.Sequential(tuning_passes(resolved.tvm_target))(module)
    return module, resolved.tvm_target


def tune(
    model: ModelLike,
    target: TargetLike = "cuda",
    *,
    work_dir: str | os.PathLike,
    trials: int = 2000,
    trials_per_task: int | None = None,
    fuse: str = "auto",
    input_shapes=None,
    seed: int | None = 0,
    run_timeout_s: float | None = None,
    search: str = "evolutionary",
) -> Path:
    """Tune ``model``'s stock kernels for ``target``; return the work directory (the database).

    ``trials``: candidates measured over all tasks; ``trials_per_task``: at most this many per
    task (default: ``trials`` spread over the tasks, at least one batch of 64). Tasks are tuned
    largest first. ``search``: MetaSchedule's strategy, "evolutionary" (XGBoost-guided; ~10 s of
    search per batch) or "replay-trace" (random samples of the design space; for short runs).
    Writes ``tuning_summary.json`` into the work directory, also on failure.
    """
    _check_xgboost()
    if trials <= 0:
        raise FcmError("--trials must be positive")
    if trials_per_task is not None and trials_per_task <= 0:
        raise FcmError("--trials-per-task must be positive")
    if search not in SEARCH_STRATEGIES:
        raise FcmError(f"unknown search '{search}': use {' or '.join(SEARCH_STRATEGIES)}")
    resolved = resolve_target(target)
    if resolved.is_cuda:
        _check_gpu_present()
    started = time.time()
    module, tvm_target = tuning_module(model, target, fuse, input_shapes)
    kind = "cuda" if tvm_target.kind.name == "cuda" else "cpu"
    if kind == "cpu":
        tvm_target = _with_num_cores(tvm_target)
    environment = _prepare_worker_environment(kind)
    from tvm.s_tir import meta_schedule as ms

    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = sorted(ms.relax_integration.extract_tasks(module, tvm_target), key=lambda task: -_task_cost(task))
    if not tasks:
        raise FcmError("nothing to tune: every kernel of the model is already scheduled")
    per_task = trials_per_task or max(TRIALS_PER_ITER, trials // len(tasks))
    per_iter = min(TRIALS_PER_ITER, per_task, trials)
    builder_config = {"kind": "in-process (see fcm_tvm.in_process_builder)"}
    runner_config = {"timeout_s": run_timeout_s or RUN_TIMEOUT_S[kind], **_EVALUATOR}
    plan = {
        "format": "fcm-tvm-tuning-summary/1",
        "status": "running",
        "started": _timestamp(started),
        "target": str(tvm_target),
        "fuse": fuse,
        "model": str(model) if isinstance(model, str | os.PathLike) else load_onnx(model).graph.name,
        "tasks": len(tasks),
        "task_names": [task.task_name for task in tasks],
        "trials": trials,
        "trials_per_task": per_task,
        "trials_per_iter": per_iter,
        "builder": builder_config,
        "runner": runner_config,
        "environment": environment,
    }
    _write_json(folder / SUMMARY, plan)
    log.info("tuning %d tasks with %d trials (%d per task)", len(tasks), trials, per_task)
    status, stop = "failed", _StopSignals()
    try:
        with stop:
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                extracted_tasks=tasks, work_dir=str(folder), strategy=search, seed=seed
            )
            ms.tune.tune_tasks(
                tasks=contexts,
                task_weights=weights,
                work_dir=str(folder),
                max_trials_global=trials,
                max_trials_per_task=per_task,
                num_trials_per_iter=per_iter,
                builder=InProcessBuilder(),
                runner=ms.runner.LocalRunner(
                    timeout_sec=runner_config["timeout_s"],
                    evaluator_config=ms.runner.EvaluatorConfig(**_EVALUATOR),
                ),
            )
        status = "finished"
    except KeyboardInterrupt:
        status = f"interrupted ({stop.received})" if stop.received else "interrupted"
        raise
    except Exception as error:
        if stop.received:  # the interrupt surfaced through MetaSchedule's C++ as some other error
            status = f"interrupted ({stop.received})"
            raise KeyboardInterrupt from None
        status = f"failed: {_last_line(str(error))}"
        raise FcmError(f"MetaSchedule failed: {_last_line(str(error))[:300]}") from None
    finally:
        summary = summarize(folder, status=status, elapsed_s=time.time() - started)
        print(f"[fcm-tvm] {summary.line()}", file=sys.stderr, flush=True)
    return folder


class _StopSignals:
    """Within the block, SIGINT and SIGTERM (``timeout``'s signals) raise KeyboardInterrupt and are noted.

    MetaSchedule's C++ loop may turn that interrupt into an error of its own; the note tells them apart.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, _frame) -> None:
        self.received = signal.Signals(signum).name
        raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# Each candidate is timed `repeat` times over `number` runs, stretched to `min_repeat_ms` (MetaSchedule: 100).
_EVALUATOR = {"number": 3, "repeat": 1, "min_repeat_ms": 50, "enable_cpu_cache_flush": False}


def _task_cost(task) -> float:
    """FLOPs x occurrences: the order in which tasks get their first batch."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(task.dispatched[0])) * int(task.weight)
    except Exception:  # a workload the estimator does not know keeps its place at the end
        return 0.0


def _prepare_worker_environment(kind: str) -> dict:
    """Settle what MetaSchedule's worker processes inherit; return it for the summary.

    MetaSchedule's runner measures in worker processes that ``import tvm``. tvm-ffi then
    imports torch if installed and may JIT-build a torch DLPack add-on, per process: turn that
    off (tuning never passes torch tensors). Candidates are built on threads of this process
    (:mod:`.in_process_builder`) and compiled as they are built: with NVRTC, TVM's default, the
    compilation holds the GIL (measured on the H100 host: 16 candidates in 20.7 s on one thread,
    18.0 s on sixteen), with nvcc it is a subprocess and the threads overlap, so nvcc is chosen
    where it is installed and ``TVM_CUDA_COMPILE_MODE`` does not say otherwise.
    """
    os.environ.setdefault("TVM_FFI_DISABLE_TORCH_C_DLPACK", "1")
    environment: dict = {
        "cpu_count": os.cpu_count(),
        "TVM_FFI_DISABLE_TORCH_C_DLPACK": os.environ["TVM_FFI_DISABLE_TORCH_C_DLPACK"],
    }
    if kind == "cuda":
        bindings = _importable("cuda.bindings.nvrtc")
        nvcc = shutil.which("nvcc") or _cuda_home_nvcc()
        if "TVM_CUDA_COMPILE_MODE" not in os.environ and nvcc:
            os.environ["TVM_CUDA_COMPILE_MODE"] = "nvcc"
            log.info("candidates are compiled with nvcc, in parallel")
        environment.update(
            cuda_compile_mode=os.environ.get("TVM_CUDA_COMPILE_MODE", "nvrtc (TVM's default)"),
            cuda_bindings=bindings,
            nvcc=nvcc,
        )
    return environment


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:
        return False


def _cuda_home_nvcc() -> str | None:
    candidate = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "bin" / "nvcc"
    return str(candidate) if candidate.is_file() else None


# --- the summary ---------------------------------------------------------------------------

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) \[(\w+)\] (.*)$")
TRIAL = re.compile(r"\[Task #(\d+): ([^\]]*)\] Trial #(\d+): (GFLOPs|Error in (building|running))")
SCRIPT_START = ("# from tvm.script", "@I.ir_module", "@T.prim_func", "# fmt: off")


@dataclass
class TuningSummary:
    """What one tuning run did, read back from its work directory."""

    folder: Path
    data: dict = field(default_factory=dict)

    def line(self) -> str:
        d, c = self.data, self.data.get("candidates", {})
        tuned = f"{d.get('tasks_tuned', 0)}/{d.get('tasks', '?')} tasks"
        text = (
            f"{self.folder.name}: {d.get('status', '?')}, {tuned} tuned, {c.get('measured', 0)} candidates: "
            f"{c.get('ok', 0)} ok, {c.get('build_failed', 0)} failed to build, "
            f"{c.get('run_failed', 0)} failed to run"
        )
        if d.get("elapsed_s") is not None:
            text += f", {d['elapsed_s']:.0f} s"
        if d.get("errors"):
            text += f"; first error: {d['errors'][0]['message'].splitlines()[0][:160]}"
        return text

    def to_json(self) -> dict:
        return self.data


def summarize(folder: str | os.PathLike, *, status: str | None = None, elapsed_s: float | None = None):
    """Read ``folder``'s logs and database, (re)write ``tuning_summary.json`` and return it.

    The plan (tasks, trials, builder and runner settings) comes from the summary that ``tune``
    wrote when it started; log lines older than that start are not counted (a work directory
    tuned twice appends to the same logs). Without a status, a run that never reported its end
    counts as interrupted.
    """
    folder = Path(folder)
    previous = _read_json(folder / SUMMARY) or {}
    since = previous.get("started")
    data = {**previous}
    data["status"] = status or (
        previous["status"] if previous.get("status", "running") != "running" else "interrupted"
    )
    if elapsed_s is not None:
        data["elapsed_s"] = round(elapsed_s, 1)
    _repair_records(folder / RECORDS)
    trials, errors = _read_trials(folder / "logs", since)
    data["candidates"] = {
        "measured": len(trials),
        "ok": sum(1 for t in trials if t["result"] == "ok"),
        "build_failed": sum(1 for t in trials if t["result"] == "build"),
        "run_failed": sum(1 for t in trials if t["result"] == "run"),
    }
    data["tasks_tuned"] = len({t["task"] for t in trials if t["result"] == "ok"})
    data["errors"] = errors
    data["batches"] = _read_batches(folder / "logs", since)
    data["database"] = _read_database(folder)
    summary = TuningSummary(folder, data)
    _write_json(folder / SUMMARY, data)
    return summary


def _log_records(log_dir: Path, since: str | None):
    """(time, text) of every log record in ``log_dir`` files, multi-line messages joined."""
    for path in sorted(log_dir.glob("*.log")) if log_dir.is_dir() else []:
        current: list | None = None
        for raw in path.read_text(errors="replace").splitlines():
            match = LOG_LINE.match(raw)
            if match:
                if current is not None:
                    yield path.name, current[0], "\n".join(current[1])
                current = [match.group(1), [match.group(3)]]
            elif current is not None:
                current[1].append(raw)
        if current is not None:
            yield path.name, current[0], "\n".join(current[1])


def _after(stamp: str, since: str | None) -> bool:
    return since is None or stamp >= since  # same format, so string order is time order


def _read_trials(log_dir: Path, since: str | None) -> tuple[list[dict], list[dict]]:
    trials, errors = [], {}
    for name, stamp, text in _log_records(log_dir, since):
        if "task_scheduler" in name or not _after(stamp, since):
            continue
        match = TRIAL.search(text)
        if match is None:
            continue
        task, stage = match.group(2), {"building": "build", "running": "run"}.get(match.group(5))
        trials.append({"task": task, "result": stage or "ok"})
        if stage:
            message = _error_message(text[match.end() :])
            key = (stage, re.sub(r"\d+", "N", message.splitlines()[-1] if message else ""))
            first = {"stage": stage, "count": 0, "message": message, "first_task": task}
            entry = errors.setdefault(key, first)
            entry["count"] += 1
    return trials, list(errors.values())[:MAX_ERRORS]


def _error_message(text: str) -> str:
    """The error part of a failed trial's log record: before the TIR script and the trace."""
    lines = []
    for line in text.lstrip(":").strip("\n").splitlines():
        if line.lstrip().startswith(SCRIPT_START):
            break
        lines.append(line.rstrip())
    lines = [line for line in lines if line.strip()]
    if len(lines) > 12:  # a traceback: its head and the lines that name the error
        lines = [*lines[:3], "...", *lines[-8:]]
    return "\n".join(lines)[:1500]


def _read_batches(log_dir: Path, since: str | None) -> dict:
    """Seconds spent building and measuring, from the task scheduler's timestamps."""
    build_s, run_s, count = 0.0, 0.0, 0
    build_start = run_start = None
    for name, stamp, text in _log_records(log_dir, since):
        if "task_scheduler" not in name or not _after(stamp, since):
            continue
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp()
        if "to builder" in text:
            build_start, count = moment, count + 1
        elif "to runner" in text and build_start is not None:
            build_s += moment - build_start
            build_start, run_start = None, moment
        elif "[Updated]" in text and run_start is not None:
            run_s += moment - run_start
            run_start = None
    return {
        "count": count,
        "build_s": build_s,
        "measure_s": run_s,
        "build_s_per_batch": round(build_s / count, 1) if count else None,
    }


def _read_database(folder: Path) -> dict:
    records, valid, best = 0, 0, {}
    path = folder / RECORDS
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            workload, (_trace, run_secs, *_rest) = json.loads(line)
        except (ValueError, TypeError):
            continue
        records += 1
        seconds = [float(s) for s in run_secs or []]
        if seconds and math.isfinite(sum(seconds)) and max(seconds) < FAILED_RUN_SECS:
            valid += 1
            best[workload] = min(best.get(workload, math.inf), sum(seconds) / len(seconds))
    workloads = folder / WORKLOADS
    return {
        "records": records,
        "valid_records": valid,
        "workloads": len(workloads.read_text().splitlines()) if workloads.is_file() else 0,
        "workloads_with_valid_records": len(best),
    }


def _repair_records(path: Path) -> None:
    """Drop a half-written last line (a run killed while MetaSchedule appended to the database)."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines()
    kept = [line for line in lines if _parses(line)]
    if len(kept) != len(lines):
        path.write_text("".join(line + "\n" for line in kept))


def _parses(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(int(seconds)).strftime("%Y-%m-%d %H:%M:%S")


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _with_num_cores(target: tvm.target.Target) -> tvm.target.Target:
    """CPU tuning needs the core count in the target (MetaSchedule reads ``num-cores``)."""
    config = json.loads(str(target))
    config.setdefault("num-cores", os.cpu_count() or 1)
    return tvm.target.Target({key: value for key, value in config.items() if key not in ("tag", "keys")})


def _check_xgboost() -> None:
    try:
        import xgboost  # noqa: F401
    except ImportError:
        raise FcmError("tuning needs xgboost: pip install 'fcm-tvm[tune]'") from None


def _check_gpu_present() -> None:
    from .target import local_cuda_device

    if local_cuda_device() is None:
        raise FcmError("tuning for CUDA measures candidates on a GPU, and this machine has none")


def table(summaries: list[TuningSummary]) -> str:
    """A short Markdown table of several runs, then each run's first error."""
    header = ["work dir", "status", "tasks tuned", "candidates", "ok", "build failed", "run failed"]
    rows = ["| " + " | ".join([*header, "build s/batch", "s"]) + " |", "|---" * (len(header) + 2) + "|"]
    notes = []
    for summary in summaries:
        d, c = summary.data, summary.data.get("candidates", {})
        cells = [
            summary.folder.name,
            d.get("status", "?")[:40],
            f"{d.get('tasks_tuned', 0)}/{d.get('tasks', '?')}",
            *(c.get(key, 0) for key in ("measured", "ok", "build_failed", "run_failed")),
            d.get("batches", {}).get("build_s_per_batch") or "-",
            d.get("elapsed_s") or "-",
        ]
        rows.append("| " + " | ".join(str(cell) for cell in cells) + " |")
        for error in d.get("errors", [])[:2]:
            first = error["message"].splitlines()[0][:200] if error["message"] else "?"
            notes.append(f"{summary.folder.name}: {error['count']} x {error['stage']}: {first}")
    return "\n".join(rows + notes)


def main(argv: list[str] | None = None) -> int:
    """``python -m fcm_tvm.tuning WORK_DIR...``: rewrite each summary from the logs; print a table."""
    folders = [Path(folder) for folder in (sys.argv[1:] if argv is None else argv)]
    if not folders:
        print("usage: python -m fcm_tvm.tuning WORK_DIR...", file=sys.stderr)
        return 2
    missing = [str(folder) for folder in folders if not folder.is_dir()]
    for folder in missing:
        print(f"{folder}: no such work directory", file=sys.stderr)
    print(table([summarize(folder) for folder in folders if folder.is_dir()]))
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
