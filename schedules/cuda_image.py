"""PW -> DW -> PW and PW -> DW over whole images (``FcmTiles.image = r``): deep layers at batch 32.

At 14x14 and 7x7 an inverted residual expands 80-192 channels to 480-1152, and every tiled FCM
either recomputes the expansion over each tile's halo (a 7x7 image with a 5x5 DW sums 11x11 pixels
for 49) or once per output-channel tile, while MetaSchedule's separate kernels run the two 1x1
convolutions as plain GEMMs. Here a thread block owns one whole image, so the DW needs no halo
(the image border is its zero padding) and nothing is computed twice, and all of the image's
output channels, so the expansion is computed once. The mid channels are dealt out to ``split``
blocks per image (a block alone per image would leave most SMs idle at batch 32); in PW->DW->PW
each sums its slice into a float32 workspace that a second kernel adds up with bias, activation
and residual; in PW->DW (the heads of squeeze-excitation blocks) each writes its channels' DW
result, and there is no second kernel.

Per chunk of the block's mid channels, in phases separated by barriers:

1. the expansion (PW1): each thread sums ``r`` mid channels x ``p`` adjacent pixels over every
   input channel, its weights loaded four input channels at a time as a vector and the image read
   straight from global memory (L1 keeps it), and stores the activated result to shared memory;
2. the DW: a thread per (mid channel, output pixel) of the chunk, or with ``depthwise_cols =
   output_cols`` per (mid channel, run of output pixels), each weight and each expanded pixel of
   a row then loaded once for the run; taps outside the image skipped; its result stored to
   shared memory (PW->DW: to the output);
3. the projection (PW2, PW->DW->PW only): each thread adds ``r_o`` output channels x ``p``
   pixels, its weights loaded four mid channels at a time, into sums kept in registers across all
   chunks.

``p`` is ``output_cols`` (a divisor of both image widths: a thread's pixels lie in one row);
``r_o`` and the chunk follow from ``threads``: the threads cover the image's pixel runs, and the
rest of them the channels. (Staging the image in shared memory first, in runs padded to vectors,
was slower on the H100 in 47 of the 48 chains timed both ways: docs/results.md, thirty-seventh
session.)
"""

from __future__ import annotations

import tvm
from tvm.script import tirx as T

from .compute import activation_builders
from .layout import DTYPE_BYTES, MAX_THREADS, STATIC_SMEM, WARP, ceil_div
from .spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .warp_lanes import MAX_REGISTER_BYTES
from .wmma import SHARED, stored_output, without_param

VECTOR = 4  # weights per vector load: input channels of PW1, mid channels of PW2
SUM_THREADS = 256  # threads of the kernel that adds up the slices
KINDS = ("pw_dw_pw", "pw_dw")


