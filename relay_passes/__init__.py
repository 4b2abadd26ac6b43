"""Relax passes that fold BatchNorm and rewrite DW/PW chains into fused FCM kernels.

Run them on an imported model before TVM's stock pipeline::

    mod = FoldAndFuse(FusePlanner(target, "h100"))(mod)   # where the cost model says it pays
    mod = FoldAndFuse(FuseDepthwisePointwise(target))(mod)  # or: every supported chain
    mod = FuseGatedPointwise(target)(mod)  # experimental: squeeze-excitation + its project PW
    mod = FuseSqueezeExcite(target)(mod)  # squeeze-excitation, means to product: one call

FoldAndFuse folds BatchNorm only where a chain is fused (``FoldBatchNorm()`` folds everywhere).

What is matched and what is rejected is described in ``docs/passes.md``.
"""

from .chain import Unsupported, chain_spec
from .fold_batchnorm import FoldBatchNorm
from .fold_for_fusion import FoldAndFuse
from .fuse_dw_pw import FuseDepthwisePointwise, select_chains
from .fuse_gated_pw import FuseGatedPointwise
from .fuse_planner import FusePlanner, find_chains, fused_decisions
from .fuse_squeeze_excite import FuseSqueezeExcite, excite_steps
from .record import EXCITE_ATTR, SPEC_ATTR, spec_from_record

__all__ = [
    "EXCITE_ATTR",
    "SPEC_ATTR",
    "FoldAndFuse",
    "FoldBatchNorm",
    "FuseDepthwisePointwise",
    "FuseGatedPointwise",
    "FusePlanner",
    "FuseSqueezeExcite",
    "Unsupported",
    "chain_spec",
    "excite_steps",
    "find_chains",
    "fused_decisions",
    "select_chains",
    "spec_from_record",
]
