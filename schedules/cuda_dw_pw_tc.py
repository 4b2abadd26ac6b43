"""DW -> PW on tensor cores (float16): the PW is a GEMM on WMMA fragments, the DW result its B matrix.

A thread block computes ``channel_tile`` output channels over one ``tile_h x tile_w`` output tile
of one image. Its pixels are a flat GEMM dimension padded to whole 16-pixel fragments (a 7x7 tile
is 64 pixels: 49 real, 15 computed on zeros and never stored). Per chunk of 32 input channels
(16 where 32 does not divide them) the block

1. stages the chunk's input patch (with halo, zero-padded) and PW weights in shared memory,
2. computes the DW (bias, activation, float16) of the chunk into shared memory as a
   ``chunk x pixels`` matrix,
3. multiplies the weights by it on tensor cores (``wmma`` 16x16x16, float32 accumulators in
   fragments, each warp a grid of them),

then stores the accumulators to shared memory and applies bias, activation and residual as it
writes the output once. Deep layers are GEMM-bound (hundreds of channels at 14x14 and 7x7, where
the intermediate stays in L2 anyway); the CUDA-core kernel issues one shared load per
multiply-add there (docs/kernels.md).

The computation is written in TVMScript over the tiled pixel domain, not in TE: the epilogue
maps a tile's flat pixel back to (row, column), which TVM's region analysis cannot invert when
it places an epilogue written over the output's domain. The schedule is TensorIR primitives and
TVM's registered WMMA intrinsics, so each step is a verified rewrite of that definition.
"""

from __future__ import annotations

import functools
import operator

import tvm
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from .compute import activation_builders
from .spec import Depthwise, FcmSpec, FcmTiles
from .wmma import (
    ACCUMULATORS,
    DTYPE,
    FRAGMENT,
    HALF_BYTES,
    SHARED,
    WARP,
    largest_chunk,
    shared_memory_problems,
    spread,
    spread_over_grid,
    stored_output,
    tensorize_gemm,
    tile_problems,
    warp_grid,
    whole_fragments,
    without_param,
)