def image_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` with ``image`` cannot run ``spec`` (empty if they can)."""
    if spec.kind not in KINDS:
        return [f"image is a kernel of {' and '.join(KINDS)}, not {spec.kind}"]
    out, mid = spec.output, spec.shapes[1].c
    p, t, split = tiles.output_cols, tiles.threads, tiles.split
    found = []
    if (tiles.channel_tile, tiles.tile_h, tiles.tile_w) != (out.c, out.h, out.w):
        found.append(f"the tile is the whole output, c{out.c} {out.h}x{out.w}")
    if spec.width % p or out.w % p:
        found.append(f"{p} pixels a thread do not divide the image widths {spec.width} and {out.w}")
        return found
    runs_in, runs_out = pixel_runs(spec, tiles)
    if t % WARP or t > MAX_THREADS or t % runs_in or (projects(spec) and t % runs_out):
        found.append(
            f"{t} threads: whole warps, at most {MAX_THREADS}, a multiple of the {runs_in} and "
            f"{runs_out} runs of {p} pixels"
        )
        return found
    if projects(spec) and out.c % (t // runs_out):
        found.append(f"{t // runs_out} groups of output channels do not divide {out.c}")
    if spec.in_channels % VECTOR:
        found.append(f"{spec.in_channels} input channels are not whole vectors of {VECTOR} weights")
    if tiles.image < 1 or chunk(spec, tiles) % VECTOR:
        found.append(f"{tiles.image} mid channels a thread: chunks must be whole vectors of {VECTOR}")
    elif mid % split or (mid // split) % chunk(spec, tiles):
        found.append(f"chunks of {chunk(spec, tiles)} mid channels do not divide {mid} / split {split}")
    knobs = {"output_cols": p, "image": tiles.image, "split": split, "depthwise_cols": tiles.depthwise_cols}
    if tiles.depthwise_cols not in (1, p):
        found.append(f"a thread's DW outputs: one, or its run of {p} pixels, not {tiles.depthwise_cols}")
    if tiles != FcmTiles(out.c, out.h, out.w, t, **knobs):
        found.append("image takes no other knob (rows, lanes, tensor cores, streams)")
    if not found and dw_by_runs(tiles) and projects(spec) and shared_bytes(spec, tiles) > STATIC_SMEM:
        # TVM merges the expansion and DW result into one dynamic buffer and, seeing one write
        # after the other's reads, wants a barrier inside the DW's conditions
        found.append(f"the DW by runs keeps to {STATIC_SMEM} bytes of static shared memory")
    if not found and shared_bytes(spec, tiles) > max_smem:
        found.append(f"{shared_bytes(spec, tiles)} bytes of shared memory > {max_smem}")
    if not found and register_bytes(spec, tiles) > MAX_REGISTER_BYTES:
        found.append(f"{register_bytes(spec, tiles)} bytes of registers a thread > {MAX_REGISTER_BYTES}")
    return found


def projects(spec: FcmSpec) -> bool:
    """Whether the chain ends in a PW (a projection, summed over the mid channels)."""
    return spec.kind == "pw_dw_pw"


def pixel_runs(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """Runs of ``output_cols`` pixels in the input image and in the output image."""
    p = tiles.output_cols
    return spec.height * spec.width // p, spec.output.h * spec.output.w // p


def chunk(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Mid channels per step: ``image`` a thread, over the threads left after the pixel runs."""
    return tiles.image * (tiles.threads // pixel_runs(spec, tiles)[0])


def output_channels_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The projection's channels a thread sums (none without a projection)."""
    return spec.output.c // (tiles.threads // pixel_runs(spec, tiles)[1]) if projects(spec) else 0


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """One block's shared memory: a chunk's expansion over the image and (with a projection) its
    DW result."""
    pixels = spec.height * spec.width + (spec.output.h * spec.output.w if projects(spec) else 0)
    return chunk(spec, tiles) * pixels * DTYPE_BYTES[spec.dtype]


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 sums a thread keeps: the projection's, and the expansion's while it runs."""
    return (output_channels_per_thread(spec, tiles) + tiles.image) * tiles.output_cols


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's local buffers, float32: both sums, a vector of weights per channel of either PW,
    a run of pixels, the DW's sums (and by runs, its window over a row of the expansion)."""
    ro, r, p = output_channels_per_thread(spec, tiles), tiles.image, tiles.output_cols
    dw = tiles.depthwise_cols + (window(spec, tiles) if dw_by_runs(tiles) else 0)
    return 4 * ((ro + r) * p + max(ro, r) * VECTOR + p + dw)


def dw_by_runs(tiles: FcmTiles) -> bool:
    """Whether a thread computes the DW over a run of ``output_cols`` pixels of one channel (each
    weight and expanded pixel loaded once for the run) rather than a pixel at a time."""
    return tiles.depthwise_cols > 1


def window(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The expanded pixels of a row that a run of DW outputs reads."""
    dw = spec.stages[1]
    assert isinstance(dw, Depthwise)
    return (tiles.output_cols - 1) * dw.stride + dw.kernel


def blocks(spec: FcmSpec, tiles: FcmTiles) -> int:
    return spec.batch * tiles.split


def image_primfunc(spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The kernel (PW->DW->PW: and the one that adds up the slices); call only when
    :func:`image_problems` is empty."""
    phases = Phases(spec, tiles, fast_math)
    return _projected(phases, name) if projects(spec) else _depthwise_out(phases, name)


class Phases:
    """The shapes both kernels share and the TVMScript macros of their common phases."""

    def __init__(self, spec: FcmSpec, tiles: FcmTiles, fast_math: bool) -> None:
        pw0, dw = spec.stages[:2]
        assert isinstance(pw0, Pointwise) and isinstance(dw, Depthwise)
        self.spec, self.tiles, self.dw = spec, tiles, dw
        self.acts = activation_builders(fast_math)
        self.n, self.c, self.h, self.w = spec.input.as_tuple()
        _, self.o, self.ho, self.wo = spec.output.as_tuple()
        self.m = spec.shapes[1].c
        self.runs_in, self.runs_out = pixel_runs(spec, tiles)
        self.px_in, self.px_out = self.h * self.w, self.ho * self.wo
        self.kc = chunk(spec, tiles)
        self.steps = self.m // tiles.split // self.kc
        self.scope = "shared" if shared_bytes(spec, tiles) <= STATIC_SMEM else SHARED  # beyond: dynamic
        self.dt = spec.dtype

    def expand(self):
        """Macro: the expansion of the chunk from mid channel ``mc`` of image ``nn`` into ``mid``,
        then a barrier."""
        c_, w_, px_in, runs_in = self.c, self.w, self.px_in, self.runs_in
        p, r, dt = self.tiles.output_cols, self.tiles.image, self.dt
        act = self.acts[self.spec.stages[0].activation]
        f32, f32v = "float32", f"float32x{VECTOR}"

        @T.macro
        def expand(x, w0_rows, b0, mid, acc0, wv, xv, mc, nn, tx):
            g0 = T.meta_var(tx // runs_in)  # the thread's channel group and pixel run
            q0 = T.meta_var(tx % runs_in)
            y0 = T.meta_var(q0 * p // w_)
            x0 = T.meta_var(q0 * p % w_)
            for i in T.unroll(r * p):
                acc0[i] = T.float32(0)
            for cv in range(c_ // VECTOR):
                for i in T.unroll(r):
                    wv[T.Ramp(i * VECTOR, 1, VECTOR)] = T.Cast(
                        f32v, w0_rows[T.Ramp((mc + g0 * r + i) * c_ + cv * VECTOR, 1, VECTOR)]
                    )
                for v in T.unroll(VECTOR):
                    for u in T.unroll(p):
                        xv[u] = T.Cast(f32, x[nn, cv * VECTOR + v, y0, x0 + u])
                    for i in T.unroll(r):
                        for u in T.unroll(p):
                            acc0[i * p + u] = acc0[i * p + u] + wv[i * VECTOR + v] * xv[u]
            for i in T.unroll(r):
                for u in T.unroll(p):
                    mid[(g0 * r + i) * px_in + q0 * p + u] = T.Cast(
                        dt, act(acc0[i * p + u] + T.Cast(f32, b0[mc + g0 * r + i]))
                    )
            T.tvm_storage_sync("shared")

        return expand

    def depthwise(self, write):
        """Macro: the DW of the chunk from ``mid``, each result (float32, bias included) handed to
        the macro ``write(dest, value, mc, ml, po, nn, e)`` (``ml``: the chunk's channel, ``po``:
        the output pixel, ``e``: its element of the chunk's result, channel-major); a pixel or
        (:func:`dw_by_runs`) a run of pixels a thread."""
        return self._depthwise_runs(write) if dw_by_runs(self.tiles) else self._depthwise_pixels(write)

    def _depthwise_pixels(self, write):
        k_, s_, top, left = self.dw.kernel, self.dw.stride, self.dw.pads[0], self.dw.pads[1]
        h_, w_, wo_, px_in, px_out, kc = self.h, self.w, self.wo, self.px_in, self.px_out, self.kc
        t, f32 = self.tiles.threads, "float32"

        @T.macro
        def depthwise(mid, w1, b1, dsum, dest, mc, nn, tx):
            for rd in range(ceil_div(kc * px_out, t)):
                e = T.meta_var(rd * t + tx)
                if e < kc * px_out:
                    ml = T.meta_var(e // px_out)
                    po = T.meta_var(e % px_out)
                    oy = T.meta_var(po // wo_)
                    ox = T.meta_var(po % wo_)
                    dsum[0] = T.Cast(f32, b1[mc + ml])
                    for ky in T.unroll(k_):
                        for kx in T.unroll(k_):
                            iy = T.meta_var(oy * s_ - top + ky)
                            ix = T.meta_var(ox * s_ - left + kx)
                            dsum[0] = dsum[0] + T.if_then_else(
                                iy >= 0 and iy < h_ and ix >= 0 and ix < w_,
                                T.Cast(f32, mid[ml * px_in + iy * w_ + ix]),  # read only inside
                                T.float32(0),
                            ) * T.Cast(f32, w1[mc + ml, 0, ky, kx])
                    write(dest, dsum[0], mc, ml, po, nn, e)

        return depthwise

    def _depthwise_runs(self, write):
        k_, s_, top, left = self.dw.kernel, self.dw.stride, self.dw.pads[0], self.dw.pads[1]
        h_, w_, wo_, px_in, px_out, kc = self.h, self.w, self.wo, self.px_in, self.px_out, self.kc
        t, p, runs_out, f32 = self.tiles.threads, self.tiles.output_cols, self.runs_out, "float32"
        span = window(self.spec, self.tiles)

        # at least two rounds: TVM drops a loop of one, and its storage rewrite then sees the
        # expansion's last read before the DW result's first write and gives both one memory,
        # which other threads still read
        rounds = max(2, ceil_div(kc * runs_out, t))

        @T.macro
        def depthwise(mid, w1, b1, dsum, dest, mc, nn, tx):
            row = T.alloc_buffer((span,), f32, scope="local")
            for rd in range(rounds):
                e = T.meta_var(rd * t + tx)
                if e < kc * runs_out:
                    ml = T.meta_var(e // runs_out)
                    oy = T.meta_var(e % runs_out * p // wo_)
                    ox = T.meta_var(e % runs_out * p % wo_)  # the run's first output column
                    for u in T.unroll(p):
                        dsum[u] = T.Cast(f32, b1[mc + ml])
                    for ky in T.unroll(k_):
                        iy = T.meta_var(oy * s_ - top + ky)
                        if iy >= 0 and iy < h_:
                            for j in T.unroll(span):
                                ix = T.meta_var(ox * s_ - left + j)
                                row[j] = T.if_then_else(
                                    ix >= 0 and ix < w_,
                                    T.Cast(f32, mid[ml * px_in + iy * w_ + ix]),  # read only inside
                                    T.float32(0),
                                )
                            for kx in T.unroll(k_):
                                for u in T.unroll(p):
                                    dsum[u] = dsum[u] + row[u * s_ + kx] * T.Cast(f32, w1[mc + ml, 0, ky, kx])
                    for u in T.unroll(p):
                        write(dest, dsum[u], mc, ml, oy * wo_ + ox + u, nn, ml * px_out + oy * wo_ + ox + u)

        return depthwise


def _depthwise_out(ph: Phases, name: str) -> tvm.tirx.PrimFunc:
    """PW->DW: the blocks of an image write its channels' DW results, activated, to the output."""
    n_, c_, h_, w_, m_, ho_, wo_ = ph.n, ph.c, ph.h, ph.w, ph.m, ph.ho, ph.wo
    k_, p, split, t, r, dt = (
        ph.dw.kernel,
        ph.tiles.output_cols,
        ph.tiles.split,
        ph.tiles.threads,
        ph.tiles.image,
        ph.dt,
    )
    f32 = "float32"
    store = stored_output(ph.acts[ph.dw.activation], ph.spec.residual, dt)
    expand = ph.expand()
    res_shape = ph.spec.output.as_tuple() if ph.spec.residual else (1,)

    @T.macro
    def write(out_and_residual, value, mc, ml, po, nn, e):
        out, residual = out_and_residual
        res = T.meta_var(residual[nn, mc + ml, po // wo_, po % wo_] if ph.spec.residual else T.Cast(dt, 0))
        out[nn, mc + ml, po // wo_, po % wo_] = store(value, T.Cast(dt, 0), res)

    depthwise = ph.depthwise(write)

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
        w0_rows = T.decl_buffer((m_ * c_,), dt, data=w0.data)  # flat: vector loads along a row
        with T.launch_thread("blockIdx.x", n_ * split) as bx:
            tx = T.launch_thread("threadIdx.x", t)
            mid = T.alloc_buffer((ph.kc * ph.px_in,), dt, scope=ph.scope)  # the chunk's expansion
            acc0 = T.alloc_buffer((r * p,), f32, scope="local")
            wv = T.alloc_buffer((r * VECTOR,), f32, scope="local")
            xv = T.alloc_buffer((p,), f32, scope="local")
            dsum = T.alloc_buffer((ph.tiles.depthwise_cols,), f32, scope="local")
            nn = T.meta_var(bx // split)
            for step in range(ph.steps):
                mc = T.meta_var(bx % split * (m_ // split) + step * ph.kc)  # the chunk's first mid channel
                expand(x, w0_rows, b0, mid, acc0, wv, xv, mc, nn, tx)
                depthwise(mid, w1, b1, dsum, (out, residual), mc, nn, tx)
                T.tvm_storage_sync("shared")  # the next chunk overwrites mid while this reads it

    return fcm if ph.spec.residual else without_param(fcm, 5)  # the body never reads it


def _projected(ph: Phases, name: str) -> tvm.tirx.PrimFunc:
    """PW->DW->PW: each block sums its slice of the projection into the workspace; a second
    kernel adds the slices up with bias, activation and residual."""
    spec, tiles = ph.spec, ph.tiles
    pw2 = spec.stages[2]
    n_, c_, h_, w_, m_, o_, ho_, wo_ = ph.n, ph.c, ph.h, ph.w, ph.m, ph.o, ph.ho, ph.wo
    k_, p, t, split, r, dt = ph.dw.kernel, tiles.output_cols, tiles.threads, tiles.split, tiles.image, ph.dt
    runs_out, px_out, kc = ph.runs_out, ph.px_out, ph.kc
    ro = output_channels_per_thread(spec, tiles)
    act1 = ph.acts[ph.dw.activation]
    store = stored_output(ph.acts[pw2.activation], spec.residual, dt)
    f32, f32v = "float32", f"float32x{VECTOR}"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)
    sum_blocks = ceil_div(n_ * o_ * px_out, SUM_THREADS)
    expand = ph.expand()

    @T.macro
    def write(dwo, value, mc, ml, po, nn, e):  # the DW result, for the projection
        dwo[e] = T.Cast(dt, act1(value))

    depthwise = ph.depthwise(write)

    @T.prim_func
    def fcm(
        x: T.Buffer((n_, c_, h_, w_), dt),
        w0: T.Buffer((m_, c_, 1, 1), dt),
        b0: T.Buffer((m_,), dt),
        w1: T.Buffer((m_, 1, k_, k_), dt),
        b1: T.Buffer((m_,), dt),
        w2: T.Buffer((o_, m_, 1, 1), dt),
        b2: T.Buffer((o_,), dt),
        residual: T.Buffer(res_shape, dt),
        out: T.Buffer((n_, o_, ho_, wo_), dt),
    ):
        T.func_attr({"global_symbol": name, "tirx.noalias": True})
        slices = T.alloc_buffer((split, n_, o_, px_out), f32)
        w0_rows = T.decl_buffer((m_ * c_,), dt, data=w0.data)  # flat: vector loads along a row
        w2_rows = T.decl_buffer((o_ * m_,), dt, data=w2.data)
        with T.launch_thread("blockIdx.x", n_ * split) as bx:
            tx = T.launch_thread("threadIdx.x", t)
            mid = T.alloc_buffer((kc * ph.px_in,), dt, scope=ph.scope)  # the chunk's expansion
            dwo = T.alloc_buffer((kc * px_out,), dt, scope=ph.scope)  # its DW result
            acc = T.alloc_buffer((ro * p,), f32, scope="local")
            acc0 = T.alloc_buffer((r * p,), f32, scope="local")
            wv = T.alloc_buffer((max(ro, r) * VECTOR,), f32, scope="local")  # either PW's weights
            xv = T.alloc_buffer((p,), f32, scope="local")
            dsum = T.alloc_buffer((tiles.depthwise_cols,), f32, scope="local")
            nn = T.meta_var(bx // split)
            g2 = T.meta_var(tx // runs_out)  # the projection's channel group and pixel run
            q2 = T.meta_var(tx % runs_out)
            for i in T.unroll(ro * p):
                acc[i] = T.float32(0)
            for step in range(ph.steps):
                mc = T.meta_var(bx % split * (m_ // split) + step * kc)  # the chunk's first mid channel
                expand(x, w0_rows, b0, mid, acc0, wv, xv, mc, nn, tx)
                depthwise(mid, w1, b1, dsum, dwo, mc, nn, tx)
                T.tvm_storage_sync("shared")
                for jv in range(kc // VECTOR):
                    for i in T.unroll(ro):
                        wv[T.Ramp(i * VECTOR, 1, VECTOR)] = T.Cast(
                            f32v, w2_rows[T.Ramp((g2 * ro + i) * m_ + mc + jv * VECTOR, 1, VECTOR)]
                        )
                    for v in T.unroll(VECTOR):
                        for u in T.unroll(p):
                            xv[u] = T.Cast(f32, dwo[(jv * VECTOR + v) * px_out + q2 * p + u])
                        for i in T.unroll(ro):
                            for u in T.unroll(p):
                                acc[i * p + u] = acc[i * p + u] + wv[i * VECTOR + v] * xv[u]
                T.tvm_storage_sync("shared")  # the next chunk overwrites mid while this reads dwo
            for i in T.unroll(ro):
                for u in T.unroll(p):
                    slices[bx % split, nn, g2 * ro + i, q2 * p + u] = acc[i * p + u]
        with T.launch_thread("blockIdx.x", sum_blocks) as by:
            ty = T.launch_thread("threadIdx.x", SUM_THREADS)
            total = T.alloc_buffer((1,), f32, scope="local")
            e2 = T.meta_var(by * SUM_THREADS + ty)
            if e2 < n_ * o_ * px_out:
                n2 = T.meta_var(e2 // (o_ * px_out))
                o2 = T.meta_var(e2 // px_out % o_)
                y2 = T.meta_var(e2 % px_out // wo_)
                x2 = T.meta_var(e2 % wo_)
                total[0] = T.float32(0)
                for sl in T.unroll(split):
                    total[0] = total[0] + slices[sl, n2, o2, y2 * wo_ + x2]
                res = T.meta_var(residual[n2, o2, y2, x2] if spec.residual else T.Cast(dt, 0))
                out[n2, o2, y2, x2] = store(total[0], b2[o2], res)

    return fcm if spec.residual else without_param(fcm, 7)  # the body never reads it
