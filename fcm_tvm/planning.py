"""``fcm_tvm.plan``: FusePlanner's decision for every DW/PW chain of a model, without compiling it."""

from __future__ import annotations

from dataclasses import dataclass

from .frontend import ModelLike, graph_inputs, import_onnx, load_onnx
from .gpus import GpuSpec, get_gpu
from .precision import as_precision


@dataclass(frozen=True)
class ModelPlan:
    """The planner's decisions for one model on one GPU."""

    gpu: GpuSpec
    plan: object  # fcm_tvm.planner.Plan

    def table(self) -> str:
        from .planner import format_plan

        return format_plan(self.plan)

    def to_json(self) -> dict:
        """Every decision with both estimates, and the totals (:func:`~fcm_tvm.planner.plan_dict`)."""
        from .planner import plan_dict

        return plan_dict(self.plan)


def plan(
    model: ModelLike,
    gpu: str | GpuSpec = "h100",
    *,
    input_shapes=None,
    tuned: bool = False,
    cuda_graph: bool = False,
    precision: str | None = None,
) -> ModelPlan:
    """Import ``model``, find its fusable chains and let FusePlanner price each one for ``gpu``;
    ``tuned``, ``cuda_graph``: as for a build with tuning records, with CUDA graphs (see
    ``plan_chain``); ``precision``: as for ``compile``."""
    from .planner import plan_chains
    from .relay_passes import find_chains

    gpu_spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    proto = as_precision(load_onnx(model), precision)
    module = import_onnx(proto, graph_inputs(proto, input_shapes))
    return ModelPlan(gpu_spec, plan_chains(find_chains(module), gpu_spec, tuned=tuned, cuda_graph=cuda_graph))
