"""``fcm-tvm tune``: MetaSchedule (XGBoost cost model) over everything that is not an FCM kernel.

FCM kernels carry ``tirx.is_scheduled`` and are skipped by task extraction, so tuning the fused
graph tunes exactly the stock kernels around them; tuning with ``fuse="none"`` gives the
stock-tuned baseline. The work directory is a MetaSchedule JSON database that ``compile`` and
``bench`` reuse through ``tuning_records=``.

Tuning goes where the time goes: every task's default schedule is measured first, and the
tasks are tuned one at a time, slowest first, each finished and recorded before the next starts.
MetaSchedule has no time budget and records a batch only when it comes back to its task, so a
run cut short used to lose its work; here ``time_budget_s`` stops between tasks, and a run cut
short loses at most the task in hand. Every run writes ``tuning_summary.json`` and
``tasks.json`` into the work directory (:mod:`.tuning_summary`, :mod:`.tuning_progress`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import tvm

from . import cuda_postproc, records
from .default_schedules import is_default, mean_seconds
from .design_space import space_for
from .errors import FcmError, last_line
from .frontend import ModelLike, graph_inputs, import_onnx, load_onnx
from .in_process_builder import InProcessBuilder
from .pipeline import apply_fusion, register_tensor_intrinsics, tuning_passes
from .precision import as_precision
from .target import TargetLike, resolve_target
from .tuning_progress import TaskProgress
from .tuning_summary import SUMMARY, log_offsets, summarize, timestamp, write_json

log = logging.getLogger(__name__)

TRIALS_PER_ITER = 32  # MetaSchedule's batch: candidates built and measured together
RUN_TIMEOUT_S = 30.0  # per candidate measured
SEARCH_STRATEGIES = ("evolutionary", "replay-trace")
ALL_RECORDS = 1 << 20  # get_top_k's k for every record of a workload


def tuning_module(
    model: ModelLike,
    target: TargetLike,
    fuse: str = "auto",
    input_shapes=None,
    precision: str | None = None,
    cuda_graph: bool = False,
) -> tuple[tvm.IRModule, tvm.target.Target]:
    """The module MetaSchedule sees: imported, fused as ``compile`` fuses a build that has tuning
    records (``cuda_graph``: and captures its launches; the planner may fuse other chains then),
    legalized and FuseTIR'd: what is tuned is what that build runs around its FCMs."""
    resolved = resolve_target(target)
    proto = as_precision(load_onnx(model), precision)
    module = import_onnx(proto, graph_inputs(proto, input_shapes))
    module, _ = apply_fusion(module, resolved, fuse, tuned=True, cuda_graph=cuda_graph)
    with resolved.tvm_target:
        module = tvm.transform.Sequential(tuning_passes(resolved.tvm_target))(module)
    return module, resolved.tvm_target


