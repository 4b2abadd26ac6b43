"""PW -> DW on tensor cores (float16): the PW is a GEMM on WMMA fragments over the DW's input patch.

A thread block computes ``channel_tile`` channels (the PW's outputs, which the DW keeps) over one
``tile_h x tile_w`` output tile of one image. The GEMM's pixels are the tile's input patch, halo
included, as one flat dimension padded to whole 16-pixel fragments (a 7x7 image with a 3x3 DW
reads a 9x9 patch: 81 pixels, 96 computed). Its reduction is the input channels, padded with
zeros to whole fragments (40 -> 48). Per chunk of input channels the block stages the input patch
(zero outside the image) and the PW weights in shared memory and multiplies them on tensor cores
(``wmma`` 16x16x16, float32 accumulators); then it stores the accumulators to shared memory,
applies bias and activation (zero outside the image: the DW's padding) into a float16 patch, and
computes the DW from it on CUDA cores, writing the output once: a thread per (channel, column)
pair of the tile, holding the channel's DW weights, the column's sums and one kernel column of
its inputs in registers (:func:`depthwise_by_columns`; the pairs padded to whole rounds of the
threads, the padding recomputing the tile's last channel and storing nothing).

Deep PW->DW layers (hundreds of channels at 14x14 and 7x7) are GEMM-bound; the CUDA-core kernel
issues a shared load per multiply-add of the patch there and loses to MetaSchedule's separate
kernels by 2-10x in float16 at batch 32 (docs/results.md).

Written in TVMScript over the tiled domain, like :mod:`.cuda_dw_pw_tc` (whose WMMA helpers it uses).
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from .compute import activation_builders
from .cuda_base import loops_below
from .layout import ceil_div
from .spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .wmma import (
    ACCUMULATORS,
    CHUNKS,
    DTYPE,
    FRAGMENT,
    HALF_BYTES,
    SHARED,
    STATIC_SMEM,
    WARP,
    shared_memory_problems,
    split_warps,
    spread,
    stored_output,
    tensorize_gemm,
    tile_problems,
    whole_fragments,
    without_param,
)


def tensor_core_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` with ``tensor_cores`` cannot run the PW->DW ``spec`` (empty if they can)."""
    found = tile_problems(spec, tiles)
    if tiles.split != 1:
        found.append("PW->DW has no reduction to split: split must be 1")
    mid, turns = spec.output.c, tiles.channel_tile * tiles.patch_reuse
    if tiles.patch_reuse < 1 or mid % turns:
        found.append(
            f"{tiles.patch_reuse} channel tiles of {tiles.channel_tile} per block do not divide {mid}"
        )
    if not found:
        found = shared_memory_problems(shared_bytes(spec, tiles), accumulator_bytes(spec, tiles), max_smem)
    return found


