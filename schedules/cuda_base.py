"""What every hand-written FCM schedule shares: the plan it follows and the moves it repeats.

The moves are TensorIR schedule primitives (``tvm.s_tir.Schedule``), so every schedule is a
verified rewrite of the TE compute in :mod:`.compute`: the numbers cannot change, only where the
work runs and where the values live. One invariant matters and is kept here: a block is given its
shared-memory scope *before* it is moved under the thread loops (``compute_at``). Only then does
TVM size its region for the whole thread block; in the other order the region is per thread and
the threads would overwrite each other's tiles.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from tvm import tirx
from tvm.s_tir import Schedule
from tvm.s_tir.schedule import LoopRV, SBlockRV, ScheduleError

from .layout import PatchLayout, ThreadLayout, exact_lanes, largest_divisor_at_most, patch_layout
from .spec import FcmSpec, FcmTiles

UNROLL_STEPS = 64  # auto-unroll budget of the innermost loops (kernel taps, register tiles)


@dataclass(frozen=True)
class KernelPlan:
    """Everything a schedule needs beyond the spec, decided (and checked) by :mod:`.tiles`."""

    tiles: FcmTiles
    layout: ThreadLayout  # threads over the output tile
    chunk: int  # channels per step of the chunked reduction (dw_pw: input, pw_dw_pw: mid; pw_dw: 1)
    patch: PatchLayout | None  # threads over the 1x1-computed patch (pw_dw, pw_dw_pw)
    shared_bytes: int
    scope: str  # "shared" (static, <= 48 KiB) or "shared.dyn"
    staged_input: bool = False  # the 1x1 patch reads the FCM input from shared memory (place_patch_input)


class FcmRule(ABC):
    """A hand-written CUDA schedule for one FCM kind (``dw_pw``, ``pw_dw`` or ``pw_dw_pw``)."""

    kind: ClassVar[str]

    @abstractmethod
    def reduction_channels(self, spec: FcmSpec) -> int:
        """Channels of the reduction that is chunked through shared memory."""

    @abstractmethod
    def patch_shape(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> tuple[int, int, int] | None:
        """(channels, rows, columns) of the 1x1-computed shared patch (None: the kind has none)."""

    def patch_threads(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> PatchLayout | None:
        """How ``tiles.threads`` cover the 1x1 patch (None: no patch, or no layout fits)."""
        return threads_over_patch(self.patch_shape(spec, tiles, chunk), tiles)

    @abstractmethod
    def shared_elements(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> dict[str, int]:
        """Elements of each shared-memory buffer of one thread block."""

    @abstractmethod
    def apply(self, sch: Schedule, spec: FcmSpec, plan: KernelPlan) -> None:
        """Schedule the TE PrimFunc of ``spec`` in place."""


def threads_over_patch(shape: tuple[int, int, int] | None, tiles: FcmTiles) -> PatchLayout | None:
    """How ``tiles`` lay their threads over a 1x1 patch of ``shape`` (None: no patch, or no fit)."""
    if shape is None:
        return None
    return patch_layout(*shape, tiles.threads, tiles.patch_rows, lanes=tiles.patch_lanes)


# -- moves shared by the rules ---------------------------------------------------------------


def loop_depth(sch: Schedule, loop: LoopRV) -> int:
    """Number of loops enclosing ``loop``, itself included."""
    depth, sref = 0, sch.get_sref(loop)
    while sref is not None:
        if isinstance(sref.stmt, tirx.For):
            depth += 1
        sref = sref.parent
    return depth


def loops_below(sch: Schedule, block: SBlockRV, loop: LoopRV) -> list[LoopRV]:
    """The loops of ``block`` nested inside ``loop``."""
    return sch.get_loops(block)[loop_depth(sch, loop) :]


@dataclass
class OutputLoops:
    """The loops of an output-tiled block, outermost first: block, thread, reductions, registers."""

    block: LoopRV  # blockIdx.x: image, channel tile, row tile, column tile
    thread: LoopRV  # threadIdx.x: channel, row, column of the thread layout
    reductions: list[LoopRV]
    registers: list[LoopRV]  # c, y, x of the thread's register tile


def tile_output(sch: Schedule, block: SBlockRV, layout: ThreadLayout, split: int = 1) -> OutputLoops:
    """Tile the n, c, y, x loops of ``block`` over blocks, threads and registers (innermost).

    With ``split > 1`` the block is the workspace block of :func:`split_reduction`, whose loop
    after x deals out the reduction slices: it goes to the block index, innermost, so that the
    blocks of one output tile run together and share its input patch in L2.
    """
    n, c, y, x, *reductions = sch.get_loops(block)
    slices = [reductions.pop(0)] if split > 1 else []
    c_blk, c_thr, c_reg = sch.split(c, [None, layout.channels, layout.reg_c])
    y_blk, y_thr, y_reg = sch.split(y, [None, layout.rows, layout.reg_y])
    x_blk, x_thr, x_reg = sch.split(x, [None, layout.cols, layout.reg_x])
    sch.reorder(n, c_blk, y_blk, x_blk, *slices, c_thr, y_thr, x_thr, *reductions, c_reg, y_reg, x_reg)
    block_loop = sch.fuse(n, c_blk, y_blk, x_blk, *slices)
    thread_loop = sch.fuse(c_thr, y_thr, x_thr)
    sch.bind(block_loop, "blockIdx.x")
    sch.bind(thread_loop, "threadIdx.x")
    return OutputLoops(block_loop, thread_loop, reductions, [c_reg, y_reg, x_reg])


def keep_in_registers(sch: Schedule, acc: SBlockRV, epilogue: SBlockRV, loop: LoopRV) -> None:
    """Accumulate ``acc`` in registers and apply its ``epilogue`` right there, under ``loop``."""
    sch.set_scope(acc, 0, "local")
    sch.reverse_compute_at(epilogue, loop, preserve_unit_loops=True)


def split_reduction(sch: Schedule, acc: SBlockRV, split: int) -> SBlockRV:
    """Deal the (single) reduction of ``acc`` out to ``split`` slices summed apart (``rfactor``).

    Returns the slice block, which writes a float32 workspace ``[split, n, c, y, x]`` in global
    memory; ``acc`` is left summing the workspace over the slices (see :func:`sum_slices`).
    """
    *_, reduction = sch.get_loops(acc)
    slices, _ = sch.split(reduction, [split, None])
    return sch.rfactor(slices, 0)


def keep_slice_in_registers(sch: Schedule, slice_acc: SBlockRV, loop: LoopRV) -> None:
    """Accumulate a slice in registers and store it to the workspace once, under ``loop``."""
    store = sch.cache_write(slice_acc, 0, "local")
    sch.reverse_compute_at(store, loop, preserve_unit_loops=True)


@dataclass
class FinalSum:
    """The last stage's sum, tiled: the block that accumulates it, its loops, the chunk loop."""

    acc: SBlockRV  # the slice block when the reduction is split
    loops: OutputLoops
    chunk_loop: LoopRV  # one chunk of the reduction per step: the producers are computed here
    step_loop: LoopRV  # the channels of one chunk, one per step


