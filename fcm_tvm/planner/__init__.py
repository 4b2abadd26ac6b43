"""FusePlanner: a cost model of global-memory traffic that decides which DW/PW chains to fuse.

:mod:`.cost_model` prices a chain unfused (one stock kernel per stage) and as one FCM kernel
with given tiles; :mod:`.tiles` is the tile search space; :mod:`.planner` decides per chain and
:mod:`.report` prints or serialises the plan. See docs/planner.md for the formulas.
"""

from .cost_model import ChainEstimate, KernelEstimate, Traffic, estimate_fused, estimate_unfused
from .planner import Decision, Plan, plan_chain, plan_chains
from .report import format_plan, format_rewrite, plan_dict, to_json
from .tiles import candidate_tiles, tile_grid

__all__ = [
    "ChainEstimate",
    "Decision",
    "KernelEstimate",
    "Plan",
    "Traffic",
    "candidate_tiles",
    "estimate_fused",
    "estimate_unfused",
    "format_plan",
    "format_rewrite",
    "plan_chain",
    "plan_chains",
    "plan_dict",
    "tile_grid",
    "to_json",
]
