"""A plan as a table for people (:func:`format_plan`) and as JSON for tools (:func:`to_json`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from ..schedules.spec import FcmTiles, TensorShape
from .cost_model import ChainEstimate, KernelEstimate, Traffic
from .measured import table_gpus
from .planner import MB, US, Decision, Plan

COLUMNS = ("chain", "kind", "input -> output (NCHW)", "DRAM MB", "", "time us", "", "decision", "fused tiles")
SUBHEADER = ("", "", "", "unfused", "fused", "unfused", "fused", "", "")
RIGHT_ALIGNED = {3, 4, 5, 6}


def shape_text(shape: TensorShape) -> str:
    return "x".join(str(d) for d in shape.as_tuple())


def tiles_text(tiles: FcmTiles | None) -> str:
    if tiles is None:
        return "-"
    return tiles.label


def decision_row(decision: Decision) -> tuple[str, ...]:
    spec, fused = decision.spec, decision.fused
    return (
        decision.name,
        spec.kind,
        f"{shape_text(spec.input)} -> {shape_text(spec.output)}",
        f"{decision.unfused.dram.total / MB:.2f}",
        f"{fused.dram.total / MB:.2f}" if fused else "-",
        f"{decision.unfused.time_s / US:.1f}",
        f"{fused.time_s / US:.1f}" if fused else "-",
        "fuse" if decision.fuse else "keep",
        tiles_text(fused.tiles if fused else None),
    )


def total_row(plan: Plan, count: str | None = None) -> tuple[str, ...]:
    """The plan's chains summed, unfused and as planned; ``count`` says how many (by default, how
    many of them are fused)."""
    return (
        "total",
        "",
        count or f"{plan.fused_count} of {len(plan.decisions)} fused",
        f"{plan.unfused_dram / MB:.2f}",
        f"{plan.planned_dram / MB:.2f}",
        f"{plan.unfused_time_s / US:.1f}",
        f"{plan.planned_time_s / US:.1f}",
        "",
        "",
    )


def format_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if i in RIGHT_ALIGNED else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_plan(plan: Plan) -> str:
    """The plan as a table: per chain its shapes, predicted DRAM traffic and time unfused and fused
    (the best fused candidate, also where declined), the decision and tiles; a total row (its
    fused columns as planned: fused chains fused, the others not); then each decision's reason."""
    gpu = plan.gpu
    title = (
        f"FusePlanner on {gpu.key} ({gpu.sm_count} SMs, {gpu.l2_bytes / 2**20:.0f} MiB L2, "
        f"{gpu.dram_bandwidth_gbs:g} GB/s{_measured_note(plan)}): "
        f"{plan.fused_count} of {len(plan.decisions)} chains fused whole"
    )
    reasons = [f"  {d.name}: {d.reason}" for d in plan.decisions]
    return "\n".join([*framed(title, plan), "", "why:", *reasons, *_untuned_note(plan)])


def _untuned_note(plan: Plan) -> list[str]:
    """A tuned plan that weighed chains against untuned stock says how many and how to mend it."""
    if not plan.against_untuned:
        return []
    return [
        "",
        f"note: a tuned build, but {plan.against_untuned} of {len(plan.decisions)} chains were weighed "
        "against untuned stock: their measured rows have no tuned stock time, and tuned stock may "
        "beat some that it fuses (docs/planner.md, 'Tuned builds')",
    ]


def format_rewrite(fused: Sequence[Decision]) -> str:
    """What the rewrite pass fuses with these decisions (``fcm_tvm.relay_passes.fused_decisions``):
    whole chains and, in place of declined PW->DW->PW blocks, the sub-chains it fuses, with the
    number of distinct FCM kernels they compile to and their summed times."""
    if not fused:
        return "the rewrite fuses nothing"
    kernels = len({(d.spec, d.tiles) for d in fused})
    title = (
        f"the rewrite fuses {len(fused)} chains, whole or a declined block's sub-chain "
        f"({kernels} distinct kernels):"
    )
    return "\n".join(framed(title, Plan(fused[0].gpu, tuple(fused)), f"{len(fused)} fused"))


