"""``fcm_tvm.plan``: FusePlanner's decision for every DW/PW chain of a model, without compiling it."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import cache, partial

from .frontend import ModelLike, graph_inputs, import_onnx, load_onnx
from .gpus import GpuSpec, get_gpu
from .precision import as_precision


@dataclass(frozen=True)
class ModelPlan:
    """The planner's decisions for one model on one GPU: ``plan`` of every whole chain, and
    ``fused``, the decisions of what the rewrite then fuses (whole chains, and sub-chains in
    place of declined PW->DW->PW blocks)."""

    gpu: GpuSpec
    plan: object  # fcm_tvm.planner.Plan
    fused: tuple = ()  # of fcm_tvm.planner.Decision
    excites: tuple = ()  # of fcm_tvm.schedules.squeeze_excite.SqueezeExcite, fused without the planner

    def table(self) -> str:
        from .planner import format_plan, format_rewrite

        return f"{format_plan(self.plan)}\n\n{format_rewrite(self.fused)}{self._excite_line()}"

    def to_json(self) -> dict:
        """Every decision with both estimates, the totals and what the rewrite fuses
        (:func:`~fcm_tvm.planner.plan_dict`), and the squeeze-excitation steps."""
        from .planner import plan_dict

        return {**plan_dict(self.plan, self.fused), "excites": [asdict(step) for step in self.excites]}

    def _excite_line(self) -> str:
        if not self.excites:
            return ""
        kernels = len(set(self.excites))
        return (
            f"\n\nsqueeze-excitation: {len(self.excites)} blocks, means included, become one kernel call "
            f"each ({kernels} distinct kernels; FuseSqueezeExcite, no cost model)"
        )


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
    from .planner import Plan, plan_chain
    from .relay_passes import excite_steps, find_chains, fused_decisions

    gpu_spec = get_gpu(gpu) if isinstance(gpu, str) else gpu
    proto = as_precision(load_onnx(model), precision)
    module = import_onnx(proto, graph_inputs(proto, input_shapes))
    # one decision per distinct chain, for both tables (the rewrite asks again for every whole chain)
    decide = cache(partial(plan_chain, gpu=gpu_spec, tuned=tuned, cuda_graph=cuda_graph))
    whole = _numbered(decide(spec) for spec in find_chains(module))
    fused = _numbered(fused_decisions(module, decide))
    return ModelPlan(gpu_spec, Plan(gpu_spec, whole, tuned), fused, tuple(excite_steps(module)))


def _numbered(decisions: Iterable) -> tuple:
    """The decisions named 1, 2, ... in order, as the plan's tables label them."""
    return tuple(replace(decision, name=str(i)) for i, decision in enumerate(decisions, 1))