def tune(
    model: ModelLike,
    target: TargetLike = "cuda",
    *,
    work_dir: str | os.PathLike,
    trials: int = 2000,
    trials_per_task: int = 64,
    focus: float = 0.9,
    time_budget_s: float | None = None,
    fuse: str = "auto",
    input_shapes=None,
    seed: int | None = 0,
    run_timeout_s: float | None = None,
    search: str = "evolutionary",
    precision: str | None = None,
    start_from: str | os.PathLike | None = None,
    cuda_graph: bool = False,
) -> Path:
    """Tune ``model``'s stock kernels for ``target``; return the work directory (the database).

    First every task's default schedule (dlight's on CUDA) is measured and ends up in the database
    (:mod:`.default_schedules`), so the database never picks a kernel slower than stock. Then the
    tasks that take ``focus`` of the default time are tuned, slowest first (default time x
    occurrences), ``trials_per_task`` candidates each, one task at a time with one XGBoost cost
    model shared by all, until ``trials`` candidates or ``time_budget_s`` seconds are spent. Each
    task's records are in the database as soon as it is done, and the work directory remembers
    what is done (``tasks.json``): running the same command again goes on where the last run
    stopped. ``search``: "evolutionary" (XGBoost-guided) or "replay-trace" (random samples).
    ``precision``: as for ``compile``; tune in the precision you will compile in.
    ``start_from``: a database (a work directory or shipped records) to copy into a new
    ``work_dir`` first; the tasks it holds tuned records of are not tuned again
    (:meth:`~.tuning_progress.TaskProgress.adopt`). ``cuda_graph``: tune around the FCMs of a
    build with CUDA graphs (``fuse`` auto: the planner weighs launches otherwise).
    Writes ``tuning_summary.json`` into the work directory, also on failure.
    """
    if start_from is not None:
        _check_start_from(Path(start_from), Path(work_dir))
    _check_xgboost()
    _check_counts(trials, trials_per_task, focus, time_budget_s)
    if search not in SEARCH_STRATEGIES:
        raise FcmError(f"unknown search '{search}': use {' or '.join(SEARCH_STRATEGIES)}")
    resolved = resolve_target(target)
    if resolved.is_cuda:
        _check_gpu_present()
    started = time.time()
    module, tvm_target = tuning_module(model, target, fuse, input_shapes, precision, cuda_graph)
    if tvm_target.kind.name != "cuda":
        tvm_target = _with_num_cores(tvm_target)
    environment = _prepare_worker_environment(tvm_target.kind.name)
    if tvm_target.kind.name == "cuda":
        cuda_postproc.install()  # 10-15% of fp16 candidates build only with it
    from tvm.s_tir import meta_schedule as ms

    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if start_from is not None:
        _copy_database(Path(start_from), folder)
    tasks = ms.relax_integration.extract_tasks(module, tvm_target)
    if not tasks:
        raise FcmError("nothing to tune: every kernel of the model is already scheduled")
    run_timeout_s = run_timeout_s or RUN_TIMEOUT_S
    builder, runner = InProcessBuilder(), _runner(run_timeout_s)
    progress = TaskProgress.load(folder)
    progress.measure_defaults(tasks, tvm_target, builder, runner)
    chosen = progress.focus(tasks, focus)
    plan = _plan(model, tvm_target, fuse, tasks, chosen, focus, trials, trials_per_task, time_budget_s)
    plan["cuda_graph"] = cuda_graph
    plan.update(started=timestamp(started), environment=environment, log_offsets=log_offsets(folder / "logs"))
    plan["runner"] = {"timeout_s": run_timeout_s, **_EVALUATOR}
    write_json(folder / SUMMARY, plan)
    log.info("tuning %d of %d tasks, %d trials each", len(chosen), len(tasks), trials_per_task)
    status, stop = "failed", _StopSignals()
    try:
        with stop:
            session = _Session(folder, tvm_target, builder, runner, search, seed)
            if start_from is not None:
                plan["adopted"] = progress.adopt(chosen, session.tuned_seconds)
                write_json(folder / SUMMARY, plan)
                log.info("%d tasks tuned in %s: not tuned again", plan["adopted"], start_from)
            budget = _Budget(trials, trials_per_task, started + (time_budget_s or math.inf))
            session.tune_in_order(progress, tasks, chosen, budget)
        status = "finished"
    except KeyboardInterrupt:
        status = f"interrupted ({stop.received})" if stop.received else "interrupted"
        raise
    except Exception as error:
        if stop.received:  # the interrupt surfaced through MetaSchedule's C++ as some other error
            status = f"interrupted ({stop.received})"
            raise KeyboardInterrupt from None
        status = f"failed: {last_line(str(error))}"
        raise FcmError(f"MetaSchedule failed: {last_line(str(error))[:300]}") from None
    finally:
        summary = summarize(folder, status=status, elapsed_s=time.time() - started)
        print(f"[fcm-tvm] {summary.line()}", file=sys.stderr, flush=True)
    return folder


def _check_start_from(source: Path, folder: Path) -> None:
    """A starting database must exist and go into a work directory without one (MetaSchedule's
    files index workloads by line: two databases do not simply concatenate)."""
    if not records.has_records(source):
        raise FcmError(f"{source}: no tuning records to start from (a database folder, plain or packed)")
    if any((folder / name).is_file() for name in (records.DATABASE, records.WORKLOADS)):
        raise FcmError(f"{folder} already holds a database: go on tuning it without a starting database")


def _copy_database(source: Path, folder: Path) -> None:
    """Copy the database at ``source`` (plain or packed, :mod:`.records`) into ``folder``."""
    plain = records.unpacked(source)
    for name in (records.DATABASE, records.WORKLOADS):
        shutil.copyfile(plain / name, folder / name)


@dataclass
class _Budget:
    """What a run may still spend: candidates in all, candidates per task, and a deadline."""

    trials_left: int
    per_task: int
    deadline: float


