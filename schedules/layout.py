"""How a thread block's threads cover its tile: pure integer arithmetic, no TVM.

A block computes ``channel_tile x tile_h x tile_w`` outputs with ``threads`` threads. Threads are
laid out as ``channels x rows x cols`` over the tile; each thread owns a contiguous register tile
of ``reg_c x reg_y x reg_x`` outputs (contiguous so that its part is a rectangle, which is what
``reverse_compute_at`` of the epilogue needs). Columns get threads first: neighbouring threads
then own neighbouring pixels, so global stores and shared-memory reads are coalesced.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import gcd

from .spec import Depthwise, FcmSpec, FcmTiles

WARP = 32
MAX_THREADS = 1024
STATIC_SMEM = 48 * 1024  # the most a kernel may declare statically; more needs dynamic shared memory
DTYPE_BYTES = {"float32": 4, "float16": 2}
MAX_ACCUMULATORS = 64  # float32 registers per thread for the output tile; more spills
MAX_PATCH_ACCUMULATORS = 32  # per thread for the 1x1 patch, whose sums live beside the output tile's


@dataclass(frozen=True)
class ThreadLayout:
    """``channels x rows x cols`` threads, each owning ``reg_c x reg_y x reg_x`` outputs."""

    channels: int
    rows: int
    cols: int
    reg_c: int
    reg_y: int
    reg_x: int

    @property
    def threads(self) -> int:
        return self.channels * self.rows * self.cols

    @property
    def accumulators(self) -> int:
        return self.reg_c * self.reg_y * self.reg_x


def output_layout(tiles: FcmTiles) -> ThreadLayout | None:
    """Spread ``tiles.threads`` over the output tile, columns first, each thread ``output_rows``
    rows and ``output_cols`` columns at least; None if they do not divide it."""
    if tiles.tile_h % tiles.output_rows or tiles.tile_w % tiles.output_cols:
        return None
    cols = gcd(tiles.tile_w // tiles.output_cols, tiles.threads)
    rows = gcd(tiles.tile_h // tiles.output_rows, tiles.threads // cols)
    channels = tiles.threads // (cols * rows)
    if tiles.channel_tile % channels:
        return None
    return ThreadLayout(
        channels, rows, cols, tiles.channel_tile // channels, tiles.tile_h // rows, tiles.tile_w // cols
    )


@dataclass(frozen=True)
class PatchLayout:
    """Threads over ``channels x rows x row_width`` of a shared patch computed by a 1x1 convolution.

    ``channel_groups`` groups of threads each own ``reg_c`` contiguous channels (the last group
    may own fewer: a predicate); within a group, ``rows`` row blocks of the patch are done at a
    time, one thread per pixel column of a block of ``reg_y`` rows, so that one loaded weight
    feeds ``reg_y`` sums and one loaded input value ``reg_c``. Whole rows keep the pixel index
    affine (row = (step * rows + lane // width) * reg_y + r), which TVM's region analysis needs;
    the price is ``threads - used_threads`` idle threads in this phase, and with ``reg_y > 1`` a
    last row block that may overhang the patch (a predicate).
    """

    channel_groups: int
    rows: int
    row_width: int
    reg_c: int
    reg_y: int = 1

    @property
    def used_threads(self) -> int:
        return self.channel_groups * self.rows * self.row_width

    @property
    def accumulators(self) -> int:
        return self.reg_c * self.reg_y


def patch_layout(
    channels: int,
    patch_rows: int,
    row_width: int,
    threads: int,
    reg_y: int = 1,
    max_reg: int = 8,
    lanes: int = 1,
) -> PatchLayout | None:
    """How ``threads`` cover the patch; None if a row does not fit or the channels do not fit in
    MAX_PATCH_ACCUMULATORS registers per thread. With ``lanes`` > 1 (weights loaded in vectors)
    only layouts whose threads own whole vectors of channels.

    With one row per thread: the fewest idle channel slots and threads, then the most channels
    per thread (the layouts the H100 tables measured). With ``reg_y`` rows per thread, whose
    point is fewer shared-memory loads per multiply-add: the fewest warp-wide loads per input
    channel (weights and inputs; they share the SM's one load pipe), then the fewest idle slots.
    """
    row_blocks = ceil_div(patch_rows, reg_y)
    max_reg = min(max_reg, MAX_PATCH_ACCUMULATORS // reg_y)
    options = []
    for groups in range(1, threads + 1):
        rows = largest_divisor_at_most(row_blocks, threads // groups // row_width)
        reg_c = ceil_div(channels, groups)
        if not rows or reg_c > max_reg or reg_c % lanes:
            continue
        layout = PatchLayout(groups, rows, row_width, reg_c, reg_y)
        idle = (groups * reg_c - channels) * rows * row_width + threads - layout.used_threads
        loads = ceil_div(layout.used_threads, WARP) * (row_blocks // rows) * (reg_c + reg_y)
        options.append(((idle, -reg_c) if reg_y == 1 else (loads, idle), layout))
    return min(options, key=lambda option: option[0])[1] if options else None


def largest_divisor_at_most(value: int, limit: int) -> int:
    """The largest divisor of ``value`` that is at most ``limit`` (0 if ``limit`` < 1)."""
    return max((d for d in range(1, min(value, limit) + 1) if value % d == 0), default=0)


def exact_lanes(elements: int, threads: int) -> int:
    """Lanes that deal ``elements`` out in whole steps: the largest divisor that is at most ``threads``."""
    return largest_divisor_at_most(elements, threads)


def input_extent(stage: Depthwise, out_extent: int) -> int:
    """Input rows (or columns) a depthwise stage reads for ``out_extent`` output rows (the halo)."""
    return (out_extent - 1) * stage.stride + stage.kernel


def depthwise_patch(spec: FcmSpec, index: int, tiles: FcmTiles) -> tuple[int, int]:
    """(rows, columns) of padded input that depthwise stage ``index`` reads for one output tile.

    From the whole tile, even where it overhangs the output: TVM sizes regions from loop ranges
    (ignoring tail predicates) and clips them to the tensor.
    """
    stage = spec.stages[index]
    source = spec.shapes[index]
    top, left, bottom, right = stage.pads
    rows = min(input_extent(stage, tiles.tile_h), source.h + top + bottom)
    cols = min(input_extent(stage, tiles.tile_w), source.w + left + right)
    return rows, cols


def computed_patch(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """(rows, columns) of the 1x1-computed patch as TVM allocates it: the DW's patch in whole
    blocks of ``tiles.patch_rows`` rows (a last block may overhang it), clipped to the tensor."""
    rows, cols = depthwise_patch(spec, 1, tiles)
    top, _, bottom, _ = spec.stages[1].pads
    blocks = ceil_div(rows, tiles.patch_rows) * tiles.patch_rows
    return min(blocks, spec.shapes[1].h + top + bottom), cols


def staged_input_elements(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Elements of the zero-padded FCM input that a first 1x1 stage reads for one output tile
    (the DW's patch with its halo, as TVM allocates it when the block copies it)."""
    rows, cols = computed_patch(spec, tiles)
    return fetched_elements(spec.in_channels, rows * cols, spec.in_channels, tiles.threads)


# -- shared memory that TVM allocates ---------------------------------------------------------
# TVM sizes a shared buffer as the bounding box of its accesses with every threadIdx.x loop
# relaxed over the block's full thread count (it unifies the thread loops of all phases), and
# clips it to the tensor. So a phase that uses fewer lanes than the block has threads, or whose
# last step is ragged, gets a taller leading dimension than it fills. These bounds model that.


def fetched_elements(rows: int, inner: int, full_rows: int, threads: int, lanes: int | None = None) -> int:
    """Allocation of ``rows x inner`` elements spread in flattened order over ``lanes`` of ``threads``."""
    lanes = min(lanes or threads, threads)
    steps = ceil_div(rows * inner, lanes)
    reach = (steps - 1) * lanes + threads  # one past the highest flattened index a thread can form
    return min(full_rows, max(rows, ceil_div(reach, inner))) * inner


def depthwise_result(chunk: int, pixels: int, full_channels: int, threads: int, cols: int = 1) -> int:
    """Allocation of a shared depthwise result of ``chunk`` channels x ``pixels`` computed by
    :func:`~.cuda_base.compute_depthwise_shared`: groups of ``cols`` columns dealt out exactly."""
    groups = pixels // cols
    return (
        fetched_elements(chunk, groups, full_channels, threads, exact_lanes(chunk * groups, threads)) * cols
    )


def patch_channels(layout: PatchLayout, channels: int, full_channels: int, threads: int) -> int:
    """Channels TVM allocates for a patch computed with ``layout`` (and for what its sums read).

    The thread index, relaxed over all ``threads``, reaches ``threads / (rows * row_width)``
    channel groups, not just the ``channel_groups`` that work.
    """
    groups = ceil_div(threads, layout.rows * layout.row_width)
    return min(full_channels, max(channels, groups * layout.reg_c))


def clipped_tile(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int, int]:
    """The output tile (channels, rows, columns), no larger than the output."""
    out = spec.output
    return min(tiles.channel_tile, out.c), min(tiles.tile_h, out.h), min(tiles.tile_w, out.w)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
