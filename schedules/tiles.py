"""Tile choices: the default for a spec, and why a choice does not fit (shared memory, threads).

The reduction chunk (channels summed per shared-memory step) is derived here, not a knob: the
largest of :data:`CHUNKS` or of the divisors of the channel count up to 16 whose buffers fit in
:data:`STATIC_SMEM` (so that two or more blocks share an SM), preferring one that divides the
channel count (a split slice takes only those); beyond that, the device's limit.
"""

from __future__ import annotations

from dataclasses import astuple, replace

from ..errors import FcmError
from .cuda_base import KernelPlan, threads_over_patch
from .layout import (
    DTYPE_BYTES,
    MAX_ACCUMULATORS,
    MAX_PATCH_ACCUMULATORS,
    MAX_THREADS,
    STATIC_SMEM,
    PatchLayout,
    ThreadLayout,
    ceil_div,
    clipped_tile,
    output_layout,
    staged_input_elements,
)
from .rules import RULES
from .scripted import FAMILIES, is_scripted, scripted_problems
from .spec import FcmSpec, FcmTiles, Pointwise

STAGED_SMEM = 100 * 1024  # the most a block with a staged input may use: two blocks per H100 SM
SMEM_ALIGN = 16
CHUNKS = (16, 8, 4, 2, 1)
TILE_SIDES = (8, 7)  # preferred output tile sides, ties go to the first
MAX_CHANNEL_TILE = 64
PIXELS_PER_BLOCK = 256  # default threads per block aim
WEIGHT_LANES = (1, 2, 4)  # weights per vector load (FcmTiles.weight_lanes, patch_lanes)


def tile_problems(spec: FcmSpec, tiles: FcmTiles, max_smem_per_block: int) -> list[str]:
    """Why ``tiles`` cannot run ``spec`` on a GPU with ``max_smem_per_block`` bytes (empty if they can)."""
    if is_scripted(tiles):
        return scripted_problems(spec, tiles, max_smem_per_block)
    return _plan(spec, tiles, max_smem_per_block)[1]


def plan_kernel(spec: FcmSpec, tiles: FcmTiles, max_smem_per_block: int) -> KernelPlan:
    """The full plan for scheduling ``spec`` with ``tiles``; :class:`FcmError` naming every problem."""
    plan, problems = _plan(spec, tiles, max_smem_per_block)
    if plan is None:
        raise FcmError(
            f"tiles {tiles} do not fit FCM {spec.kind} {spec.input.as_tuple()}: " + "; ".join(problems)
        )
    return plan


def shared_bytes(spec: FcmSpec, tiles: FcmTiles, chunk: int, staged_input: bool = False) -> int:
    """Shared memory of one thread block: an upper bound of what TVM allocates (it may reuse buffers).

    Each buffer is rounded up to SMEM_ALIGN bytes for the padding TVM puts between buffers it
    packs together; tests compare the bound with the generated CUDA.
    """
    elements = list(RULES[spec.kind].shared_elements(spec, tiles, chunk).values())
    if staged_input:
        elements.append(staged_input_elements(spec, tiles))
    return sum(ceil_div(n * DTYPE_BYTES[spec.dtype], SMEM_ALIGN) * SMEM_ALIGN for n in elements)


def stages_input(spec: FcmSpec, tiles: FcmTiles, chunk: int, max_smem: int) -> bool:
    """Whether a block with a 1x1 patch stages its input for it: where the staged block fits in
    :data:`STAGED_SMEM` (staging never shrinks the chunk)."""
    return shared_bytes(spec, tiles, chunk, staged_input=True) <= min(STAGED_SMEM, max_smem)


