"""PW -> DW streamed through registers (``FcmTiles.stream = c``): no shared memory, no barrier.

The lanes of a warp lie along an output row (:mod:`.warp_lanes`): each owns ``output_cols``
adjacent output columns and the ``stride x output_cols`` columns under them. A thread walks down
a strip of ``tile_h / lane_rows`` output rows one input row at a time. Per row it loads its
columns of one input channel at a time (a vector where the width allows) and adds them into the
PW sums of its ``c`` channels (float32, their weights in registers), then takes the DW taps that
lie under a neighbouring lane from that lane with a warp shuffle. Each input row feeds the sums of
every output row whose window covers it, so the PW result never leaves the registers and is
computed once per strip (plus the window's overlap between strips).

Lanes at the warp's edges whose windows would reach past the warp only lend their columns to
their neighbours (:func:`.warp_lanes.lane_layout`). The warps of a block compute different
channels of the same tile, so they share its input rows in L1.
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

MAX_WEIGHTS = 128  # PW weights per thread (channels x input channels), float32 registers


def stream_problems(spec: FcmSpec, tiles: FcmTiles) -> list[str]:
    """Why ``tiles`` with ``stream`` cannot run the PW->DW ``spec`` in this kernel (empty if they
    can; :func:`.stream.stream_problems` picks the kernel by kind and checks the registers too)."""
    found = lane_tile_problems(spec, tiles, spec.stages[1])
    if tiles.stream * spec.in_channels > MAX_WEIGHTS:
        found.append(f"{tiles.stream} channels x {spec.in_channels} inputs > {MAX_WEIGHTS} weights a thread")
    return found


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's local buffers, all float32: PW weights and bias, the DW's sums and a row's PW
    sums per channel, one input channel's columns, one channel's PW results with the
    neighbours' shuffled in. The DW's weights are read where used (nvcc keeps in registers what
    fits)."""
    dw, cpt = spec.stages[1], tiles.stream
    lanes = tile_lanes(dw, tiles)
    per_channel = spec.in_channels + 1 + strip_rows(tiles) * tiles.output_cols + lanes.columns
    return 4 * (cpt * per_channel + (lanes.neighbourhood + 1) * lanes.columns)


def stream_primfunc(spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The kernel; call only when :func:`stream_problems` is empty."""
    pw, dw = spec.stages
    assert isinstance(pw, Pointwise) and isinstance(dw, Depthwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, m_, ho_, wo_ = spec.output.as_tuple()
    k_, s_, top = dw.kernel, dw.stride, dw.pads[0]
    oc, rows_out, cpt = tiles.output_cols, strip_rows(tiles), tiles.stream
    lanes = tile_lanes(dw, tiles)
    q, nd = lanes.columns, lanes.neighbourhood
    blocks, warps = strip_grid(spec, tiles)
    origin = strip_origin(spec, tiles, dw)
    store = strip_store(spec, tiles, dw, dw.activation, fast_math)
    dt, f32 = spec.dtype, "float32"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)
    pointwise = pointwise_row(spec, cpt, q, fast_math)
    exchange = neighbours(dw, tiles)
    depthwise = depthwise_row(dw, tiles)

    @T.prim_func
    def fcm(
        x: T.Buffer((n_, c_, h_, w_), dt),
        w0: T.Buffer((m_, c_, 1, 1), dt),
        b0: T.Buffer((m_,), dt),
        w1: T.Buffer((m_, 1, k_, k_), dt),
        b1: T.Buffer((m_,), dt),
        residual: T.Buffer(res_shape, dt),
        out: T.Buffer((n_, m_, ho_, wo_), dt),
    ):
        T.func_attr({"global_symbol": name, "tirx.noalias": True})
        bx = T.launch_thread("blockIdx.x", blocks)
        ty = T.launch_thread("threadIdx.y", warps)
        tx = T.launch_thread("threadIdx.x", WARP)
        pw_w = T.alloc_buffer((cpt, c_), f32, scope="local")
        pw_b = T.alloc_buffer((cpt,), f32, scope="local")
        acc = T.alloc_buffer((cpt, rows_out, oc), f32, scope="local")
        xv = T.alloc_buffer((q,), f32, scope="local")  # one input channel's
        sums = T.alloc_buffer((cpt, q), f32, scope="local")  # the PW's
        pwv = T.alloc_buffer((nd, q), f32, scope="local")  # one channel's, the neighbours' beside
        nn, m0, oy0, ox0 = T.meta_var(origin(bx, ty, tx))  # ox0: the lane's first output column
        for co in T.unroll(cpt):
            pw_b[co] = T.Cast(f32, b0[m0 + co])
            for ci in T.unroll(c_):
                pw_w[co, ci] = T.Cast(f32, w0[m0 + co, ci, 0, 0])
            for t in T.unroll(rows_out):
                for u in T.unroll(oc):
                    acc[co, t, u] = T.float32(0)
        for i in T.unroll(s_ * (rows_out - 1) + k_):  # the strip's input rows
            pointwise(x, sums, xv, pw_w, pw_b, nn, oy0 * s_ - top + i, ox0 * s_)
            for co in T.unroll(cpt):
                exchange(pwv, sums, co)
                depthwise(acc, pwv, w1, co, m0 + co, i)
        store(out, acc, b1, residual, tx, nn, m0, oy0, ox0)

    return fcm if spec.residual else without_param(fcm, 5)


def pointwise_row(spec: FcmSpec, channels: int, columns: int, fast_math: bool):
    """TVMScript macro: the PW sums of the thread's ``channels`` channels at the lane's
    ``columns`` inputs of image row ``yy`` into ``sums``, an input channel at a time (its inputs
    in ``xv``: each load feeds ``channels`` multiply-adds a column), then activated, rounded to
    the spec's dtype as an unfused graph stores it, and zero outside the image (the DW's
    padding)."""
    pw = spec.stages[0]
    _, c_, h_, w_ = spec.input.as_tuple()
    load = channel_loader(spec, columns)
    act = activation_builders(fast_math)[pw.activation]
    dt, f32 = spec.dtype, "float32"

    @T.macro
    def pointwise(x, sums, xv, pw_w, pw_b, nn, yy, col0):
        for co in T.unroll(channels):
            for j in T.unroll(columns):
                sums[co, j] = pw_b[co]
        for ci in T.unroll(c_):
            load(x, xv, nn, ci, yy, col0)
            for co in T.unroll(channels):
                for j in T.unroll(columns):
                    sums[co, j] = sums[co, j] + pw_w[co, ci] * xv[j]
        for co in T.unroll(channels):
            for j in T.unroll(columns):
                sums[co, j] = T.if_then_else(
                    yy >= 0 and yy < h_ and col0 + j >= 0 and col0 + j < w_,
                    T.Cast(f32, T.Cast(dt, act(sums[co, j]))),
                    T.float32(0),
                )

    return pointwise