def tile_final_sum(sch: Schedule, acc: SBlockRV, epilogue: SBlockRV, plan: KernelPlan) -> FinalSum:
    """Tile the last stage's sum ``acc`` over the output and chunk its reduction, split or not.

    Unsplit, the sum stays in registers and the ``epilogue`` runs right after it. Split, each
    block sums its slice into the workspace and a second kernel sums the slices (``epilogue``
    included).
    """
    split, threads = plan.tiles.split, plan.tiles.threads
    total = acc
    if split > 1:
        acc = split_reduction(sch, total, split)
    loops = tile_output(sch, acc, plan.layout, split)
    chunk_loop, step_loop = sch.split(loops.reductions[0], [None, plan.chunk])
    if split > 1:
        keep_slice_in_registers(sch, acc, loops.thread)
        sum_slices(sch, total, epilogue, threads)
    else:
        keep_in_registers(sch, acc, epilogue, loops.thread)
    return FinalSum(acc, loops, chunk_loop, step_loop)


def sum_slices(sch: Schedule, acc: SBlockRV, epilogue: SBlockRV, threads: int) -> None:
    """The second kernel of a split reduction: a thread per output sums its slices and applies
    the ``epilogue`` (bias, activation, residual, cast)."""
    flat = sch.fuse(*sch.get_loops(epilogue))
    blocks, lanes = sch.split(flat, [None, threads])
    sch.bind(blocks, "blockIdx.x")
    sch.bind(lanes, "threadIdx.x")
    compute_local_at(sch, acc, lanes)


def compute_shared_at(sch: Schedule, block: SBlockRV, loop: LoopRV, scope: str) -> None:
    """Compute ``block``'s output for the whole thread block into shared memory under ``loop``."""
    sch.set_scope(block, 0, scope)  # first: see the module docstring
    sch.compute_at(block, loop, preserve_unit_loops=True)


def compute_local_at(sch: Schedule, block: SBlockRV, loop: LoopRV) -> None:
    """Compute ``block`` (a sum) per thread in registers under ``loop``."""
    sch.set_scope(block, 0, "local")
    sch.compute_at(block, loop)  # unit loops dropped: what remains are register and reduction loops


