"""Measured FCM and stock times per chain and GPU: what the planner trusts over its model.

The cost model ranks tiles of one kernel family well but its absolute times are calibrated
medians, and on the H100 its picks measured up to 2.7x slower than the best tile it could have
had (docs/planner.md). Where a chain was timed on a GPU (``data/measured/<gpu>.json``, written by
:mod:`fcm_tvm.benchmarks.measured_table` from the benchmark JSON in docs/results), the planner
uses the best measured tiles and times instead; every other chain and GPU is priced by the model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

from ..gpus import GpuSpec
from ..schedules.spec import FcmSpec, FcmTiles

US = 1e-6


@dataclass(frozen=True)
class Measured:
    """The best measured FCM of a chain on one GPU, and the stock chain's times where measured:
    with dlight's default schedules and with a MetaSchedule database."""

    tiles: FcmTiles
    fcm_s: float
    stock_s: float | None
    stock_tuned_s: float | None = None

    def baseline(self, tuned: bool) -> tuple[str, float | None]:
        """The stock chain that fusing must beat, named, with its time: the tuned one when the
        build applies tuning records and it was measured, else the default one."""
        if tuned and self.stock_tuned_s is not None:
            return "tuned stock", self.stock_tuned_s
        return "stock", self.stock_s


def measured(spec: FcmSpec, gpu: GpuSpec) -> Measured | None:
    """What was measured for ``spec`` on ``gpu``; None where it was not."""
    return measured_table(gpu.key).get(spec.key)


@cache
def measured_table(gpu_key: str) -> dict[str, Measured]:
    """The shipped table of ``gpu_key`` (empty when that GPU was never measured)."""
    path = resources.files("fcm_tvm").joinpath(f"data/measured/{gpu_key}.json")
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["chains"]
    return {row["key"]: from_row(row) for row in rows}


def from_row(row: dict) -> Measured:
    stock, tuned = _seconds(row.get("stock_us")), _seconds(row.get("stock_tuned_us"))
    return Measured(FcmTiles(**row["tiles"]), row["fcm_us"] * US, stock, tuned)


def _seconds(microseconds: float | None) -> float | None:
    return None if microseconds is None else microseconds * US
