"""Measured FCM and stock times per chain and GPU: what the planner trusts over its model.

The cost model ranks tiles of one kernel family well but its absolute times are calibrated
medians, and on the H100 its picks measured up to 2.7x slower than the best tile it could have
had (docs/planner.md). Where a chain was timed on a GPU (``data/measured/<gpu>.json``, written by
:mod:`fcm_tvm.benchmarks.measured_table` from the benchmark JSON in docs/results), the planner
uses the best measured tiles and times instead; every other chain and GPU is priced by the model.

Three clocks: the layer benchmark's wall-clock time of one call (``fcm_us``, ``stock_us``, ...),
which for a stock chain includes the VM's launch of each of its kernels; the kernels' own GPU
time under ncu (``gpu_us``), each kernel alone from a cold L2, which overstates short kernels;
and the time per run of the chain repeated inside one CUDA graph (``graph_us``), how a
graph-captured model runs it. A build with CUDA graphs is planned on the graph clock where a
chain has it, else on GPU time, else on wall clock: on wall clock, MobileNetV3-Small's PW->DW
chains beat stock by 2-14 us and made the graph-captured model 0.94x as fast as stock.
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
    clock: str = "wall"  # "gpu": kernel time under ncu; "graph": inside a CUDA graph

    def baseline(self, tuned: bool) -> tuple[str, float | None]:
        """The stock chain that fusing must beat, named, with its time: the tuned one when the
        build applies tuning records and it was measured, else the default one."""
        if tuned and self.stock_tuned_s is not None:
            return "tuned stock", self.stock_tuned_s
        return "stock", self.stock_s


def measured(spec: FcmSpec, gpu: GpuSpec, cuda_graph: bool = False) -> Measured | None:
    """What was measured for ``spec`` on ``gpu``; None where it was not. ``cuda_graph``: on the
    graph clock or GPU time where the chain has them (see the module's docstring), else on wall
    clock."""
    return measured_table(gpu.key, cuda_graph).get(spec.key)


@cache
def measured_table(gpu_key: str, cuda_graph: bool = False) -> dict[str, Measured]:
    """The shipped table of ``gpu_key`` (empty when that GPU was never measured)."""
    path = resources.files("fcm_tvm").joinpath(f"data/measured/{gpu_key}.json")
    if not path.is_file():
        return {}
    rows = json.loads(path.read_text())["chains"]
    return {row["key"]: from_row(row, cuda_graph) for row in rows}


GRAPH_CLOCKS = ("graph", "gpu")  # what a build with CUDA graphs prefers, best first


def from_row(row: dict, cuda_graph: bool = False) -> Measured:
    """The row's wall-clock times, or with ``cuda_graph`` the first of :data:`GRAPH_CLOCKS` that
    has the FCM's time and every stock time the row has on wall clock (so that a tuned build is
    never weighed against untuned stock for want of a tuned time on that clock)."""
    times, clock = row, "wall"
    needed = ["fcm", "stock"] + (["stock_tuned"] if row.get("stock_tuned_us") is not None else [])
    for candidate in GRAPH_CLOCKS if cuda_graph else ():
        timed = row.get(f"{candidate}_us", {})
        if all(timed.get(name) is not None for name in needed):
            times, clock = {f"{name}_us": us for name, us in timed.items()}, candidate
            break
    stock, tuned = _seconds(times.get("stock_us")), _seconds(times.get("stock_tuned_us"))
    return Measured(FcmTiles(**row["tiles"]), times["fcm_us"] * US, stock, tuned, clock)


def _seconds(microseconds: float | None) -> float | None:
    return None if microseconds is None else microseconds * US
