"""Measured FCM and stock times per chain and GPU: what the planner trusts over its model.

The cost model ranks tiles of one kernel family well but its absolute times are calibrated
medians, and on the H100 its picks measured up to 2.7x slower than the best tile it could have
had (docs/planner.md). Where a chain was timed on a GPU (``data/measured/<gpu>.json``, written by
:mod:`fcm_tvm.benchmarks.measured_table` from the benchmark JSON in docs/results), the planner
uses the best measured tiles and times instead (a chain at an untimed batch, those of the batches
around it: :func:`between_batches`); every other chain and GPU is priced by the model.

Three clocks: the layer benchmark's wall-clock time of one call (``fcm_us``, ``stock_us``, ...),
which for a stock chain includes the VM's launch of each of its kernels; the kernels' own GPU
time under ncu (``gpu_us``), each kernel alone from a cold L2, which overstates short kernels;
and the time per run of the chain repeated inside one CUDA graph (``graph_us``), how a
graph-captured model runs it. A build with CUDA graphs is planned on the graph clock where a
chain has it, else on GPU time, else on wall clock: on wall clock, MobileNetV3-Small's PW->DW
chains beat stock by 2-14 us and made the graph-captured model 0.94x as fast as stock. A kernel
timed on wall clock only, faster there than the one a clock timed, is priced on that clock by
their wall-clock ratio (:func:`from_row`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from pathlib import Path

from ..errors import FcmError
from ..gpus import GpuSpec, data_keys
from ..schedules.spec import FcmSpec, FcmTiles

US = 1e-6
MEASURED_ENV = "FCM_TVM_MEASURED"  # a folder of <gpu>.json tables consulted over the shipped ones


@dataclass(frozen=True)
class Measured:
    """The best measured FCM of a chain on one GPU, and the stock chain's times where measured:
    with dlight's default schedules and with a MetaSchedule database."""

    tiles: FcmTiles
    fcm_s: float
    stock_s: float | None
    stock_tuned_s: float | None = None
    clock: str = "wall"  # "gpu": kernel time under ncu; "graph": inside a CUDA graph
    gpu: str = ""  # the GPU whose table the row came from (empty for a row read on its own)
    batches: tuple[int, ...] = ()  # the timed batches it stands in from (:func:`between_batches`)
    scaled: bool = False  # the FCM's time on ``clock`` scaled from another kernel's (:func:`from_row`)

    def baseline(self, tuned: bool) -> tuple[str, float | None]:
        """The stock chain that fusing must beat, named, with its time: the tuned one when the
        build applies tuning records and it was measured, else the default one."""
        if tuned and self.stock_tuned_s is not None:
            return "tuned stock", self.stock_tuned_s
        return "stock", self.stock_s


CLOCKS = ("graph", "gpu", "wall")  # what a build with CUDA graphs prefers, best first


def clocks(cuda_graph: bool) -> tuple[str, ...]:
    """The clocks a build may be planned on, best first: without CUDA graphs, wall clock only."""
    return CLOCKS if cuda_graph else ("wall",)


def measured(spec: FcmSpec, gpu: GpuSpec, cuda_graph: bool = False, tuned: bool = False) -> Measured | None:
    """What was measured for ``spec`` on ``gpu``, on the first of :func:`clocks` the chain has;
    None where it was not measured. ``tuned``: for a build with tuning records (:func:`table_rows`)."""
    found = (measured_on(spec, gpu, clock, tuned) for clock in clocks(cuda_graph))
    return next(filter(None, found), None)


def measured_on(spec: FcmSpec, gpu: GpuSpec, clock: str, tuned: bool = False) -> Measured | None:
    """What was measured for ``spec`` on ``gpu`` on ``clock`` (None where not; see :func:`from_row`)."""
    row = table_rows(gpu.key, tuned).get(spec.key)
    return between_batches(spec, gpu, clock, tuned) if row is None else from_row(row, clock)


# How far past the largest timed batch the times are scaled with the batch: the tables hold
# batches 1 and 32, and issue 3's range ends at 64.
MAX_EXTRAPOLATION = 2


