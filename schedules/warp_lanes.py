"""A warp's lanes along an output row of a depthwise window, for the kernels streamed through
registers (``FcmTiles.stream``): what each lane owns, where each tap comes from, the vector loads
and the shuffles that move values between lanes, and the tile checks they share.

A lane owns ``output_cols`` adjacent output columns and the ``stride x output_cols`` input
columns under them (of whatever tensor the window slides over: the PW result in PW->DW, the input
in DW->PW). A tap under another lane's columns comes from that lane by a warp shuffle; lanes at
the warp's edges whose windows would reach past the warp only lend their columns. With
``lane_rows = 2`` each half of a warp (a segment of 16 lanes) covers a row of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm.script import tirx as T

from .compute import activation_builders
from .layout import MAX_THREADS, WARP
from .spec import Depthwise, FcmSpec, FcmTiles
from .wmma import stored_output

FULL_MASK = 0xFFFFFFFF
MAX_REGISTER_BYTES = 4 * 160  # a thread's local buffers, of 255 registers (190 spilled)
OUTPUT_COLS = (1, 2, 4)
LANE_ROWS = (1, 2)  # 4 would need outputs 7 wide and a multiple of 4 high: none of the zoo's


@dataclass(frozen=True)
class LaneLayout:
    """How a segment of ``segment`` lanes (a warp, or a part of it) covers an output row:
    ``columns`` input columns a lane, ``left`` and ``right`` edge lanes that only lend theirs."""

    columns: int
    left: int
    right: int
    segment: int = WARP

    @property
    def writing_lanes(self) -> int:
        return self.segment - self.left - self.right

    @property
    def neighbourhood(self) -> int:
        """The lanes whose columns a lane reads: its own and its neighbours' on either side."""
        return self.left + 1 + self.right