def framed(title: str, plan: Plan, count: str | None = None) -> list[str]:
    """``title``, then the plan's decisions as a table between rules, then its :func:`total_row`."""
    rows = [COLUMNS, SUBHEADER, *(decision_row(d) for d in plan.decisions), total_row(plan, count)]
    table = format_table(rows)
    rule = "-" * max(len(line) for line in table)
    return [title, *table[:2], rule, *table[2:-1], rule, table[-1]]


def _measured_note(plan: Plan) -> str:
    """Where another GPU's measured times decided some of the chains, say which GPUs' did."""
    used = {d.measured_on for d in plan.decisions}
    sources = [key for key in table_gpus(plan.gpu.key) if key in used]
    return "" if sources in ([], [plan.gpu.key]) else f", chain times measured on {' and '.join(sources)}"


def traffic_dict(traffic: Traffic) -> dict[str, float]:
    return {**traffic.as_dict(), "read": traffic.read, "written": traffic.written, "total": traffic.total}


def kernel_dict(kernel: KernelEstimate) -> dict[str, Any]:
    return {
        "name": kernel.name,
        "blocks": kernel.blocks,
        "threads": kernel.threads,
        "blocks_per_sm": kernel.occupancy.blocks_per_sm,
        "occupancy_limited_by": kernel.occupancy.limited_by,
        "efficiency": kernel.efficiency,
        "bound": kernel.bound,
        "reread_l2_hit": kernel.reread_l2_hit,
        "flops": kernel.flops,
        "dram_bytes": traffic_dict(kernel.dram),
        "requested_bytes": traffic_dict(kernel.requested),
        "dram_us": kernel.dram_s / US,
        "l2_us": kernel.l2_s / US,
        "compute_us": kernel.compute_s / US,
        "time_us": kernel.time_s / US,
    }


def estimate_dict(estimate: ChainEstimate | None) -> dict[str, Any] | None:
    if estimate is None:
        return None
    return {
        "tiles": asdict(estimate.tiles) if estimate.tiles else None,
        "dram_bytes": traffic_dict(estimate.dram),
        "requested_bytes": traffic_dict(estimate.requested),
        "flops": estimate.flops,
        "time_us": estimate.time_s / US,
        "kernels": [kernel_dict(k) for k in estimate.kernels],
    }


def decision_dict(decision: Decision) -> dict[str, Any]:
    spec = decision.spec
    return {
        "name": decision.name,
        "kind": spec.kind,
        "dtype": spec.dtype,
        "input": list(spec.input.as_tuple()),
        "intermediates": [list(s.as_tuple()) for s in spec.intermediates],
        "output": list(spec.output.as_tuple()),
        "residual": spec.residual,
        "fuse": decision.fuse,
        "tiles": asdict(decision.tiles) if decision.tiles else None,
        "reason": decision.reason,
        "measured_on": decision.measured_on,
        "against": decision.against,
        "unfused": estimate_dict(decision.unfused),
        "fused": estimate_dict(decision.fused),
    }


def plan_dict(plan: Plan, fused: Sequence[Decision] | None = None) -> dict[str, Any]:
    """The plan as plain data: every decision with both estimates, kernel by kernel, and totals;
    given ``fused`` (:func:`format_rewrite`), those decisions too, as ``rewrite``."""
    rewrite = {} if fused is None else {"rewrite": [decision_dict(d) for d in fused]}
    return {
        "gpu": plan.gpu.key,
        "measured_on": list(table_gpus(plan.gpu.key)),
        "chains": [decision_dict(d) for d in plan.decisions],
        "totals": {
            "chains": len(plan.decisions),
            "fused": plan.fused_count,
            "against_untuned_stock": plan.against_untuned,
            "unfused_dram_bytes": plan.unfused_dram,
            "planned_dram_bytes": plan.planned_dram,
            "unfused_time_us": plan.unfused_time_s / US,
            "planned_time_us": plan.planned_time_s / US,
        },
        **rewrite,
    }


def to_json(plan: Plan, indent: int | None = 2) -> str:
    return json.dumps(plan_dict(plan), indent=indent)