class _Session:
    """One database and one XGBoost cost model, shared by the tasks tuned one after the other."""

    def __init__(self, folder: Path, target, builder, runner, search: str, seed: int | None) -> None:
        from tvm.s_tir import meta_schedule as ms

        self.folder, self.target, self.builder, self.runner = folder, target, builder, runner
        self.search, self.seed = search, seed
        register_tensor_intrinsics()  # a database started from fp16 records holds tensor-core traces
        self.database = ms.database.JSONDatabase(work_dir=str(folder))
        self.cost_model = ms.cost_model.CostModel.create("xgb", num_tuning_cores=os.cpu_count() or 1)
        self.longest_task_s = 0.0

    def tune_in_order(self, progress: TaskProgress, tasks: list, chosen: list, budget: _Budget) -> None:
        """Tune ``chosen`` in order, skipping what is done, while ``budget`` lasts; every task of
        ``tasks`` ends with its default record in the database (the others' go in first)."""
        progress.commit_defaults([task for task in tasks if task not in chosen], self.database, self.target)
        for task in chosen:
            if budget.trials_left <= 0 or not self.fits(budget.deadline):
                break
            if progress.tuned(task):
                continue
            space = space_for(task, self.target)
            if space is None:
                continue
            count = min(budget.per_task, budget.trials_left)
            self.tune_task(task, count, space)
            budget.trials_left -= count
            progress.commit_defaults([task], self.database, self.target)
            progress.mark_tuned(task, count, self.best_seconds(task))
        progress.commit_defaults(tasks, self.database, self.target)

    def fits(self, deadline: float) -> bool:
        """Whether a task as long as the longest so far ends before ``deadline``."""
        return time.time() + self.longest_task_s < deadline

    def tune_task(self, task, trials: int, space) -> None:
        from tvm.s_tir import meta_schedule as ms

        began = time.time()
        contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
            extracted_tasks=[task],
            work_dir=str(self.folder),
            space=space,
            strategy=self.search,
            seed=self.seed,
        )
        ms.tune.tune_tasks(
            tasks=contexts,
            task_weights=weights,
            work_dir=str(self.folder),
            max_trials_global=trials,
            max_trials_per_task=trials,
            num_trials_per_iter=min(TRIALS_PER_ITER, trials),
            builder=self.builder,
            runner=self.runner,
            database=self.database,
            cost_model=self.cost_model,
        )
        self.longest_task_s = max(self.longest_task_s, time.time() - began)

    def best_seconds(self, task) -> float | None:
        """The fastest run time in the database for ``task`` (None: nothing ran)."""
        workload = self.database.commit_workload(task.dispatched[0])
        best = self.database.get_top_k(workload, 1)
        return mean_seconds(best[0].run_secs) if best and best[0].run_secs else None

    def tuned_seconds(self, task) -> float | None:
        """The fastest run time of the database's records for ``task`` on this kind of target that
        are not its default schedule (None: it holds none, so the task was never tuned into it)."""
        workload = self.database.commit_workload(task.dispatched[0])
        fastest_first = self.database.get_top_k(workload, ALL_RECORDS)
        kind = self.target.kind.name
        tuned = (
            record
            for record in fastest_first
            if record.run_secs and record.target.kind.name == kind and not is_default(record)
        )
        return next((mean_seconds(record.run_secs) for record in tuned), None)


def _plan(model, target, fuse, tasks, chosen, focus, trials, per_task, time_budget_s) -> dict:
    """The summary's head: what this run sets out to do."""
    return {
        "format": "fcm-tvm-tuning-summary/2",
        "status": "running",
        "target": str(target),
        "fuse": fuse,
        "model": str(model) if isinstance(model, str | os.PathLike) else load_onnx(model).graph.name,
        "tasks": len(tasks),
        "focus": focus,
        "task_names": [task.task_name for task in chosen],
        "trials": trials,
        "trials_per_task": per_task,
        "trials_per_iter": min(TRIALS_PER_ITER, per_task, trials),
        "time_budget_s": time_budget_s,
        "builder": {"kind": "in-process (see fcm_tvm.in_process_builder)"},
    }


def _runner(timeout_s: float):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(**_EVALUATOR)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator)


def _check_counts(trials: int, trials_per_task: int, focus: float, time_budget_s: float | None) -> None:
    if trials <= 0:
        raise FcmError("--trials must be positive")
    if trials_per_task <= 0:
        raise FcmError("--trials-per-task must be positive")
    if not 0 < focus <= 1:
        raise FcmError(f"--focus is a share of the model's time, in (0, 1], not {focus}")
    if time_budget_s is not None and time_budget_s <= 0:
        raise FcmError("--time-budget must be positive")


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
