"""``fcm-tvm tune``: MetaSchedule (XGBoost cost model) over everything that is not an FCM kernel.

FCM kernels carry ``tirx.is_scheduled`` and are skipped by task extraction, so tuning the fused
graph tunes exactly the stock kernels around them; tuning with ``fuse="none"`` gives the
stock-tuned baseline. The work directory is a MetaSchedule JSON database that ``compile`` and
``bench`` reuse through ``tuning_records=``.

MetaSchedule has no time budget: ``trials`` (all tasks together) and ``trials_per_task`` bound
the work, and tasks are tuned largest first (FLOPs x occurrences). MetaSchedule records a task's
results only when it comes back to that task (or at the end), so a run cut short by a
``timeout`` may leave no records: size runs to finish, or tune ``task_slice`` by slice. Every run
writes ``tuning_summary.json`` into the work directory (:mod:`.tuning_summary`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import tvm

from .errors import FcmError, last_line
from .frontend import ModelLike, graph_inputs, import_onnx, load_onnx
from .in_process_builder import InProcessBuilder
from .pipeline import apply_fusion, tuning_passes
from .target import TargetLike, resolve_target
from .tuning_summary import SUMMARY, summarize, timestamp, write_json

log = logging.getLogger(__name__)

TRIALS_PER_ITER = 64  # MetaSchedule's batch: candidates built and measured together
RUN_TIMEOUT_S = 30.0  # per candidate measured
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
    task_slice: slice | None = None,
) -> Path:
    """Tune ``model``'s stock kernels for ``target``; return the work directory (the database).

    ``trials``: candidates measured over all tasks; ``trials_per_task``: at most this many per
    task (default: ``trials`` spread over the tasks, at least one batch of 64). Tasks are tuned
    largest first. ``search``: MetaSchedule's strategy, "evolutionary" (XGBoost-guided; ~10 s of
    search per batch) or "replay-trace" (random samples of the design space; for short runs).
    ``task_slice``: tune only these of the tasks, largest first (e.g. ``slice(0, 15)``), so that a
    model too big for one sitting is tuned in several runs into the same work directory.
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
    if task_slice is not None:
        total = len(tasks)
        tasks = tasks[task_slice]
        if not tasks:
            raise FcmError(f"--tasks selects none of the model's {total} tasks")
    per_task = trials_per_task or max(TRIALS_PER_ITER, trials // len(tasks))
    per_iter = min(TRIALS_PER_ITER, per_task, trials)
    builder_config = {"kind": "in-process (see fcm_tvm.in_process_builder)"}
    runner_config = {"timeout_s": run_timeout_s or RUN_TIMEOUT_S, **_EVALUATOR}
    plan = {
        "format": "fcm-tvm-tuning-summary/1",
        "status": "running",
        "started": timestamp(started),
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
    write_json(folder / SUMMARY, plan)
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
        status = f"failed: {last_line(str(error))}"
        raise FcmError(f"MetaSchedule failed: {last_line(str(error))[:300]}") from None
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