def spread_over_threads(
    sch: Schedule, block: SBlockRV, under: LoopRV, threads: int, exact: bool = False
) -> LoopRV:
    """Flatten ``block``'s loops below ``under`` and deal them out to the threads, neighbours adjacent.

    ``exact`` uses as many threads as the largest divisor of the element count allows, so that
    the steps cover exactly the block's elements: TVM sizes the regions of *producers* computed
    under these loops from the loop ranges, not from the tail predicate, and a ragged last step
    would make it compute (and store) a larger producer region. Returns the thread loop.
    """
    flat = sch.fuse(*loops_below(sch, block, under))
    extent = int(sch.get(flat).extent)
    lanes = exact_lanes(extent, threads) if exact else min(extent, threads)
    _, lane = sch.split(flat, [None, lanes])
    sch.bind(lane, "threadIdx.x")
    return lane


def stage_weights(
    sch: Schedule, consumer: SBlockRV, buffer: str, under: LoopRV, threads: int, scope: str
) -> SBlockRV:
    """Copy the part of ``buffer`` (a weight, or an unpadded input) that ``consumer`` reads under
    ``under`` into shared memory."""
    cached = sch.cache_read(consumer, buffer, scope)
    sch.compute_at(cached, under, preserve_unit_loops=True)
    spread_over_threads(sch, cached, under, threads)
    return cached


def load_weights_in_vectors(sch: Schedule, acc: SBlockRV, staged: SBlockRV, step: LoopRV, lanes: int) -> None:
    """Let each reduction ``step`` of the 1x1 sum ``acc`` load a thread's weights ``lanes`` at a time.

    The staged weights (``staged``, ``[out, in, 1, 1]`` in shared memory) are stored transposed,
    ``in`` outer, so a thread's ``reg_c`` output channels of one step are contiguous; the step
    copies them to registers in vectors of ``lanes`` (``float4`` for 4 float32 lanes). The
    plan checks that ``reg_c`` and the transposed rows are whole vectors (aligned accesses).
    """
    sch.transform_layout(staged, ("write", 0), lambda o, i, kh, kw: (kh, kw, i, o))
    copy_in_vectors(sch, acc, staged, step, lanes)


def load_results_in_vectors(sch: Schedule, acc: SBlockRV, result: SBlockRV, step: LoopRV, lanes: int) -> None:
    """Let each reduction ``step`` of the last PW sum ``acc`` load a thread's depthwise results
    (``result``, in shared memory) ``lanes`` columns at a time.

    A thread's ``reg_x`` output columns are adjacent, so its results of one channel and row are
    contiguous; the step copies them to registers in vectors (``float4``, ``half2``, ...). The
    plan checks that the rows are whole vectors (aligned accesses).
    """
    copy_in_vectors(sch, acc, result, step, lanes)


def copy_in_vectors(sch: Schedule, acc: SBlockRV, producer: SBlockRV, step: LoopRV, lanes: int) -> None:
    """Copy what each ``step`` of ``acc`` reads of ``producer``'s shared buffer to registers,
    the innermost loop ``lanes`` at a time (vector loads; the caller makes it contiguous)."""
    shared = sch.get(producer).writes[0].source
    index = [region.source.same_as(shared) for region in sch.get(acc).reads].index(True)
    in_registers = sch.cache_read(acc, index, "local")
    sch.compute_at(in_registers, step)
    *_, innermost = loops_below(sch, in_registers, step)
    _, vector = sch.split(innermost, [None, lanes])
    sch.vectorize(vector)


def compute_patch(
    sch: Schedule,
    patch: SBlockRV,
    acc: SBlockRV,
    under: LoopRV,
    layout: PatchLayout,
    scope: str,
    unroll: int = 1,
) -> LoopRV:
    """Compute a 1x1-convolution patch (``acc`` summed, ``patch`` its epilogue) into shared memory.

    Each thread owns ``layout.reg_c`` contiguous channels of a column of ``layout.reg_y`` pixels
    per step, ``layout.rows`` such row blocks per step; it sums the input channels into
    ``reg_c x reg_y`` registers, so every input value it loads feeds ``reg_c`` multiply-adds and
    every weight ``reg_y``; the sum over the input channels is unrolled by ``unroll``. Returns
    the innermost loop of that sum (one input channel per step).
    """
    compute_shared_at(sch, patch, under, scope)
    c, y, x = loops_below(sch, patch, under)[-3:]
    group, reg = sch.split(c, [layout.channel_groups, layout.reg_c])
    if layout.reg_y == 1:  # no unit loop: the kernel the measured tables hold, unchanged
        row_step, row_lane = sch.split(y, [None, layout.rows])
        sch.reorder(group, row_lane, x, row_step, reg)
    else:
        row_step, row_lane, row_reg = sch.split(y, [None, layout.rows, layout.reg_y])
        sch.reorder(group, row_lane, x, row_step, row_reg, reg)
    sch.bind(sch.fuse(group, row_lane, x), "threadIdx.x")
    compute_local_at(sch, acc, row_step)
    *register_loops, reduce_loop = loops_below(sch, acc, row_step)
    sch.reorder(reduce_loop, *register_loops)
    init_before(sch, acc, reduce_loop)
    return unroll_reduction(sch, reduce_loop, unroll)


