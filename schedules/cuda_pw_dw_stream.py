"""PW -> DW streamed through registers (``FcmTiles.stream = c``): no shared memory, no barrier.

The lanes of a warp lie along an output row: each owns ``output_cols`` adjacent output columns
and the ``stride x output_cols`` input columns under them. A thread walks down a strip of
``tile_h`` output rows one input row at a time. Per row it loads its input columns of every
input channel, sums the PW of its ``c`` channels in float32 (their weights in registers), and
takes the DW taps that lie under a neighbouring lane from that lane with a warp shuffle. Each
input row feeds the sums of every output row whose window covers it, so the PW result never
leaves the registers and is computed once per strip (plus the window's overlap between strips).

Lanes at the warp's edges whose windows would reach past the warp only lend their columns to
their neighbours (:func:`lane_layout`); a warp writes ``output_cols x`` its other lanes' columns.
The warps of a block compute different channels of the same tile, so they share its input rows
in L1.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm.script import tirx as T

from .compute import activation_builders
from .layout import WARP
from .spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .wmma import stored_output, without_param

FULL_MASK = 0xFFFFFFFF
MAX_WEIGHTS = 128  # PW weights per thread (channels x input channels), float32 registers
MAX_REGISTER_BYTES = 4 * 192  # a thread's local buffers (of 255 registers: the rest for addresses)
OUTPUT_COLS = (1, 2, 4)


@dataclass(frozen=True)
class LaneLayout:
    """How a warp's lanes cover an output row: ``columns`` input columns a lane, ``left`` and
    ``right`` edge lanes that only lend their columns."""

    columns: int
    left: int
    right: int

    @property
    def writing_lanes(self) -> int:
        return WARP - self.left - self.right


def lane_layout(dw: Depthwise, output_cols: int) -> LaneLayout:
    """The lanes of a DW window: tap ``kx`` of output column ``u`` reads the input column
    ``stride * u + kx - pad_left`` from the lane's first, which is :func:`tap_source`'s."""
    columns = dw.stride * output_cols
    first = -dw.pads[1]
    last = dw.stride * (output_cols - 1) + dw.kernel - 1 - dw.pads[1]
    return LaneLayout(columns, -(first // columns), last // columns)


def tap_source(dw: Depthwise, output_cols: int, u: int, kx: int) -> tuple[int, int]:
    """(lane offset, column of that lane) holding tap ``kx`` of a lane's output column ``u``."""
    columns = dw.stride * output_cols
    offset = dw.stride * u + kx - dw.pads[1]
    return offset // columns, offset % columns