def between_batches(spec: FcmSpec, gpu: GpuSpec, clock: str, tuned: bool = False) -> Measured | None:
    """A chain not timed at its own batch, from the same chain timed by one GPU at the nearest
    batches below and above it, where both agree on whether the FCM beats stock: the times
    interpolated linearly in the batch, with the tiles of the batch nearer in ratio. Past the
    largest timed batch (up to :data:`MAX_EXTRAPOLATION` times it) the times scale with the
    batch. None where the chain lacks such rows, or where they disagree.

    Why: the tables hold batches 1 and 32, and a build at batch 8 fused nothing. Why only where
    they agree: no batch between was timed, and a crossover between them could fall anywhere.
    """
    timed = {b: m for b in table_batches(gpu.key, tuned) if (m := _at_batch(spec, b, gpu, clock, tuned))}
    below = max((b for b in timed if b < spec.batch), default=None)
    above = min((b for b in timed if b > spec.batch), default=None)
    if below is None:
        return None
    if above is None:
        if spec.batch > MAX_EXTRAPOLATION * below:
            return None
        scaled = [None if t is None else t * spec.batch / below for t in _times(timed[below])]
        return _stand_in(timed[below], scaled, (below,))
    low, high = timed[below], timed[above]
    if low.gpu != high.gpu or _fcm_wins(low, tuned) != _fcm_wins(high, tuned):
        return None
    share = (spec.batch - below) / (above - below)
    between = [
        None if a is None or b is None else a + (b - a) * share for a, b in zip(_times(low), _times(high))
    ]
    nearer = low if spec.batch * spec.batch < below * above else high  # nearer in ratio
    return _stand_in(nearer, between, (below, above))


def table_batches(gpu_key: str, tuned: bool = False) -> tuple[int, ...]:
    """The batches of the chains timed for ``gpu_key`` (chain keys begin with the batch)."""
    return _batches(gpu_key, os.environ.get(MEASURED_ENV, ""), tuned)


@cache
def _batches(gpu_key: str, folder: str, tuned: bool) -> tuple[int, ...]:
    return tuple(sorted({int(key.split("x", 1)[0]) for key in _merged_rows(gpu_key, folder, tuned)}))


def _at_batch(spec: FcmSpec, batch: int, gpu: GpuSpec, clock: str, tuned: bool) -> Measured | None:
    row = table_rows(gpu.key, tuned).get(replace(spec, batch=batch).key)
    return None if row is None else from_row(row, clock)


def _fcm_wins(known: Measured, tuned: bool) -> bool | None:
    baseline = known.baseline(tuned)[1]
    return None if baseline is None else known.fcm_s < baseline


def _times(known: Measured) -> tuple[float | None, ...]:
    return known.fcm_s, known.stock_s, known.stock_tuned_s


def _stand_in(known: Measured, times: list, batches: tuple[int, ...]) -> Measured:
    """``known`` (its tiles, clock and GPU) with the times :func:`between_batches` derived."""
    fcm_s, stock_s, stock_tuned_s = times
    return replace(known, fcm_s=fcm_s, stock_s=stock_s, stock_tuned_s=stock_tuned_s, batches=batches)


def table_rows(gpu_key: str, tuned: bool = False) -> dict[str, dict]:
    """The measured rows that plan ``gpu_key``, by chain key (empty when no table does), each with
    ``measured_on``, the GPU it was timed on: those of
    each GPU of :func:`table_gpus`, the GPU's own row winning over its ``data_from`` GPU's, and in
    each the shipped table's overridden row by row by ``$FCM_TVM_MEASURED/<gpu>.json``. For a
    ``tuned`` build a row timed against tuned stock wins over one that was not, whichever GPU of
    the same chip it comes from.

    Why row by row: an H200 table of two models in one precision would otherwise leave every other
    H200 chain unmeasured, and so unfused. Why the folder: a user times the chains on their own
    GPU (``benchmarks.layers``, then ``benchmarks.measured_table -o``) without writing into the
    installed package. Why tuned rows first: a tuned build weighed against untuned stock fused
    chains that MetaSchedule's kernels beat (nineteenth session). The H100's fp16 batch-32 rows
    have no tuned stock time; the H200's of the same chains were timed within 10% of them, with
    tuned stock and tensor-core tiles, and an H100 planned on them ran 1.16-1.28x over tuned stock
    (docs/results.md, twenty-first session).
    """
    return _merged_rows(gpu_key, os.environ.get(MEASURED_ENV, ""), tuned)