def _plan(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> tuple[KernelPlan | None, list[str]]:
    if is_scripted(tiles):
        return None, [f"tiles of the scripted kernels ({', '.join(FAMILIES)}) have no CUDA-core kernel plan"]
    knobs = astuple(replace(tiles, **dict.fromkeys(FAMILIES, 1)))  # 0 is the CUDA-core kernel's
    if min(knobs) < 1:
        return None, [f"every tile knob must be >= 1, got {tiles}"]
    problems = split_problems(spec, tiles.split)
    if tiles.patch_reuse != 1:
        problems.append("patch_reuse is a knob of the tensor-core PW->DW kernel: 1 on CUDA cores")
    if tiles.lane_rows != 1:
        problems.append("lane_rows is a knob of the streamed kernels: 1 on CUDA cores")
    if tiles.threads > MAX_THREADS:
        problems.append(f"{tiles.threads} threads per block > {MAX_THREADS}")
    layout = output_layout(tiles)
    if tiles.tile_h % tiles.output_rows:
        problems.append(
            f"{tiles.output_rows} output rows per thread do not divide the {tiles.tile_h}-row tile"
        )
    elif tiles.tile_w % tiles.output_cols:
        pass  # output_col_problems says why
    elif layout is None:
        rows = "tile_h" if tiles.output_rows == 1 else f"tile_h / {tiles.output_rows}"
        problems.append(
            f"{tiles.threads} threads do not factor over the output tile "
            f"{tiles.channel_tile}x{tiles.tile_h}x{tiles.tile_w} "
            f"(threads = a*b*c, a | channel_tile, b | {rows}, c | tile_w)"
        )
    elif layout.accumulators > MAX_ACCUMULATORS:
        problems.append(
            f"{layout.accumulators} outputs per thread > {MAX_ACCUMULATORS} registers (use more threads)"
        )
    chunk = _chunk(spec, tiles, max_smem)
    problems += weight_lane_problems(spec, tiles, layout, chunk)
    problems += depthwise_col_problems(spec, tiles)
    problems += output_col_problems(spec, tiles)
    if chunk is None:
        need = shared_bytes(spec, tiles, 1)
        problems.append(f"needs {need} bytes of shared memory per block, more than {max_smem}")
    shape = RULES[spec.kind].patch_shape(spec, tiles, chunk or 1)
    patch = threads_over_patch(shape, tiles)
    problems += _patch_problems(shape, patch, tiles)
    if patch is not None and chunk is not None:
        problems += patch_lane_problems(spec, tiles, patch, chunk)
    if problems:
        return None, problems
    staged = patch is not None and stages_input(spec, tiles, chunk, max_smem)
    smem = shared_bytes(spec, tiles, chunk, staged)
    scope = "shared" if smem <= STATIC_SMEM else "shared.dyn"
    return KernelPlan(tiles, layout, chunk, patch, smem, scope, staged), []


def _patch_problems(
    shape: tuple[int, int, int] | None, patch: PatchLayout | None, tiles: FcmTiles
) -> list[str]:
    """Why the 1x1 patch of ``shape`` (channels, rows, columns) has no thread layout ``patch``, or
    why a kernel without one has patch knobs (empty if neither)."""
    if shape is None:
        knobs = {
            "patch_rows": tiles.patch_rows,
            "patch_unroll": tiles.patch_unroll,
            "patch_lanes": tiles.patch_lanes,
        }
        return [f"{knob} must be 1: the kernel has no 1x1 patch" for knob, n in knobs.items() if n != 1]
    if patch is not None:
        return []
    if tiles.threads < shape[2]:
        return [f"{tiles.threads} threads are fewer than a {shape[2]}-pixel row of the 1x1 patch"]
    return [
        f"{tiles.threads} threads of {tiles.patch_rows} patch rows each cannot cover the {shape[0]} "
        f"channels of the 1x1 patch within {MAX_PATCH_ACCUMULATORS} registers per thread"
    ]


def weight_lane_problems(
    spec: FcmSpec, tiles: FcmTiles, layout: ThreadLayout | None, chunk: int | None
) -> list[str]:
    """Why the last PW stage cannot load its weights ``tiles.weight_lanes`` at a time (empty if
    it can): see :func:`vector_problems`."""
    lanes = tiles.weight_lanes
    if lanes == 1 or lanes not in WEIGHT_LANES:
        return lane_count_problems("weight_lanes", lanes)
    if not isinstance(spec.stages[-1], Pointwise):
        return [f"weight_lanes must be 1: a {spec.kind} kernel has no last PW stage"]
    reg_c = None if layout is None else layout.reg_c
    if chunk is None:
        return vector_problems(lanes, "output", reg_c, "weights", None)
    rows = RULES[spec.kind].shared_elements(spec, tiles, chunk)["last pw weights"] // chunk
    return vector_problems(lanes, "output", reg_c, "weights", rows)


def patch_lane_problems(spec: FcmSpec, tiles: FcmTiles, patch: PatchLayout, chunk: int) -> list[str]:
    """Why the 1x1 patch cannot load its weights ``tiles.patch_lanes`` at a time (empty if it
    can): see :func:`vector_problems`."""
    lanes = tiles.patch_lanes
    if lanes == 1 or lanes not in WEIGHT_LANES:
        return lane_count_problems("patch_lanes", lanes)
    rows = RULES[spec.kind].shared_elements(spec, tiles, chunk)["patch weights"] // spec.in_channels
    return vector_problems(lanes, "patch", patch.reg_c, "patch weights", rows)


def lane_count_problems(knob: str, lanes: int) -> list[str]:
    """Why ``lanes`` is no vector width (empty if it is one, or 1)."""
    return [] if lanes in WEIGHT_LANES else [f"{knob} must be one of {WEIGHT_LANES}, got {lanes}"]


def vector_problems(
    lanes: int, channels: str, reg_c: int | None, weights: str, rows: int | None
) -> list[str]:
    """Why weights cannot be loaded ``lanes`` at a time: vectors must be whole and aligned, in each
    thread's ``reg_c`` channels and in the ``rows`` of the transposed weights as TVM allocates
    them (None: not known, a problem found elsewhere)."""
    problems = []
    if reg_c is not None and reg_c % lanes:
        problems.append(f"{reg_c} {channels} channels per thread are not whole vectors of {lanes}")
    if rows is not None and rows % lanes:
        problems.append(f"the transposed {weights}' rows ({rows} channels) are not vectors of {lanes}")
    return problems


def depthwise_col_problems(spec: FcmSpec, tiles: FcmTiles) -> list[str]:
    """Why the depthwise stage cannot compute ``tiles.depthwise_cols`` columns per thread (empty
    if it can)."""
    cols = tiles.depthwise_cols
    if cols == 1:
        return []
    if not isinstance(spec.stages[-1], Pointwise):
        return [f"depthwise_cols must be 1: a {spec.kind} kernel computes its depthwise stage per output"]
    width = clipped_tile(spec, tiles)[2]
    if width % cols:
        return [f"{cols} depthwise columns per thread do not divide the {width}-wide tile"]
    return []


def output_col_problems(spec: FcmSpec, tiles: FcmTiles) -> list[str]:
    """Why threads cannot keep ``tiles.output_cols`` output columns each and load their depthwise
    results as vectors of that many (empty if they can): the vectors must be whole and aligned in
    the shared result's rows, which are the tile's width (clipped to the output)."""
    cols = tiles.output_cols
    if cols == 1 or cols not in WEIGHT_LANES:
        return lane_count_problems("output_cols", cols)
    if not isinstance(spec.stages[-1], Pointwise):
        return [f"output_cols must be 1: a {spec.kind} kernel has no last PW stage"]
    width = clipped_tile(spec, tiles)[2]
    if tiles.tile_w % cols or width % cols:
        return [f"{cols} output columns per thread do not divide the {width}-wide tile"]
    return []


def split_problems(spec: FcmSpec, split: int) -> list[str]:
    """Why ``spec``'s last reduction cannot be split ``split`` ways (empty if it can)."""
    channels = RULES[spec.kind].reduction_channels(spec)
    if split == 1:
        return []
    if channels == 1:
        return [f"a {spec.kind} FCM has no channel reduction to split (split must be 1, got {split})"]
    if channels % split:
        return [f"split {split} does not divide the {channels} channels of the {spec.kind} reduction"]
    return []


def _chunk(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> int | None:
    """The reduction chunk: channels summed per shared-memory step, within one split slice."""
    channels = max(1, RULES[spec.kind].reduction_channels(spec) // tiles.split)
    divisors = {c for c in range(1, min(max(CHUNKS), channels) + 1) if channels % c == 0}
    candidates = sorted({min(c, channels) for c in CHUNKS} | divisors, reverse=True)
    for budget in sorted({min(STATIC_SMEM, max_smem), max_smem}):
        fitting = [c for c in candidates if shared_bytes(spec, tiles, c) <= budget]
        if tiles.split > 1:  # a ragged last chunk of a slice made TVM size shared buffers for 4x more
            fitting = [c for c in fitting if c in divisors]
        dividing = [c for c in fitting if c in divisors and c >= min(4, channels)]
        if fitting:
            return (dividing or fitting)[0]
    return None


def default_tiles(spec: FcmSpec, max_smem_per_block: int = STATIC_SMEM) -> FcmTiles:
    """A sensible tile for ``spec``: 8x8 (or 7x7) pixels, channels to fill about 256 threads.

    The channel tile shrinks until the block fits in static shared memory (48 KiB, so that
    several blocks share an SM), else in ``max_smem_per_block``.
    """
    out = spec.output
    tile_h, tile_w = _tile_side(out.h), _tile_side(out.w)
    thread_channels = _power_of_two_near(PIXELS_PER_BLOCK / (tile_h * tile_w))
    options = []
    limit = MAX_CHANNEL_TILE
    while limit >= thread_channels:
        channel_tile = _channel_tile(out.c, thread_channels, limit)
        options.append(FcmTiles(channel_tile, tile_h, tile_w, thread_channels * tile_h * tile_w))
        limit = channel_tile - thread_channels
    for budget in (min(STATIC_SMEM, max_smem_per_block), max_smem_per_block):
        for tiles in options:
            if not tile_problems(spec, tiles, budget):
                return tiles
    return options[-1]


def _power_of_two_near(value: float) -> int:
    power = 1
    while power * 2 <= value * 1.25:  # round to the nearer power, a little upwards
        power *= 2
    return power


def _tile_side(extent: int) -> int:
    if extent <= max(TILE_SIDES):
        return extent
    return min(TILE_SIDES, key=lambda side: ceil_div(extent, side) * side - extent)


def _channel_tile(channels: int, step: int, limit: int = MAX_CHANNEL_TILE) -> int:
    """The multiple of ``step`` up to ``limit`` that wastes the fewest channels in the last tile."""
    options = range(step, max(step, limit) + 1, step)
    return min(options, key=lambda tile: (ceil_div(channels, tile) * tile - channels, -tile))
