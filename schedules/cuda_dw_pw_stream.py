"""DW -> PW streamed through registers (``FcmTiles.stream = c``): no shared memory, no barrier.

The lanes of a warp lie along an output row (:mod:`.warp_lanes`). A thread keeps the PW sums of
``c`` output channels over a strip of ``tile_h / lane_rows`` rows and ``output_cols`` columns, and takes the
input channels one at a time: it walks down the strip's input rows, loads its columns of that
channel (the window's taps under other lanes by shuffles) and sums the DW of its pixels, then
adds bias, activation and the float16 rounding an unfused graph stores, and multiplies the result
into every one of its PW sums. The DW result of a channel never leaves the registers; the warps
of a block (other output channels of the same tile) compute it again, reading the same input
rows through L1.
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from .compute import activation_builders
from .layout import WARP
from .spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .warp_lanes import (
    channel_loader,
    depthwise_row,
    neighbours,
    strip_grid,
    strip_origin,
    strip_rows,
    strip_store,
    tile_lanes,
)
from .warp_lanes import tile_problems as lane_tile_problems
from .wmma import without_param


def stream_problems(spec: FcmSpec, tiles: FcmTiles) -> list[str]:
    """Why ``tiles`` with ``stream`` cannot run the DW->PW ``spec`` in this kernel (empty if they
    can; :func:`.stream.stream_problems` picks the kernel by kind and checks the registers too)."""
    return lane_tile_problems(spec, tiles, spec.stages[0])


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's local buffers, all float32: the PW's sums, one channel's DW sums over the strip,
    its columns of one input row, and those with the neighbours' shuffled in."""
    lanes = tile_lanes(spec.stages[0], tiles)
    strip = strip_rows(tiles) * tiles.output_cols
    return 4 * ((tiles.stream + 1) * strip + (lanes.neighbourhood + 1) * lanes.columns)


def stream_primfunc(spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The kernel; call only when :func:`stream_problems` is empty."""
    dw, pw = spec.stages
    assert isinstance(dw, Depthwise) and isinstance(pw, Pointwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, m_, ho_, wo_ = spec.output.as_tuple()
    k_, s_, top = dw.kernel, dw.stride, dw.pads[0]
    oc, rows_out, cpt = tiles.output_cols, strip_rows(tiles), tiles.stream
    lanes = tile_lanes(dw, tiles)
    q, dl, nd = lanes.columns, lanes.left, lanes.neighbourhood
    blocks, warps = strip_grid(spec, tiles)
    dw_act = activation_builders(fast_math)[dw.activation]
    origin = strip_origin(spec, tiles, dw)
    store = strip_store(spec, tiles, dw, pw.activation, fast_math)
    dt, f32 = spec.dtype, "float32"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)
    load = channel_loader(spec, q)
    exchange = neighbours(dw, tiles)
    depthwise = depthwise_row(dw, tiles)

    @T.prim_func
    def fcm(
        x: T.Buffer((n_, c_, h_, w_), dt),
        w0: T.Buffer((c_, 1, k_, k_), dt),
        b0: T.Buffer((c_,), dt),
        w1: T.Buffer((m_, c_, 1, 1), dt),
        b1: T.Buffer((m_,), dt),
        residual: T.Buffer(res_shape, dt),
        out: T.Buffer((n_, m_, ho_, wo_), dt),
    ):
        T.func_attr({"global_symbol": name, "tirx.noalias": True})
        bx = T.launch_thread("blockIdx.x", blocks)
        ty = T.launch_thread("threadIdx.y", warps)
        tx = T.launch_thread("threadIdx.x", WARP)
        acc = T.alloc_buffer((cpt, rows_out, oc), f32, scope="local")  # the PW's
        dws = T.alloc_buffer((1, rows_out, oc), f32, scope="local")  # one input channel's DW
        xv = T.alloc_buffer((q,), f32, scope="local")  # the lane's columns of one input row
        xn = T.alloc_buffer((nd, q), f32, scope="local")  # those with the neighbours' beside
        nn, m0, oy0, ox0 = T.meta_var(origin(bx, ty, tx))  # ox0: the lane's first output column
        for co in T.unroll(cpt):
            for t in T.unroll(rows_out):
                for u in T.unroll(oc):
                    acc[co, t, u] = T.float32(0)
        for ci in T.serial(c_):
            for t in T.unroll(rows_out):
                for u in T.unroll(oc):
                    dws[0, t, u] = T.float32(0)
            for i in T.unroll(s_ * (rows_out - 1) + k_):  # the strip's input rows
                load(x, xv, nn, ci, oy0 * s_ - top + i, ox0 * s_)
                for j in T.unroll(q):
                    xn[dl, j] = xv[j]
                exchange(xn, xn, dl)  # reads row dl, writes the others
                depthwise(dws, xn, w0, 0, ci, i)
            for t in T.unroll(rows_out):
                for u in T.unroll(oc):
                    dws[0, t, u] = T.Cast(f32, T.Cast(dt, dw_act(dws[0, t, u] + T.Cast(f32, b0[ci]))))
                    for co in T.unroll(cpt):
                        acc[co, t, u] = acc[co, t, u] + T.Cast(f32, w1[m0 + co, ci, 0, 0]) * dws[0, t, u]
        store(out, acc, b1, residual, tx, nn, m0, oy0, ox0)

    return fcm if spec.residual else without_param(fcm, 5)