def unroll_reduction(sch: Schedule, loop: LoopRV, unroll: int) -> LoopRV:
    """Unroll ``loop`` (a sum over channels) by the largest divisor of its extent up to ``unroll``:
    the loads of that many channels are then in flight together instead of one after another.
    Returns the innermost loop of the sum."""
    factor = largest_divisor_at_most(int(sch.get(loop).extent), unroll)
    if factor == 1:
        return loop
    _, inner = sch.split(loop, [None, factor])
    sch.unroll(inner)
    return inner


def place_patch_input(
    sch: Schedule, acc: SBlockRV, under: LoopRV, threads: int, scope: str, staged: bool
) -> None:
    """Where the 1x1 sums ``acc`` of a patch read their input (zero-padded around the image).

    Not ``staged``: from global memory, one value per multiply-add, the padding a condition
    (the pad stage inlined). That is a dependent load per step which a few warps per SM do not
    hide (the PW->DW kernels measured 18x their roofline). ``staged``: all threads first copy the
    padded input region of the block into shared memory, coalesced and with many loads in
    flight, under ``under`` (for PW->DW->PW the block loop, so once for all chunks).
    """
    pad = _block_or_none(sch, "s0_pad")
    if not staged:
        if pad is not None:
            sch.compute_inline(pad)
        return
    if pad is None:  # a DW without padding: the input itself
        stage_weights(sch, acc, "x", under, threads, scope)
    else:
        compute_shared_at(sch, pad, under, scope)
        spread_over_threads(sch, pad, under, threads)


def _block_or_none(sch: Schedule, name: str) -> SBlockRV | None:
    try:
        return sch.get_sblock(name)
    except ScheduleError:
        return None


def compute_depthwise_shared(
    sch: Schedule, out: SBlockRV, acc: SBlockRV, under: LoopRV, threads: int, scope: str, cols: int = 1
) -> None:
    """Compute a depthwise tile into shared memory, ``cols`` adjacent outputs of a row per thread
    and step.

    With ``cols > 1`` the taps loop runs outside the columns: each weight is loaded once for
    ``cols`` sums, and neighbouring columns read overlapping inputs, which the compiler loads
    once in the unrolled code: ``(cols + k - 1) * k`` inputs and ``k * k`` weights for the
    ``cols * k * k`` multiply-adds of a stride-1 ``k x k`` window, instead of ``2 * cols * k * k``
    loads.
    """
    compute_shared_at(sch, out, under, scope)
    if cols == 1:
        lane = spread_over_threads(sch, out, under, threads, exact=True)
        compute_local_at(sch, acc, lane)
        return  # the zero-init stays inside the taps loop: unrolled, it is a compile-time condition
    *outer, x = loops_below(sch, out, under)
    x_group, _ = sch.split(x, [None, cols])
    flat = sch.fuse(*outer, x_group)
    _, lane = sch.split(flat, [None, exact_lanes(int(sch.get(flat).extent), threads)])
    sch.bind(lane, "threadIdx.x")
    compute_local_at(sch, acc, lane)
    column, *taps = loops_below(sch, acc, lane)
    sch.reorder(*taps, column)


def init_before(sch: Schedule, acc: SBlockRV, loop: LoopRV) -> None:
    """Zero the accumulators of ``acc`` before ``loop`` rather than on its first iteration.

    Not possible where a tail predicate makes the block bindings non-affine; the init then
    stays a uniform branch in the loop, which is correct and only slightly slower.
    """
    with contextlib.suppress(ScheduleError):
        sch.decompose_reduction(acc, loop)


def unroll_inner(sch: Schedule, loop: LoopRV) -> None:
    """Let the code generator unroll the small loops under ``loop`` (taps, register tiles)."""
    sch.annotate(loop, "pragma_auto_unroll_max_step", UNROLL_STEPS)
    sch.annotate(loop, "pragma_unroll_explicit", 1)
