"""The tile search space of an FCM: the choices the planner prices and tuning searches.

Every knob is a power of two (clipped to the output, so a 7x7 output gets 7-wide tiles), plus
the kernel builder's own default tile split 1x, 2x, 4x, ... (the splits that divide the split
reduction). Splits are tried on the default tile only: that is the family the H100 sweep
measured (docs/results/splits_h100.json), and over other tiles the calibrated model ranked split
kernels badly (its picks measured up to 2.7x slower than the default tile's best split). A
candidate is kept only if the kernel builder (:mod:`fcm_tvm.schedules.tiles`) accepts it on the
GPU: threads that factor over the tile, registers, and shared memory within ``smem_per_block``.
Nothing here prices a tile.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from ..errors import FcmError
from ..gpus import GpuSpec
from ..schedules.cuda_base import KernelPlan
from ..schedules.layout import MAX_ACCUMULATORS, output_layout
from ..schedules.scripted import is_scripted, scripted_accumulators, scripted_shared_bytes
from ..schedules.spec import FcmSpec, FcmTiles
from ..schedules.tiles import default_tiles, plan_kernel, split_problems, tile_problems

CHANNEL_TILES = (4, 8, 16, 32, 64, 128)
TILE_SIDES = (4, 8, 16, 32)
THREADS = (32, 64, 128, 256, 512, 1024)
SPLITS = (1, 2, 4, 8, 16, 32, 64)


def candidate_tiles(spec: FcmSpec, gpu: GpuSpec) -> list[FcmTiles]:
    """Every tile choice for ``spec`` that the kernel builder accepts on ``gpu``, in a stable order.

    This checks every point of :func:`tile_grid` (milliseconds each): tuning wants all of them,
    the planner visits them best-first and checks only the promising ones.
    """
    return [tiles for tiles in tile_grid(spec, gpu) if not fit_problems(spec, tiles, gpu)]


def tile_grid(spec: FcmSpec, gpu: GpuSpec) -> list[FcmTiles]:
    """The raw grid: clipped powers of two and the default tile, whose threads lay out over the tile."""
    out = spec.output
    channels = sorted({min(c, out.c) for c in CHANNEL_TILES})
    rows = sorted({min(s, out.h) for s in TILE_SIDES})
    cols = sorted({min(s, out.w) for s in TILE_SIDES})
    grid = [
        FcmTiles(c, h, w, t)
        for c in channels
        for h in rows
        for w in cols
        for t in THREADS
        if t <= min(gpu.max_threads_per_block, c * h * w)
    ]
    default = default_tiles(spec, gpu.smem_per_block)
    grid += [replace(default, split=split) for split in splits(spec)]
    return [tiles for tiles in dict.fromkeys(grid) if _lays_out(tiles)]


def splits(spec: FcmSpec) -> list[int]:
    """The splits of :data:`SPLITS` that the kernel builder accepts for ``spec`` (1 for PW->DW)."""
    return [split for split in SPLITS if not split_problems(spec, split)]


def _lays_out(tiles: FcmTiles) -> bool:
    """Cheap pre-check of the builder's thread layout rules (the full check is ``tile_problems``)."""
    layout = output_layout(tiles)
    return layout is not None and layout.accumulators <= MAX_ACCUMULATORS


def fit_problems(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> list[str]:
    """Why ``tiles`` cannot run ``spec`` on ``gpu`` (empty if they can)."""
    return list(_fit(spec, tiles, gpu.smem_per_block, gpu.max_threads_per_block)[1])


def shared_bytes(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> int:
    """Shared memory one block of the FCM kernel uses; :class:`FcmError` if the tiles do not fit."""
    plan, problems = _fit(spec, tiles, gpu.smem_per_block, gpu.max_threads_per_block)
    if problems:
        raise FcmError(f"tiles {tiles} do not fit FCM {spec.kind} on {gpu.key}: " + "; ".join(problems))
    return scripted_shared_bytes(spec, tiles) if plan is None else plan.shared_bytes


@cache
def _fit(
    spec: FcmSpec, tiles: FcmTiles, max_smem: int, max_threads: int
) -> tuple[KernelPlan | None, tuple[str, ...]]:
    """The kernel builder's plan for ``tiles`` (or None) and its problems, computed once per choice."""
    problems = tile_problems(spec, tiles, max_smem)
    if tiles.threads > max_threads:
        problems.append(f"{tiles.threads} threads per block > {max_threads}")
    if problems or is_scripted(tiles):  # a scripted kernel has no CUDA-core plan
        return None, tuple(problems)
    return plan_kernel(spec, tiles, max_smem), ()


def accumulators(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Outputs each thread keeps in registers (the layout's register tile; a scripted kernel's
    float32 sums, e.g. a tensor-core kernel's share of its accumulator fragments)."""
    if is_scripted(tiles):
        return scripted_accumulators(spec, tiles)
    layout = output_layout(tiles)
    if layout is None:
        raise FcmError(f"{tiles.threads} threads do not lay out over the tile {tiles}")
    return layout.accumulators