def stream_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int = 0) -> list[str]:
    """Why ``tiles`` with ``stream`` cannot run ``spec`` (empty if they can; it takes no shared
    memory, whatever ``max_smem``)."""
    if spec.kind != "pw_dw":
        return [f"stream is a PW->DW kernel, not {spec.kind}"]
    dw, out, found = spec.stages[1], spec.output, []
    cpt, ct = tiles.stream, tiles.channel_tile
    knobs = {"output_cols": tiles.output_cols, "stream": cpt}
    if tiles != FcmTiles(ct, tiles.tile_h, tiles.tile_w, tiles.threads, **knobs):
        found.append("stream takes no other knob (split, patch, lanes, tensor cores)")
    if tiles.output_cols not in OUTPUT_COLS:
        found.append(f"output_cols {tiles.output_cols} (one of {OUTPUT_COLS})")
    if cpt * spec.in_channels > MAX_WEIGHTS:
        found.append(f"{cpt} channels x {spec.in_channels} inputs > {MAX_WEIGHTS} weights a thread")
    if ct % cpt or out.c % ct:
        found.append(f"channel tile {ct} must be a multiple of {cpt} dividing {out.c}")
    if tiles.threads != WARP * (ct // max(cpt, 1)):
        found.append(f"{tiles.threads} threads: a warp per {cpt} of the {ct} channels")
    lanes = lane_layout(dw, tiles.output_cols)
    if tiles.tile_w % tiles.output_cols or tiles.tile_w > tiles.output_cols * lanes.writing_lanes:
        found.append(
            f"tile width {tiles.tile_w}: a multiple of {tiles.output_cols} columns a lane, at most "
            f"{lanes.writing_lanes} lanes"
        )
    if out.h % tiles.tile_h or out.w % tiles.tile_w:
        found.append(f"tile {tiles.tile_h}x{tiles.tile_w} must divide the output {out.h}x{out.w}")
    if tiles.threads > 1024:
        found.append(f"{tiles.threads} threads per block > 1024")
    if not found and register_bytes(spec, tiles) > MAX_REGISTER_BYTES:
        found.append(f"{register_bytes(spec, tiles)} bytes of registers a thread > {MAX_REGISTER_BYTES}")
    return found


def vector_lanes(width: int, columns: int) -> int:
    """Input columns a lane loads at once: aligned and all inside or all outside the image where
    both the image's width and the lane's columns are multiples of it."""
    return next(lanes for lanes in (4, 2, 1) if width % lanes == 0 and columns % lanes == 0)


def channel_loader(spec: FcmSpec, columns: int):
    """TVMScript macro: a lane's ``columns`` inputs of input channel ``ci`` in image row ``yy`` from
    column ``col0`` on into ``xv``, as float32 (zero outside the image), in vectors of
    :func:`vector_lanes`."""
    _, _, h_, w_ = spec.input.as_tuple()
    lanes = vector_lanes(w_, columns)
    f32 = "float32"
    if lanes == 1:

        @T.macro
        def load_scalars(x, xv, nn, ci, yy, col0):
            for j in T.unroll(columns):
                xv[j] = T.if_then_else(
                    yy >= 0 and yy < h_ and col0 + j >= 0 and col0 + j < w_,
                    T.Cast(f32, x[nn, ci, yy, col0 + j]),  # read only inside
                    T.float32(0),
                )

        return load_scalars

    @T.macro
    def load_vectors(x, xv, nn, ci, yy, col0):
        for jv in T.unroll(columns // lanes):
            col = T.meta_var(col0 + jv * lanes)
            xv[T.Ramp(jv * lanes, 1, lanes)] = T.if_then_else(
                yy >= 0 and yy < h_ and col >= 0 and col < w_,
                T.Cast(f"{f32}x{lanes}", x[nn, ci, yy, T.Ramp(col, 1, lanes)]),  # read only inside
                T.Broadcast(T.float32(0), lanes),
            )

    return load_vectors


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """None: the kernel keeps everything in registers."""
    return 0


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The DW's float32 sums a thread keeps over its strip."""
    return tiles.stream * tiles.tile_h * tiles.output_cols


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's local buffers, all float32: PW weights and bias, the DW's sums and a row's PW
    sums per channel, one input channel's columns, one channel's PW results with the
    neighbours' shuffled in. The DW's weights are read where used (nvcc keeps in registers what
    fits)."""
    dw, cpt = spec.stages[1], tiles.stream
    lanes = lane_layout(dw, tiles.output_cols)
    per_channel = spec.in_channels + 1 + tiles.tile_h * tiles.output_cols + lanes.columns
    return 4 * (cpt * per_channel + (lanes.left + lanes.right + 2) * lanes.columns)


def stream_primfunc(spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The kernel; call only when :func:`stream_problems` is empty."""
    pw, dw = spec.stages
    assert isinstance(pw, Pointwise) and isinstance(dw, Depthwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, m_, ho_, wo_ = spec.output.as_tuple()
    k_, s_, top = dw.kernel, dw.stride, dw.pads[0]
    oc, rows_out, tw, cpt = tiles.output_cols, tiles.tile_h, tiles.tile_w, tiles.stream
    lanes = lane_layout(dw, oc)
    q, dl, nd = lanes.columns, lanes.left, lanes.left + lanes.right + 1
    warps, ny, nx, ng = tiles.channel_tile // cpt, ho_ // rows_out, wo_ // tw, m_ // tiles.channel_tile
    epilogue = stored_output(activation_builders(fast_math)[dw.activation], spec.residual, spec.dtype)
    dt, f32 = spec.dtype, "float32"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)
    pointwise = pointwise_row(spec, cpt, q, fast_math)
    exchange = neighbours(dw, oc)
    depthwise = depthwise_row(dw, oc, rows_out, dl)

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
        bx = T.launch_thread("blockIdx.x", n_ * ny * nx * ng)
        ty = T.launch_thread("threadIdx.y", warps)
        tx = T.launch_thread("threadIdx.x", WARP)
        pw_w = T.alloc_buffer((cpt, c_), f32, scope="local")
        pw_b = T.alloc_buffer((cpt,), f32, scope="local")
        acc = T.alloc_buffer((cpt, rows_out, oc), f32, scope="local")
        xv = T.alloc_buffer((q,), f32, scope="local")  # one input channel's
        sums = T.alloc_buffer((cpt, q), f32, scope="local")  # the PW's
        pwv = T.alloc_buffer((nd, q), f32, scope="local")  # one channel's, the neighbours' beside
        m0 = T.meta_var((bx % ng * warps + ty) * cpt)
        ox0 = T.meta_var(bx // ng % nx * tw + (tx - dl) * oc)  # the lane's first output column
        oy0 = T.meta_var(bx // (ng * nx) % ny * rows_out)
        nn = T.meta_var(bx // (ng * nx * ny))
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
        if tx >= dl and (tx - dl) * oc < tw:
            for co in T.unroll(cpt):
                for t in T.unroll(rows_out):
                    for u in T.unroll(oc):
                        res = T.meta_var(
                            residual[nn, m0 + co, oy0 + t, ox0 + u] if spec.residual else T.Cast(dt, 0)
                        )
                        out[nn, m0 + co, oy0 + t, ox0 + u] = epilogue(acc[co, t, u], b1[m0 + co], res)

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


def neighbours(dw: Depthwise, output_cols: int):
    """TVMScript macro: channel ``co``'s PW results of a row (``sums[co]``) into ``pwv[own]`` and
    each neighbouring lane's into ``pwv[own + offset]``, by warp shuffles."""
    lanes = lane_layout(dw, output_cols)
    own, columns, mask = lanes.left, lanes.columns, T.uint32(FULL_MASK)

    @T.macro
    def exchange(pwv, sums, co):
        for d in T.unroll(lanes.left + lanes.right + 1):
            for j in T.unroll(columns):
                if d < own:
                    pwv[d, j] = T.tvm_warp_shuffle_up(mask, sums[co, j], own - d, WARP, WARP)
                if d == own:
                    pwv[d, j] = sums[co, j]
                if d > own:
                    pwv[d, j] = T.tvm_warp_shuffle_down(mask, sums[co, j], d - own, WARP, WARP)

    return exchange


def depthwise_row(dw: Depthwise, output_cols: int, rows_out: int, own: int):
    """TVMScript macro: input row ``i`` of the strip (``pwv``, one channel's PW result) into the
    DW sums of every output row whose window covers it, each tap from the lane of
    :func:`tap_source`."""
    k_, s_, columns, left = dw.kernel, dw.stride, dw.stride * output_cols, dw.pads[1]
    f32 = "float32"

    @T.macro
    def depthwise(acc, pwv, w1, co, channel, i):
        for t in T.unroll(rows_out):
            if i - s_ * t >= 0 and i - s_ * t < k_:  # known once unrolled: no branch is left
                for u in T.unroll(output_cols):
                    for kx in T.unroll(k_):
                        tap = T.meta_var(s_ * u + kx - left)  # tap_source, in TIR
                        weight = T.meta_var(T.Cast(f32, w1[channel, 0, i - s_ * t, kx]))
                        acc[co, t, u] = (
                            acc[co, t, u]
                            + weight * pwv[T.floordiv(tap, columns) + own, T.floormod(tap, columns)]
                        )

    return depthwise