def lane_layout(dw: Depthwise, output_cols: int, segment: int = WARP) -> LaneLayout:
    """The lanes of a DW window: tap ``kx`` of output column ``u`` reads the input column
    ``stride * u + kx - pad_left`` from the lane's first, which is :func:`tap_source`'s."""
    columns = dw.stride * output_cols
    first = -dw.pads[1]
    last = dw.stride * (output_cols - 1) + dw.kernel - 1 - dw.pads[1]
    return LaneLayout(columns, -(first // columns), last // columns, segment)


def segment(tiles: FcmTiles) -> int:
    """Lanes a row of the tile takes: a warp covers ``lane_rows`` rows at once."""
    return WARP // tiles.lane_rows


def strip_rows(tiles: FcmTiles) -> int:
    """The output rows each thread walks."""
    return tiles.tile_h // tiles.lane_rows


def tile_lanes(dw: Depthwise, tiles: FcmTiles) -> LaneLayout:
    """:func:`lane_layout` of ``tiles``' columns and segments."""
    return lane_layout(dw, tiles.output_cols, segment(tiles))


def tap_source(dw: Depthwise, output_cols: int, u: int, kx: int) -> tuple[int, int]:
    """(lane offset, column of that lane) holding tap ``kx`` of a lane's output column ``u``."""
    columns = dw.stride * output_cols
    offset = dw.stride * u + kx - dw.pads[1]
    return offset // columns, offset % columns


def tile_problems(spec: FcmSpec, tiles: FcmTiles, dw: Depthwise) -> list[str]:
    """What a streamed tile of ``spec`` gets wrong whatever the kernel: its knobs, its lanes (over
    the window ``dw``) and how it divides the output and the output channels."""
    out, cpt, ct, found = spec.output, tiles.stream, tiles.channel_tile, []
    knobs = {"output_cols": tiles.output_cols, "stream": cpt, "lane_rows": tiles.lane_rows}
    if tiles != FcmTiles(ct, tiles.tile_h, tiles.tile_w, tiles.threads, **knobs):
        found.append("stream takes no other knob (split, patch, lanes, tensor cores)")
    if tiles.output_cols not in OUTPUT_COLS:
        found.append(f"output_cols {tiles.output_cols} (one of {OUTPUT_COLS})")
    if tiles.lane_rows not in LANE_ROWS or tiles.tile_h % tiles.lane_rows:
        found.append(f"lane_rows {tiles.lane_rows}: one of {LANE_ROWS}, dividing the {tiles.tile_h} rows")
        return found
    if ct % cpt or out.c % ct:
        found.append(f"channel tile {ct} must be a multiple of {cpt} dividing {out.c}")
    if tiles.threads != WARP * (ct // max(cpt, 1)):
        found.append(f"{tiles.threads} threads: a warp per {cpt} of the {ct} channels")
    lanes = tile_lanes(dw, tiles)
    if tiles.tile_w % tiles.output_cols or tiles.tile_w > tiles.output_cols * lanes.writing_lanes:
        found.append(
            f"tile width {tiles.tile_w}: a multiple of {tiles.output_cols} columns a lane, at most "
            f"{lanes.writing_lanes} lanes of {lanes.segment}"
        )
    if out.h % tiles.tile_h or out.w % tiles.tile_w:
        found.append(f"tile {tiles.tile_h}x{tiles.tile_w} must divide the output {out.h}x{out.w}")
    if tiles.threads > MAX_THREADS:
        found.append(f"{tiles.threads} threads per block > {MAX_THREADS}")
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


def neighbours(dw: Depthwise, tiles: FcmTiles):
    """TVMScript macro: row ``co`` of ``values`` (the lane's columns of one channel) into
    ``pwv[own]`` and each neighbouring lane's into ``pwv[own + offset]``, by warp shuffles within
    the lane's segment."""
    lanes = tile_lanes(dw, tiles)
    own, columns, width, mask = lanes.left, lanes.columns, lanes.segment, T.uint32(FULL_MASK)

    @T.macro
    def exchange(pwv, values, co):
        for d in T.unroll(lanes.neighbourhood):
            for j in T.unroll(columns):
                if d < own:
                    pwv[d, j] = T.tvm_warp_shuffle_up(mask, values[co, j], own - d, width, WARP)
                if d == own:
                    pwv[d, j] = values[co, j]
                if d > own:
                    pwv[d, j] = T.tvm_warp_shuffle_down(mask, values[co, j], d - own, width, WARP)

    return exchange


def depthwise_row(dw: Depthwise, tiles: FcmTiles):
    """TVMScript macro: input row ``i`` of the strip (``pwv``: one channel's, from
    :func:`neighbours`) into the DW sums ``acc[co]`` of every output row whose window covers it,
    each tap from the lane of :func:`tap_source`."""
    lanes, output_cols, rows_out = tile_lanes(dw, tiles), tiles.output_cols, strip_rows(tiles)
    k_, s_, columns, left, own = dw.kernel, dw.stride, lanes.columns, dw.pads[1], lanes.left
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


def strip_grid(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """(blocks, warps a block): a block per image, tile and channel tile, a warp per ``stream``
    channels of its tile."""
    out, ct = spec.output, tiles.channel_tile
    return out.n * (out.h // tiles.tile_h) * (out.w // tiles.tile_w) * (out.c // ct), ct // tiles.stream


def strip_origin(spec: FcmSpec, tiles: FcmTiles, dw: Depthwise):
    """``(bx, ty, tx) -> (n, first channel, first output row, first output column)`` of a lane's
    strip: blocks over (image, tile row, tile column, channel tile), channel tiles innermost so
    that neighbouring blocks read the same input rows; a warp per ``stream`` channels, each of its
    segments a strip of the tile's rows."""
    out, cpt, ct, tw = spec.output, tiles.stream, tiles.channel_tile, tiles.tile_w
    warps, ny, nx, ng = ct // cpt, out.h // tiles.tile_h, out.w // tw, out.c // ct
    own, lanes, rows = tile_lanes(dw, tiles).left, segment(tiles), strip_rows(tiles)

    def origin(bx, ty, tx):
        channel = (bx % ng * warps + ty) * cpt
        column = bx // ng % nx * tw + (tx % lanes - own) * tiles.output_cols
        row = bx // (ng * nx) % ny * tiles.tile_h + tx // lanes * rows
        return bx // (ng * nx * ny), channel, row, column

    return origin


def strip_store(spec: FcmSpec, tiles: FcmTiles, dw: Depthwise, activation: str, fast_math: bool):
    """TVMScript macro: the writing lanes store their strip's sums ``acc[co, t, u]`` with bias,
    ``activation`` and the residual where the chain has one."""
    epilogue = stored_output(activation_builders(fast_math)[activation], spec.residual, spec.dtype)
    own, cols, rows, lanes = tile_lanes(dw, tiles).left, tiles.output_cols, strip_rows(tiles), segment(tiles)
    dt = spec.dtype

    @T.macro
    def store(out, acc, bias, residual, tx, nn, m0, oy0, ox0):
        if tx % lanes >= own and (tx % lanes - own) * cols < tiles.tile_w:
            for co in T.unroll(tiles.stream):
                for t in T.unroll(rows):
                    for u in T.unroll(cols):
                        res = T.meta_var(
                            residual[nn, m0 + co, oy0 + t, ox0 + u] if spec.residual else T.Cast(dt, 0)
                        )
                        out[nn, m0 + co, oy0 + t, ox0 + u] = epilogue(acc[co, t, u], bias[m0 + co], res)

    return store