def tensor_core_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` with ``tensor_cores`` cannot run ``spec`` (empty if they can)."""
    found = [] if spec.kind == "dw_pw" else [f"tensor cores only for dw_pw, not {spec.kind}"]
    found += tile_problems(spec, tiles)
    if spec.in_channels % FRAGMENT:
        found.append(f"{spec.in_channels} input channels are not a multiple of {FRAGMENT}")
    elif spec.in_channels % ((step := chunk(spec)) * tiles.split):
        found.append(f"split {tiles.split} does not divide {spec.in_channels} channels in chunks of {step}")
    if not found and warp_grid_of(tiles) is None:
        found.append(f"{tiles.threads // WARP} warps do not tile the {fragment_grid(tiles)} fragments")
    if not found:
        found = shared_memory_problems(shared_bytes(spec, tiles), accumulator_bytes(tiles), max_smem)
    return found


def chunk(spec: FcmSpec) -> int:
    """Input channels per shared-memory step (:func:`~.wmma.largest_chunk`)."""
    return largest_chunk(spec.in_channels)


def padded_pixels(tiles: FcmTiles) -> int:
    """A tile's pixels as the GEMM sees them: whole fragments."""
    return whole_fragments(tiles.tile_h * tiles.tile_w)


def fragment_grid(tiles: FcmTiles) -> tuple[int, int]:
    """(channel, pixel) fragments of a block's output."""
    return tiles.channel_tile // FRAGMENT, padded_pixels(tiles) // FRAGMENT


def warp_grid_of(tiles: FcmTiles) -> tuple[int, int] | None:
    """(channel, pixel) warps of a block; None when the warps do not tile its fragments."""
    return warp_grid(tiles.threads // WARP, fragment_grid(tiles))


def patch_shape(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """Input rows and columns a tile reads, padded pixels included (they read zeros or junk rows)."""
    dw = spec.stages[0]
    rows = (padded_pixels(tiles) - 1) // tiles.tile_w * dw.stride + dw.kernel
    return rows, (tiles.tile_w - 1) * dw.stride + dw.kernel


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    return tiles.channel_tile * padded_pixels(tiles) // tiles.threads


def padding_waste(spec: FcmSpec, tiles: FcmTiles) -> float:
    return padded_pixels(tiles) / (tiles.tile_h * tiles.tile_w)


def accumulator_bytes(tiles: FcmTiles) -> int:
    """The float32 accumulators staged for the epilogue (static shared memory)."""
    return tiles.channel_tile * padded_pixels(tiles) * 4


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """One block's shared memory: weights, input patch and DW result (float16), accumulators."""
    rows, cols = patch_shape(spec, tiles)
    step = chunk(spec)
    halves = tiles.channel_tile * step + step * rows * cols + step * padded_pixels(tiles)
    return halves * HALF_BYTES + accumulator_bytes(tiles)


def tensor_core_definition(spec: FcmSpec, tiles: FcmTiles, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """DW -> PW over (image, tile row, tile column, channel, padded pixel); see the module doc.
    ``fast_math``: the activations of :data:`~.compute.FAST_ACTIVATION_BUILDERS` (CUDA only)."""
    dw, pw = spec.stages
    assert isinstance(dw, Depthwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, o_, ho_, wo_ = spec.output.as_tuple()
    k_, s_ = dw.kernel, dw.stride
    top, left = dw.pads[0], dw.pads[1]
    th, tw = tiles.tile_h, tiles.tile_w
    real, p_ = th * tw, padded_pixels(tiles)
    ny, nx = ho_ // th, wo_ // tw
    rows, cols = patch_shape(spec, tiles)
    builders = activation_builders(fast_math)
    dw_act, pw_act = builders[dw.activation], builders[pw.activation]
    f16, f32 = DTYPE, "float32"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)
    sp = tiles.split
    slice_ = c_ // sp

    def sum_slices(parts):
        return functools.reduce(operator.add, parts)

    epilogue = stored_output(pw_act, spec.residual)

    @T.prim_func(s_tir=True)
    def fcm(
        x: T.Buffer((n_, c_, h_, w_), f16),
        w0: T.Buffer((c_, 1, k_, k_), f16),
        b0: T.Buffer((c_,), f16),
        w1: T.Buffer((o_, c_, 1, 1), f16),
        b1: T.Buffer((o_,), f16),
        residual: T.Buffer(res_shape, f16),
        out: T.Buffer((n_, o_, ho_, wo_), f16),
    ):
        T.func_attr({"tirx.noalias": True})
        s0_pad = T.sblock_alloc_buffer((n_, ny, nx, c_, rows, cols), f16)
        s0_acc = T.sblock_alloc_buffer((n_, ny, nx, c_, p_), f32)
        s0_out = T.sblock_alloc_buffer((n_, ny, nx, c_, p_), f16)
        s1_acc = T.sblock_alloc_buffer((sp, n_, ny, nx, o_, p_), f32)
        for n, ty, tx, c, i, j in T.grid(n_, ny, nx, c_, rows, cols):
            with T.sblock("s0_pad"):
                vn, vty, vtx, vc, vi, vj = T.axis.remap("SSSSSS", [n, ty, tx, c, i, j])
                yy = T.meta_var(vty * th * s_ + vi - top)
                xx = T.meta_var(vtx * tw * s_ + vj - left)
                s0_pad[vn, vty, vtx, vc, vi, vj] = T.if_then_else(
                    yy >= 0 and yy < h_ and xx >= 0 and xx < w_, x[vn, vc, yy, xx], T.float16(0)
                )
        for n, ty, tx, c, p, i, j in T.grid(n_, ny, nx, c_, p_, k_, k_):
            with T.sblock("s0_acc"):
                vn, vty, vtx, vc, vp, vi, vj = T.axis.remap("SSSSSRR", [n, ty, tx, c, p, i, j])
                with T.init():
                    s0_acc[vn, vty, vtx, vc, vp] = T.float32(0)
                s0_acc[vn, vty, vtx, vc, vp] = s0_acc[vn, vty, vtx, vc, vp] + T.Cast(
                    f32, s0_pad[vn, vty, vtx, vc, vp // tw * s_ + vi, vp % tw * s_ + vj]
                ) * T.Cast(f32, w0[vc, 0, vi, vj])
        for n, ty, tx, c, p in T.grid(n_, ny, nx, c_, p_):
            with T.sblock("s0_out"):
                vn, vty, vtx, vc, vp = T.axis.remap("SSSSS", [n, ty, tx, c, p])
                s0_out[vn, vty, vtx, vc, vp] = T.Cast(
                    f16, dw_act(s0_acc[vn, vty, vtx, vc, vp] + T.Cast(f32, b0[vc]))
                )
        for sl, n, ty, tx, o, p, c in T.grid(sp, n_, ny, nx, o_, p_, slice_):
            with T.sblock("s1_acc"):
                vs, vn, vty, vtx, vo, vp, vc = T.axis.remap("SSSSSSR", [sl, n, ty, tx, o, p, c])
                with T.init():
                    s1_acc[vs, vn, vty, vtx, vo, vp] = T.float32(0)
                s1_acc[vs, vn, vty, vtx, vo, vp] = s1_acc[vs, vn, vty, vtx, vo, vp] + T.Cast(
                    f32, w1[vo, vs * slice_ + vc, 0, 0]
                ) * T.Cast(f32, s0_out[vn, vty, vtx, vs * slice_ + vc, vp])
        for n, ty, tx, o, p in T.grid(n_, ny, nx, o_, p_):
            with T.sblock("s1_out"):
                vn, vty, vtx, vo, vp = T.axis.remap("SSSSS", [n, ty, tx, o, p])
                yy = T.meta_var(vty * th + vp // tw)
                xx = T.meta_var(vtx * tw + vp % tw)
                res = T.meta_var(residual[vn, vo, yy, xx] if spec.residual else T.float16(0))
                acc = T.meta_var(sum_slices([s1_acc[k, vn, vty, vtx, vo, vp] for k in range(sp)]))
                if vp < real:  # a body condition: reverse_compute_at drops a block predicate
                    out[vn, vo, yy, xx] = epilogue(acc, b1[vo], res)

    return fcm if spec.residual else without_param(fcm, 5)  # the body never reads it


def schedule(sch: Schedule, spec: FcmSpec, tiles: FcmTiles) -> None:
    """Schedule :func:`tensor_core_definition` in ``sch`` (see the module doc)."""
    warps_c, warps_p = warp_grid_of(tiles)
    frags_c, frags_p = fragment_grid(tiles)
    threads = (warps_c * warps_p, WARP)
    gemm = sch.get_sblock("s1_acc")
    sl, n, ty, tx, o, p, c = sch.get_loops(gemm)
    o_block, o_warp, o_frag, o_in = sch.split(o, [None, warps_c, frags_c // warps_c, FRAGMENT])
    p_warp, p_frag, p_in = sch.split(p, [warps_p, frags_p // warps_p, FRAGMENT])
    step, c_frag, c_in = sch.split(c, [None, chunk(spec) // FRAGMENT, FRAGMENT])
    sch.reorder(n, ty, tx, o_block, sl, o_warp, p_warp, step, c_frag, o_frag, p_frag, o_in, p_in, c_in)
    block = sch.fuse(n, ty, tx, o_block, sl)  # a tile's slices run side by side
    sch.bind(block, "blockIdx.x")
    warp = sch.fuse(o_warp, p_warp)
    sch.bind(warp, "threadIdx.y")

    split = tiles.split > 1
    store = sch.cache_write(gemm, 0, "wmma.accumulator")
    sch.reverse_compute_at(store, warp)
    if not split:  # else the slices' partial sums go to a global workspace, summed by a 2nd kernel
        sch.set_scope(store, 0, ACCUMULATORS)
    weights = sch.cache_read(gemm, 0, SHARED)
    sch.compute_at(weights, step)
    a_frag = sch.cache_read(gemm, 0, "wmma.matrix_a")
    sch.compute_at(a_frag, c_frag)
    for copy in (weights, a_frag):  # WMMA takes 2-D matrices: drop the 1x1 kernel's unit axes
        sch.transform_layout(copy, ("write", 0), lambda o, c, unit_h, unit_w: (o, c))
    dw_out, dw_acc, pad = sch.get_sblock("s0_out"), sch.get_sblock("s0_acc"), sch.get_sblock("s0_pad")
    sch.set_scope(dw_out, 0, SHARED)
    b_frag = sch.cache_read(gemm, 1, "wmma.matrix_b")
    sch.compute_at(b_frag, c_frag)
    sch.compute_at(dw_out, step)
    sch.set_scope(dw_acc, 0, "local")
    sch.set_scope(pad, 0, SHARED)
    epilogue = sch.get_sblock("s1_out")
    if split:
        spread_over_grid(sch, epilogue, tiles.threads)
    else:
        sch.reverse_compute_at(epilogue, block)

    spread(sch, weights, step, threads)
    sch.compute_at(dw_acc, spread(sch, dw_out, step, threads))
    sch.compute_at(pad, step)
    spread(sch, pad, step, threads)
    if not split:
        spread(sch, epilogue, block, threads)

    tensorize_gemm(sch, gemm, step, a_frag, b_frag, store, to_global=split)
