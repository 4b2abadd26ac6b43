"""``fcm-tvm tune``: MetaSchedule (XGBoost cost model) over everything that is not an FCM kernel.

FCM kernels carry ``tirx.is_scheduled`` and are skipped by task extraction, so tuning the fused
graph tunes exactly the stock kernels around them; tuning with ``fuse="none"`` gives the
stock-tuned baseline. The work directory is a MetaSchedule JSON database that ``compile`` and
``bench`` reuse through ``tuning_records=``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import tvm

from .errors import FcmError
from .frontend import ModelLike, graph_inputs, import_onnx, load_onnx
from .pipeline import apply_fusion, tuning_passes
from .target import TargetLike, resolve_target

log = logging.getLogger(__name__)


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
) -> Path:
    """Tune ``model``'s stock kernels for ``target``; return the work directory (the database)."""
    _check_xgboost()
    if trials <= 0:
        raise FcmError("--trials must be positive")
    if resolve_target(target).is_cuda:
        _check_gpu_present()
    module, tvm_target = tuning_module(model, target, fuse, input_shapes)
    if tvm_target.kind.name != "cuda":
        tvm_target = _with_num_cores(tvm_target)
    from tvm.s_tir import meta_schedule as ms

    folder = Path(work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tasks = ms.relax_integration.extract_tasks(module, tvm_target)
    log.info("tuning %d tasks with %d trials", len(tasks), trials)
    ms.relax_integration.tune_relax(
        module,
        {},
        tvm_target,
        str(folder),
        max_trials_global=trials,
        max_trials_per_task=trials_per_task or max(64, trials // max(len(tasks), 1)),
        seed=seed,
    )
    return folder


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