def patch_shape(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """Rows and columns of the PW result that one output tile's DW reads (halo included)."""
    dw = spec.stages[1]
    return (tiles.tile_h - 1) * dw.stride + dw.kernel, (tiles.tile_w - 1) * dw.stride + dw.kernel


def padded_pixels(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The patch's pixels as the GEMM sees them: whole fragments, as many per pixel warp."""
    rows, cols = patch_shape(spec, tiles)
    per_step = FRAGMENT * _warps(tiles)[1]
    return ceil_div(rows * cols, per_step) * per_step


def padded_channels(spec: FcmSpec) -> int:
    """The GEMM's reduction: the input channels in whole fragments."""
    return whole_fragments(spec.in_channels)


def chunk(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Input channels per step: all of them where the block stages its patch whole (the weights of
    a channel tile then go to shared memory once per turn, and the GEMM runs between two barriers
    instead of two per step), else the largest of :data:`CHUNKS` dividing the padded count whose
    buffers fit in static shared memory (the smallest where none does)."""
    if stages_whole_patch(tiles):
        return padded_channels(spec)
    steps = [c for c in CHUNKS if padded_channels(spec) % c == 0]
    return next((c for c in steps if _shared_bytes(spec, tiles, c) <= STATIC_SMEM), steps[-1])


def fragment_grid(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """(channel, pixel) fragments of a block's GEMM result."""
    return tiles.channel_tile // FRAGMENT, padded_pixels(spec, tiles) // FRAGMENT


def _warps(tiles: FcmTiles) -> tuple[int, int]:
    """(channel, pixel) warps; every split fits, the patch being padded to whole fragments per
    pixel warp."""
    return split_warps(tiles.threads // WARP, tiles.channel_tile // FRAGMENT)


def stages_whole_patch(tiles: FcmTiles) -> bool:
    """Whether a block stages its input patch whole, once for its ``patch_reuse`` channel tiles,
    rather than a chunk of input channels at a time (the schedule and the shared-memory count
    both ask)."""
    return tiles.patch_reuse > 1


def depthwise_columns(tiles: FcmTiles) -> int:
    """(channel, column) pairs of the DW, a thread each, padded to whole rounds of the threads."""
    return ceil_div(tiles.channel_tile * tiles.tile_w, tiles.threads) * tiles.threads


def accumulator_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 GEMM result staged for the DW (static shared memory)."""
    return tiles.channel_tile * padded_pixels(spec, tiles) * 4


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """One block's shared memory: weights, input patch, PW result (float16), accumulators."""
    return _shared_bytes(spec, tiles, chunk(spec, tiles))


def _shared_bytes(spec: FcmSpec, tiles: FcmTiles, step: int) -> int:
    pixels = padded_pixels(spec, tiles)
    rows, cols = patch_shape(spec, tiles)
    staged = padded_channels(spec) if stages_whole_patch(tiles) else step  # input channels of the patch
    halves = tiles.channel_tile * step + staged * pixels + tiles.channel_tile * rows * cols
    return halves * HALF_BYTES + accumulator_bytes(spec, tiles)


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    return tiles.channel_tile * padded_pixels(spec, tiles) // tiles.threads


def padding_waste(spec: FcmSpec, tiles: FcmTiles) -> float:
    return padded_pixels(spec, tiles) / (tiles.tile_h * tiles.tile_w)


def tensor_core_definition(spec: FcmSpec, tiles: FcmTiles, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """PW -> DW over (image, tile row, tile column, channel, padded patch pixel); see the module doc.
    ``fast_math``: the activations of :data:`~.compute.FAST_ACTIVATION_BUILDERS` (CUDA only)."""
    pw, dw = spec.stages
    assert isinstance(pw, Pointwise) and isinstance(dw, Depthwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, m_, ho_, wo_ = spec.output.as_tuple()
    k_, s_ = dw.kernel, dw.stride
    top, left = dw.pads[0], dw.pads[1]
    th, tw, ct = tiles.tile_h, tiles.tile_w, tiles.channel_tile
    ny, nx = ho_ // th, wo_ // tw
    rows, cols = patch_shape(spec, tiles)
    real, p_, kc_ = rows * cols, padded_pixels(spec, tiles), padded_channels(spec)
    cq_ = depthwise_columns(tiles)
    reuse = tiles.patch_reuse
    pw_act = activation_builders(fast_math)[pw.activation]
    f16, f32 = DTYPE, "float32"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)

    def patch_result(s0_out, vn, vty, vtx, vm, row, col):
        return s0_out[vn, vty, vtx, vm, row, col]

    depthwise = depthwise_stage(spec, tiles, fast_math, patch_result)

    @T.prim_func(s_tir=True)
    def fcm(
        x: T.Buffer((n_, c_, h_, w_), f16),
        w0: T.Buffer((m_, c_, 1, 1), f16),
        b0: T.Buffer((m_,), f16),
        w1: T.Buffer((m_, 1, k_, k_), f16),
        b1: T.Buffer((m_,), f16),
        residual: T.Buffer(res_shape, f16),
        out: T.Buffer((n_, m_, ho_, wo_), f16),
    ):
        T.func_attr({"tirx.noalias": True})
        s0_w = T.sblock_alloc_buffer((m_, kc_), f16)
        s0_pad = T.sblock_alloc_buffer((n_, ny, nx, kc_, p_), f16)
        s0_acc = T.sblock_alloc_buffer((n_, ny, nx, m_, p_), f32)
        s0_out = T.sblock_alloc_buffer((n_, ny, nx, m_, rows, cols), f16)
        s1_acc = T.sblock_alloc_buffer((n_, ny, nx, m_ // ct, cq_, th), f32)
        for m, c in T.grid(m_, kc_):
            with T.sblock("s0_w"):
                vm, vc = T.axis.remap("SS", [m, c])
                s0_w[vm, vc] = T.if_then_else(vc < c_, w0[vm, T.min(vc, c_ - 1), 0, 0], T.float16(0))
        for n, ty, tx, c, p in T.grid(n_, ny, nx, kc_, p_):
            with T.sblock("s0_pad"):
                vn, vty, vtx, vc, vp = T.axis.remap("SSSSS", [n, ty, tx, c, p])
                yy = T.meta_var(vty * th * s_ + vp // cols - top)
                xx = T.meta_var(vtx * tw * s_ + vp % cols - left)
                inside = T.meta_var(vc < c_ and vp < real and yy >= 0 and yy < h_ and xx >= 0 and xx < w_)
                s0_pad[vn, vty, vtx, vc, vp] = T.if_then_else(
                    inside,
                    x[vn, T.min(vc, c_ - 1), T.max(T.min(yy, h_ - 1), 0), T.max(T.min(xx, w_ - 1), 0)],
                    T.float16(0),
                )
        # one loop nest per block of the grid (image, tile, channel tile), every stage inside it:
        # the DW's sliding window is then never solved for (TVM cannot invert it into a domain)
        for n, ty, tx, g, turn in T.grid(n_, ny, nx, m_ // (ct * reuse), reuse):
            mb = T.meta_var(g * reuse + turn)  # the channel tile
            for mi, p, c in T.grid(ct, p_, kc_):
                with T.sblock("s0_acc"):
                    vn, vty, vtx = T.axis.remap("SSS", [n, ty, tx])
                    vm = T.axis.spatial(m_, mb * ct + mi)
                    vp, vc = T.axis.remap("SR", [p, c])
                    with T.init():
                        s0_acc[vn, vty, vtx, vm, vp] = T.float32(0)
                    s0_acc[vn, vty, vtx, vm, vp] = s0_acc[vn, vty, vtx, vm, vp] + T.Cast(
                        f32, s0_w[vm, vc]
                    ) * T.Cast(f32, s0_pad[vn, vty, vtx, vc, vp])
            for mi, i, j in T.grid(ct, rows, cols):
                with T.sblock("s0_out"):
                    vn, vty, vtx = T.axis.remap("SSS", [n, ty, tx])
                    vm = T.axis.spatial(m_, mb * ct + mi)
                    vi, vj = T.axis.remap("SS", [i, j])
                    yy = T.meta_var(vty * th * s_ + vi - top)
                    xx = T.meta_var(vtx * tw * s_ + vj - left)
                    inside = T.meta_var(yy >= 0 and yy < h_ and xx >= 0 and xx < w_)
                    s0_out[vn, vty, vtx, vm, vi, vj] = T.if_then_else(
                        inside,
                        T.Cast(f16, pw_act(s0_acc[vn, vty, vtx, vm, vi * cols + vj] + T.Cast(f32, b0[vm]))),
                        T.float16(0),
                    )
            depthwise(n, ty, tx, mb, s0_out, s1_acc, w1, b1, residual, out)

    return fcm if spec.residual else without_param(fcm, 5)  # the body never reads it


def depthwise_stage(spec: FcmSpec, tiles: FcmTiles, fast_math: bool, load_result):
    """The DW of one channel tile of a PW->DW block, from the PW result in shared memory, as a
    TVMScript macro of the block's (image, tile row, tile column, channel tile) and its buffers:
    a column of the tile per (channel, column) pair (:func:`depthwise_by_columns`), the pairs
    padded to whole rounds of threads (a padded pair recomputes the tile's last channel, never
    stored). ``load_result(s0_out, vn, vty, vtx, vm, row, col)`` reads the PW result at a row and
    column of the tile's patch, as the kernel lays it out."""
    dw = spec.stages[1]
    _, m_, _, _ = spec.output.as_tuple()
    k_, s_, f32 = dw.kernel, dw.stride, "float32"
    th, tw, ct, cq_ = tiles.tile_h, tiles.tile_w, tiles.channel_tile, depthwise_columns(tiles)
    epilogue = stored_output(activation_builders(fast_math)[dw.activation], spec.residual, spec.dtype)

    @T.macro
    def depthwise(n, ty, tx, mb, s0_out, s1_acc, w1, b1, residual, out):
        for q, y, j, i in T.grid(cq_, th, k_, k_):
            with T.sblock("s1_acc"):
                vn, vty, vtx = T.axis.remap("SSS", [n, ty, tx])
                vmb = T.axis.spatial(m_ // ct, mb)
                vq, vy, vj, vi = T.axis.remap("SSRR", [q, y, j, i])
                vm = T.meta_var(vmb * ct + T.min(vq // tw, ct - 1))
                with T.init():
                    s1_acc[vn, vty, vtx, vmb, vq, vy] = T.float32(0)
                s1_acc[vn, vty, vtx, vmb, vq, vy] = s1_acc[vn, vty, vtx, vmb, vq, vy] + T.Cast(
                    f32, load_result(s0_out, vn, vty, vtx, vm, vy * s_ + vi, vq % tw * s_ + vj)
                ) * T.Cast(f32, w1[vm, 0, vi, vj])
        for q, y in T.grid(cq_, th):
            with T.sblock("s1_out"):
                vn, vty, vtx = T.axis.remap("SSS", [n, ty, tx])
                vmb = T.axis.spatial(m_ // ct, mb)
                vq, vy = T.axis.remap("SS", [q, y])
                vm = T.meta_var(vmb * ct + vq // tw)
                yy = T.meta_var(vty * th + vy)
                xx = T.meta_var(vtx * tw + vq % tw)
                res = T.meta_var(residual[vn, vm, yy, xx] if spec.residual else T.float16(0))
                if vq < ct * tw:  # a body condition, as the DW's padded pairs have no output
                    out[vn, vm, yy, xx] = epilogue(s1_acc[vn, vty, vtx, vmb, vq, vy], b1[vm], res)

    return depthwise


def schedule(sch: Schedule, spec: FcmSpec, tiles: FcmTiles) -> None:
    """Schedule :func:`tensor_core_definition` in ``sch`` (see the module doc)."""
    warps_c, warps_p = _warps(tiles)
    frags_c, frags_p = fragment_grid(spec, tiles)
    threads = (warps_c * warps_p, WARP)
    gemm = sch.get_sblock("s0_acc")
    n, ty, tx, m_group, m_turn, m, p, c = sch.get_loops(gemm)
    block = sch.fuse(n, ty, tx, m_group)
    sch.bind(block, "blockIdx.x")
    m_warp, m_frag, m_in = sch.split(m, [warps_c, frags_c // warps_c, FRAGMENT])
    p_warp, p_frag, p_in = sch.split(p, [warps_p, frags_p // warps_p, FRAGMENT])
    step, c_frag, c_in = sch.split(c, [None, chunk(spec, tiles) // FRAGMENT, FRAGMENT])
    sch.reorder(m_warp, p_warp, step, c_frag, m_frag, p_frag, m_in, p_in, c_in)
    warp = sch.fuse(m_warp, p_warp)
    sch.bind(warp, "threadIdx.y")

    store = sch.cache_write(gemm, 0, "wmma.accumulator")
    sch.reverse_compute_at(store, warp)
    sch.set_scope(store, 0, ACCUMULATORS)
    weights, pad = sch.get_sblock("s0_w"), sch.get_sblock("s0_pad")
    a_frag = sch.cache_read(gemm, 0, "wmma.matrix_a")
    b_frag = sch.cache_read(gemm, 1, "wmma.matrix_b")
    sch.compute_at(a_frag, c_frag)
    sch.compute_at(b_frag, c_frag)
    patch_at = block if stages_whole_patch(tiles) else step
    for staged, at in ((weights, step), (pad, patch_at)):
        sch.set_scope(staged, 0, SHARED)
        sch.compute_at(staged, at)
        spread(sch, staged, at, threads)

    pw_out, dw_acc, epilogue = sch.get_sblock("s0_out"), sch.get_sblock("s1_acc"), sch.get_sblock("s1_out")
    sch.set_scope(pw_out, 0, SHARED)
    spread(sch, pw_out, m_turn, threads)
    depthwise_by_columns(sch, dw_acc, epilogue, threads)

    tensorize_gemm(sch, gemm, step, a_frag, b_frag, store)


def depthwise_by_columns(
    sch: Schedule, acc, epilogue, threads: tuple[int, int], cache_column: bool = True
) -> None:
    """A thread per (channel, column) pair of the tile: the column's sums, the channel's DW
    weights and (``cache_column``) one kernel column of its inputs stay in registers, so each
    shared load feeds up to ``kernel`` multiply-adds (one load per multiply-add and a global load
    per weight before), and neighbouring lanes store neighbouring pixels."""
    pairs, _ = sch.get_loops(epilogue)[-2:]
    _, warp, lane = sch.split(pairs, [None, *threads])
    sch.bind(warp, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    sch.set_scope(acc, 0, "local")
    sch.compute_at(acc, lane)
    row, kernel_col, kernel_row = sch.get_loops(acc)[-3:]
    sch.reorder(kernel_col, kernel_row, row)
    weights = sch.cache_read(acc, 1, "local")
    copies = []
    if cache_column:
        column = sch.cache_read(acc, 0, "local")
        sch.compute_at(column, kernel_col)
        copies += loops_below(sch, column, kernel_col)
    sch.compute_at(weights, lane)
    copies += loops_below(sch, weights, lane)
    for loop in (kernel_col, kernel_row, row, *copies):
        sch.unroll(loop)
