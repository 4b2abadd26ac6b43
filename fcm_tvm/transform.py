"""fcm-tvm's passes as ordinary ``tvm.transform`` passes, for any Relax module.

mod = fcm_tvm.transform.FoldBatchNorm()(mod)
mod = fcm_tvm.transform.FusePlanner(target, gpu)(mod)          # cost-model driven
mod = fcm_tvm.transform.FuseDepthwisePointwise(target)(mod)    # every supported chain
"""

from .relay_passes import FoldBatchNorm, FuseDepthwisePointwise, FusePlanner

__all__ = ["FoldBatchNorm", "FuseDepthwisePointwise", "FusePlanner"]
