"""Where fcm-tvm's passes sit in front of TVM's stock Relax pipeline."""

from __future__ import annotations

import json
from dataclasses import dataclass

import tvm

from .target import ResolvedTarget

FUSE_MODES = ("auto", "all", "none")
SPEC_ATTR = "fcm.spec"  # set by the rewrite pass on every fused PrimFunc


@dataclass(frozen=True)
class FusedChain:
    """One chain the rewrite turned into an FCM kernel, as recorded on its PrimFunc."""

    function: str
    spec: dict

    @property
    def kind(self) -> str:
        return self.spec.get("kind", "?")

    def to_json(self) -> dict:
        return {"function": self.function, **self.spec}


def fusion_passes(target: ResolvedTarget, fuse: str) -> list[tvm.transform.Pass]:
    """The passes that fold BatchNorm and rewrite DW/PW chains into FCM kernels."""
    if fuse == "none":
        return []
    from .relay_passes import FoldBatchNorm, FuseDepthwisePointwise, FusePlanner

    if fuse == "all":
        return [FoldBatchNorm(), FuseDepthwisePointwise(target.tvm_target)]
    return [FoldBatchNorm(), FusePlanner(target.tvm_target, target.gpu)]


def apply_fusion(
    module: tvm.IRModule, target: ResolvedTarget, fuse: str
) -> tuple[tvm.IRModule, list[FusedChain]]:
    """Run the fusion passes; return the module and what they fused."""
    for fusion_pass in fusion_passes(target, fuse):
        module = fusion_pass(module)
    return module, fused_chains(module)


def fused_chains(module: tvm.IRModule) -> list[FusedChain]:
    chains = []
    for global_var, function in module.functions.items():
        attrs = function.attrs
        if attrs is not None and SPEC_ATTR in attrs:
            chains.append(FusedChain(global_var.name_hint, json.loads(str(attrs[SPEC_ATTR]))))
    return sorted(chains, key=lambda chain: chain.function)


def fcm_relax_pipeline(fuse: str = "auto", gpu: str | None = None) -> tvm.transform.Pass:
    """A Relax pipeline: fold BatchNorm and fuse DW/PW chains for the current target, then stock.

    The target is the one ``tvm.compile`` enters (``Target.current()``); ``gpu`` overrides the GPU
    the planner prices for (by default the target's, see :mod:`fcm_tvm.target`).
    """
    from .gpus import get_gpu
    from .target import resolve_target

    @tvm.transform.module_pass(opt_level=0, name="FcmPipeline")
    def run(module: tvm.IRModule, _context) -> tvm.IRModule:
        target = tvm.target.Target.current(allow_none=False)
        resolved = resolve_target(target)
        if gpu is not None:
            resolved = ResolvedTarget(resolved.tvm_target, get_gpu(gpu))
        module, _ = apply_fusion(module, resolved, fuse)
        return tvm.relax.get_default_pipeline(target)(module)

    return run