def table_gpus(gpu_key: str) -> tuple[str, ...]:
    """The GPUs whose measured tables plan ``gpu_key``, its own first, then its ``data_from``
    GPU's (:func:`fcm_tvm.gpus.data_keys`); empty where none has a table."""
    folder = os.environ.get(MEASURED_ENV, "")
    return tuple(key for key in data_keys(gpu_key) if _rows(key, folder))


@cache
def _merged_rows(gpu_key: str, folder: str, tuned: bool) -> dict[str, dict]:
    """:func:`table_rows`, merged once per GPU, folder and kind of build (the planner asks for
    every chain)."""
    rows: dict[str, dict] = {}
    for key in reversed(data_keys(gpu_key)):  # the lender first, the GPU's own rows over it
        for chain, row in _rows(key, folder).items():
            if not (tuned and _against_tuned(rows.get(chain)) and not _against_tuned(row)):
                rows[chain] = {**row, "measured_on": key}
    return rows


def _against_tuned(row: dict | None) -> bool:
    return row is not None and row.get("stock_tuned_us") is not None


@cache
def _rows(gpu_key: str, folder: str) -> dict[str, dict]:
    shipped = resources.files("fcm_tvm").joinpath(f"data/measured/{gpu_key}.json")
    rows = _read_table(shipped) if shipped.is_file() else {}
    own = Path(folder) / f"{gpu_key}.json" if folder else None
    if own is not None and own.is_file():
        rows = {**rows, **_read_table(own)}
    return rows


def _read_table(path) -> dict[str, dict]:
    try:
        return {row["key"]: row for row in json.loads(path.read_text())["chains"]}
    except (ValueError, KeyError, TypeError) as error:
        raise FcmError(f"{path}: not a measured table (measured_table's JSON): {error}") from None


def from_row(row: dict, clock: str = "wall") -> Measured | None:
    """The row's times on ``clock``, with the tiles its FCM was timed with on that clock; None
    where that clock lacks the FCM's time or a stock time the row has on wall clock (so that a
    tuned build is never weighed against untuned stock for want of a tuned time on that clock).

    Where a faster kernel was timed on wall clock only (``fcm_wall_us``: the wall-clock time of
    the kernel timed on ``clock``), that kernel is what the row gives, its time on ``clock`` scaled
    from the other's by their wall-clock ratio. Why: the streamed kernels, swept on wall clock,
    were never built into graph-planned models whose chains had older kernels' graph or ncu
    times. Why the ratio: on the seven batch-1 fp16 heads re-timed inside a graph after their
    sweep (H100, thirty-fifth session) it overstated the graph time by 3-13%, never under it.
    """
    times, tiles, scaled = row, row["tiles"], False
    if clock != "wall":
        timed = dict(row.get(f"{clock}_us", {}))
        tiles = timed.pop("fcm_tiles", tiles)  # the kernel timed on this clock, where not the row's
        other_wall = timed.pop("fcm_wall_us", None)
        needed = ["fcm", "stock"] + (["stock_tuned"] if row.get("stock_tuned_us") is not None else [])
        if not all(timed.get(name) is not None for name in needed):
            return None
        times = {f"{name}_us": us for name, us in timed.items()}
        if other_wall is not None and row["fcm_us"] < other_wall:
            times["fcm_us"] *= row["fcm_us"] / other_wall
            tiles, scaled = row["tiles"], True
    stock, tuned = _seconds(times.get("stock_us")), _seconds(times.get("stock_tuned_us"))
    on = row.get("measured_on", "")
    return Measured(FcmTiles(**tiles), times["fcm_us"] * US, stock, tuned, clock, on, scaled=scaled)


def _seconds(microseconds: float | None) -> float | None:
    return None if microseconds is None else microseconds * US
