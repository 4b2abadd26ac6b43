"""PW -> DW -> PW over whole images (``FcmTiles.image = r``): deep inverted residuals at batch 32.

At 14x14 and 7x7 an inverted residual expands 80-192 channels to 480-1152, and every tiled FCM
either recomputes the expansion over each tile's halo (a 7x7 image with a 5x5 DW sums 11x11 pixels
for 49) or once per output-channel tile, while MetaSchedule's separate kernels run the two 1x1
convolutions as plain GEMMs. Here a thread block owns one whole image, so the DW needs no halo
(the image border is its zero padding) and nothing is computed twice, and all of the image's
output channels, so the expansion is computed once. The mid channels are dealt out to ``split``
blocks per image (a block alone per image would leave most SMs idle at batch 32); each sums its
slice into a float32 workspace that a second kernel adds up with bias, activation and residual.

Per chunk of the block's mid channels, in three phases separated by barriers:

1. the expansion (PW1): each thread sums ``r`` mid channels x ``p`` adjacent pixels over every
   input channel, its weights loaded four input channels at a time as a vector and the image read
   straight from global memory (L1 keeps it), and stores the activated result to shared memory;
2. the DW: a thread per (mid channel, output pixel) of the chunk, taps outside the image skipped;
3. the projection (PW2): each thread adds ``r_o`` output channels x ``p`` pixels, its weights
   loaded four mid channels at a time, into sums kept in registers across all chunks.

``p`` is ``output_cols`` (a divisor of both image widths: a thread's pixels lie in one row);
``r_o`` and the chunk follow from ``threads``: the threads cover the image's pixel runs, and the
rest of them the channels.
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


def image_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` with ``image`` cannot run ``spec`` (empty if they can)."""
    if spec.kind != "pw_dw_pw":
        return [f"image is a PW->DW->PW kernel, not {spec.kind}"]
    out, mid = spec.output, spec.shapes[1].c
    p, t, split = tiles.output_cols, tiles.threads, tiles.split
    found = []
    if (tiles.channel_tile, tiles.tile_h, tiles.tile_w) != (out.c, out.h, out.w):
        found.append(f"the tile is the whole output, c{out.c} {out.h}x{out.w}")
    if spec.width % p or out.w % p:
        found.append(f"{p} pixels a thread do not divide the image widths {spec.width} and {out.w}")
        return found
    runs_in, runs_out = pixel_runs(spec, tiles)
    if t % WARP or t > MAX_THREADS or t % runs_in or t % runs_out:
        found.append(
            f"{t} threads: whole warps, at most {MAX_THREADS}, a multiple of the {runs_in} and "
            f"{runs_out} runs of {p} pixels"
        )
        return found
    if out.c % (t // runs_out):
        found.append(f"{t // runs_out} groups of output channels do not divide {out.c}")
    if spec.in_channels % VECTOR:
        found.append(f"{spec.in_channels} input channels are not whole vectors of {VECTOR} weights")
    if tiles.image < 1 or chunk(spec, tiles) % VECTOR:
        found.append(f"{tiles.image} mid channels a thread: chunks must be whole vectors of {VECTOR}")
    elif mid % split or (mid // split) % chunk(spec, tiles):
        found.append(f"chunks of {chunk(spec, tiles)} mid channels do not divide {mid} / split {split}")
    knobs = {"output_cols": p, "image": tiles.image, "split": split}
    if tiles != FcmTiles(out.c, out.h, out.w, t, **knobs):
        found.append("image takes no other knob (rows, lanes, columns, tensor cores, streams)")
    if not found and shared_bytes(spec, tiles) > max_smem:
        found.append(f"{shared_bytes(spec, tiles)} bytes of shared memory > {max_smem}")
    if not found and register_bytes(spec, tiles) > MAX_REGISTER_BYTES:
        found.append(f"{register_bytes(spec, tiles)} bytes of registers a thread > {MAX_REGISTER_BYTES}")
    return found


def pixel_runs(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int]:
    """Runs of ``output_cols`` pixels in the input image and in the output image."""
    p = tiles.output_cols
    return spec.height * spec.width // p, spec.output.h * spec.output.w // p


def chunk(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Mid channels per step: ``image`` a thread, over the threads left after the pixel runs."""
    return tiles.image * (tiles.threads // pixel_runs(spec, tiles)[0])


def output_channels_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    return spec.output.c // (tiles.threads // pixel_runs(spec, tiles)[1])


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """One block's shared memory: a chunk's expansion over the image and its DW result."""
    pixels = spec.height * spec.width + spec.output.h * spec.output.w
    return chunk(spec, tiles) * pixels * DTYPE_BYTES[spec.dtype]


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 sums a thread keeps: the projection's, and the expansion's while it runs."""
    return (output_channels_per_thread(spec, tiles) + tiles.image) * tiles.output_cols


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's local buffers, float32: both sums, a vector of weights per channel of either PW,
    a run of pixels, the DW's sum."""
    ro, r, p = output_channels_per_thread(spec, tiles), tiles.image, tiles.output_cols
    return 4 * ((ro + r) * p + max(ro, r) * VECTOR + p + 1)


def blocks(spec: FcmSpec, tiles: FcmTiles) -> int:
    return spec.batch * tiles.split


def image_primfunc(spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The kernel (and the one that adds up the slices); call only when :func:`image_problems`
    is empty."""
    pw0, dw, pw2 = spec.stages
    assert isinstance(pw0, Pointwise) and isinstance(dw, Depthwise) and isinstance(pw2, Pointwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, o_, ho_, wo_ = spec.output.as_tuple()
    m_ = spec.shapes[1].c
    k_, s_, top, left = dw.kernel, dw.stride, dw.pads[0], dw.pads[1]
    p, t, split, r = tiles.output_cols, tiles.threads, tiles.split, tiles.image
    runs_in, runs_out = pixel_runs(spec, tiles)
    px_in, px_out = h_ * w_, ho_ * wo_
    kc = chunk(spec, tiles)
    ro = output_channels_per_thread(spec, tiles)
    steps = m_ // split // kc
    dw_rounds = ceil_div(kc * px_out, t)
    acts = activation_builders(fast_math)
    act0, act1 = acts[pw0.activation], acts[dw.activation]
    store = stored_output(acts[pw2.activation], spec.residual, spec.dtype)
    dt, f32, f32v = spec.dtype, "float32", f"float32x{VECTOR}"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)
    sum_blocks = ceil_div(n_ * o_ * px_out, SUM_THREADS)
    scope = "shared" if shared_bytes(spec, tiles) <= STATIC_SMEM else SHARED  # beyond: dynamic

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
            mid = T.alloc_buffer((kc * px_in,), dt, scope=scope)  # the chunk's expansion
            dwo = T.alloc_buffer((kc * px_out,), dt, scope=scope)  # its DW result
            acc = T.alloc_buffer((ro * p,), f32, scope="local")
            acc0 = T.alloc_buffer((r * p,), f32, scope="local")
            wv = T.alloc_buffer((max(ro, r) * VECTOR,), f32, scope="local")  # either PW's weights
            xv = T.alloc_buffer((p,), f32, scope="local")
            dsum = T.alloc_buffer((1,), f32, scope="local")
            nn = T.meta_var(bx // split)
            m_first = T.meta_var(bx % split * (m_ // split))
            g0 = T.meta_var(tx // runs_in)  # the expansion's channel group and pixel run
            q0 = T.meta_var(tx % runs_in)
            g2 = T.meta_var(tx // runs_out)  # the projection's
            q2 = T.meta_var(tx % runs_out)
            y0 = T.meta_var(q0 * p // w_)
            x0 = T.meta_var(q0 * p % w_)
            for i in T.unroll(ro * p):
                acc[i] = T.float32(0)
            for step in range(steps):
                mc = T.meta_var(m_first + step * kc)  # the chunk's first mid channel
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
                            dt, act0(acc0[i * p + u] + T.Cast(f32, b0[mc + g0 * r + i]))
                        )
                T.tvm_storage_sync("shared")
                for rd in range(dw_rounds):
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
                        dwo[e] = T.Cast(dt, act1(dsum[0]))
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
