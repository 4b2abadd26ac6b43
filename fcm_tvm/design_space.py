"""A design space for each task that MetaSchedule can build, so that one task never ends a run.

In float16, MetaSchedule's two ``MultiLevelTilingTensorCore`` rules fail on the 1x1 convolutions
of squeeze-excitation blocks (a 1x1 feature map, epilogue fused): "Back optional access" from
the first, "the factor at position 0 is -1" from the second; 17 of EfficientNet-B0's 86 tasks
and 11 of MobileNetV3-Large's 80. ``tune_tasks`` raises on the first of them and the whole run
stops. Such a task is tuned with the CUDA rules without tensor cores instead (what fp32 tasks
get anyway); a task whose space cannot be built at all keeps its measured default schedule.
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import last_line

log = logging.getLogger(__name__)

TARGET_RULES = "post-order-apply"  # the target's own rules (tensor cores where it has them)
CUDA_WITHOUT_TENSOR_CORES = "cuda"  # MetaSchedule's preset of rules, postprocs and mutators


def space_for(task, target) -> Any | None:
    """The space generator to tune ``task`` with: the target's rules where they build, else the
    CUDA rules without tensor cores; None where neither builds (the task is not tuned)."""
    error = _space_error(task, target, TARGET_RULES)
    if error is None:
        return TARGET_RULES
    if target.kind.name == "cuda":
        fallback = _without_tensor_cores()
        if _space_error(task, target, fallback) is None:
            log.warning("%s: tuned without tensor cores (their rules fail: %s)", task.task_name, error)
            return fallback  # tuning clones it into the task's own context
    log.warning("%s: not tuned, its design space cannot be built (%s)", task.task_name, error)
    return None


def _without_tensor_cores():
    from tvm.s_tir import meta_schedule as ms

    preset = CUDA_WITHOUT_TENSOR_CORES
    return ms.space_generator.PostOrderApply(sch_rules=preset, postprocs=preset, mutator_probs=preset)


def _space_error(task, target, space) -> str | None:
    """Why ``space`` cannot generate ``task``'s design space (None: it can, at least one trace)."""
    from tvm.s_tir import meta_schedule as ms

    context = ms.TuneContext(
        mod=task.dispatched[0], target=target, space_generator=space, task_name=task.task_name, num_threads=1
    )
    try:
        traces = context.generate_design_space()
    except Exception as error:  # MetaSchedule's C++ raises plain TVMErrors of many kinds
        return last_line(str(error))
    return None if traces else "no schedule in the design space"
