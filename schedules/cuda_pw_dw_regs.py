"""PW -> DW for few input channels (``FcmTiles.register_pw = 1``): the PW's weights in registers.

A thread block stages its input patch, halo included, once in shared memory (every input channel,
in the spec's dtype) and computes ``patch_reuse`` channel tiles of ``channel_tile`` channels from
it in turn. Per turn each thread holds the PW weights of :data:`REGISTER_CHANNELS` channels in
float32 registers and sums a ``REGISTER_CHANNELS x patch_rows`` tile of PW results over all input
channels, so that each shared load (one vector of ``patch_rows`` pixels) feeds
``REGISTER_CHANNELS x patch_rows`` multiply-adds. Bias and activation (zero outside the image: the
DW's padding) go straight from the registers into the PW result in shared memory (the spec's
dtype, as an unfused graph stores it), and the DW runs from there as in :mod:`.cuda_pw_dw_tc` (a
thread per channel and column, its sums in registers).

A warp computes each channel group (``threads`` is 32 per :data:`REGISTER_CHANNELS` channels of
the tile). The patch is one flat dimension of ``rows x cols`` pixels, padded to whole rounds of
the warp; each lane sums ``patch_rows`` neighbouring pixels.

Measured on the H100 at batch 32 in float16 (docs/kernels.md; 219 kernels of 17 chains, each
beside the tile the tables held): faster than that tile on 7 chains, the 24-channel heads at
56x56 (MobileNetV2's 24->144 with stride 2: 84.7 against 95.1 us; MobileNetV3's and MnasNet's
24->72: 61.0 and 69.8 against 74.2 and 82.6), MobileNetV2's 32->192 at 28x28 (32.3 against 46.6)
and the 40-channel ones at 28x28 with a stride-1 DW (MobileNetV3's 40->120: 48.7 against 83.9);
level with the tensor cores on the 16-channel heads at 112x112 (150 against 146 us), slower on the
stride-2 chains at 28x28 (44-115 against 34-59 us).
"""

from __future__ import annotations

import tvm
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from .compute import activation_builders
from .cuda_base import loops_below
from .cuda_pw_dw_tc import depthwise_by_columns, depthwise_columns, depthwise_stage, patch_shape
from .layout import DTYPE_BYTES, MAX_THREADS, STATIC_SMEM, WARP, ceil_div
from .spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .wmma import SHARED, spread, without_param

REGISTER_CHANNELS = 4  # PW channels per thread: their weights and sums stay in registers
MAX_INPUT_CHANNELS = 40  # a thread's weights are REGISTER_CHANNELS x input channels registers (196 at 40)
MAX_PATCH_ROWS = 8


def register_pw_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` with ``register_pw`` cannot run ``spec`` (empty if they can)."""
    if spec.kind != "pw_dw":
        return [f"register_pw is a PW->DW kernel, not {spec.kind}"]
    found = []
    if spec.in_channels > MAX_INPUT_CHANNELS:
        found.append(f"{spec.in_channels} input channels > {MAX_INPUT_CHANNELS} (weights in registers)")
    out, ct, reuse = spec.output, tiles.channel_tile, tiles.patch_reuse
    if ct % REGISTER_CHANNELS or reuse < 1 or out.c % (ct * reuse):
        found.append(
            f"{reuse} channel tiles of {ct} (a multiple of {REGISTER_CHANNELS}) per block "
            f"do not divide {out.c}"
        )
    if out.h % tiles.tile_h or out.w % tiles.tile_w:
        found.append(f"tile {tiles.tile_h}x{tiles.tile_w} must divide the output {out.h}x{out.w}")
    if tiles.threads != block_threads(ct) or tiles.threads > MAX_THREADS:
        found.append(
            f"{tiles.threads} threads: a warp per {REGISTER_CHANNELS} of the {ct} channels "
            f"is {block_threads(ct)} (at most {MAX_THREADS})"
        )
    if not 1 <= tiles.patch_rows <= MAX_PATCH_ROWS:
        found.append(f"patch_rows {tiles.patch_rows} (pixels per thread) must be 1-{MAX_PATCH_ROWS}")
    knobs = {"patch_rows": tiles.patch_rows, "patch_reuse": reuse, "register_pw": 1}
    other = FcmTiles(ct, tiles.tile_h, tiles.tile_w, tiles.threads, **knobs)
    if tiles != other:
        found.append("register_pw takes no other knob (split, lanes, columns, tensor cores)")
    if not found and shared_bytes(spec, tiles) > max_smem:
        found.append(f"{shared_bytes(spec, tiles)} bytes of shared memory > {max_smem}")
    return found


def block_threads(channel_tile: int) -> int:
    """The threads of a block: a warp per :data:`REGISTER_CHANNELS` channels of its tile."""
    return WARP * max(1, channel_tile // REGISTER_CHANNELS)


def padded_pixels(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The patch's pixels in whole rounds: ``patch_rows`` per lane of a channel group's warp."""
    rows, cols = patch_shape(spec, tiles)
    per_round = WARP * tiles.patch_rows
    return ceil_div(rows * cols, per_round) * per_round


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """One block's shared memory: the input patch and one channel tile's PW result."""
    pixels = padded_pixels(spec, tiles)
    return (spec.in_channels + tiles.channel_tile) * pixels * DTYPE_BYTES[spec.dtype]


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's register tiles: PW weights and sums (float32), its pixels' inputs and DW weights
    (the spec's dtype), the DW's sums (float32)."""
    kernel, dtype = spec.stages[1].kernel, DTYPE_BYTES[spec.dtype]
    pw = REGISTER_CHANNELS * (spec.in_channels + tiles.patch_rows) * 4
    return pw + (tiles.patch_rows + kernel**2) * dtype + tiles.tile_h * 4


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 sums a thread keeps at once: the PW's, or later the DW's (``tile_h``)."""
    return max(REGISTER_CHANNELS * tiles.patch_rows, tiles.tile_h)


def padding_waste(spec: FcmSpec, tiles: FcmTiles) -> float:
    """PW pixels computed per output pixel (halo and padding included)."""
    return padded_pixels(spec, tiles) / (tiles.tile_h * tiles.tile_w)


def register_pw_definition(spec: FcmSpec, tiles: FcmTiles, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """PW -> DW over (image, tile row, tile column, channel, flat patch pixel); see the module doc.
    ``fast_math``: the activations of :data:`~.compute.FAST_ACTIVATION_BUILDERS` (CUDA only)."""
    pw, dw = spec.stages
    assert isinstance(pw, Pointwise) and isinstance(dw, Depthwise)
    n_, c_, h_, w_ = spec.input.as_tuple()
    _, m_, ho_, wo_ = spec.output.as_tuple()
    k_, s_ = dw.kernel, dw.stride
    top, left = dw.pads[0], dw.pads[1]
    th, tw, ct, reuse = tiles.tile_h, tiles.tile_w, tiles.channel_tile, tiles.patch_reuse
    ny, nx = ho_ // th, wo_ // tw
    rows, cols = patch_shape(spec, tiles)
    real, p_ = rows * cols, padded_pixels(spec, tiles)
    cq_ = depthwise_columns(tiles)
    pw_act = activation_builders(fast_math)[pw.activation]
    dt, f32 = spec.dtype, "float32"
    res_shape = spec.output.as_tuple() if spec.residual else (1,)

    def flat_result(s0_out, vn, vty, vtx, vm, row, col):  # the patch is one flat dimension here
        return s0_out[vn, vty, vtx, vm, row * cols + col]

    depthwise = depthwise_stage(spec, tiles, fast_math, flat_result)

    @T.prim_func(s_tir=True)
    def fcm(
        x: T.Buffer((n_, c_, h_, w_), dt),
        w0: T.Buffer((m_, c_, 1, 1), dt),
        b0: T.Buffer((m_,), dt),
        w1: T.Buffer((m_, 1, k_, k_), dt),
        b1: T.Buffer((m_,), dt),
        residual: T.Buffer(res_shape, dt),
        out: T.Buffer((n_, m_, ho_, wo_), dt),
    ):
        T.func_attr({"tirx.noalias": True})
        s0_w = T.sblock_alloc_buffer((m_, c_), f32)
        s0_pad = T.sblock_alloc_buffer((n_, ny, nx, c_, p_), dt)
        s0_acc = T.sblock_alloc_buffer((n_, ny, nx, m_, p_), f32)
        s0_out = T.sblock_alloc_buffer((n_, ny, nx, m_, p_), dt)
        s1_acc = T.sblock_alloc_buffer((n_, ny, nx, m_ // ct, cq_, th), f32)
        for m, c in T.grid(m_, c_):
            with T.sblock("s0_w"):
                vm, vc = T.axis.remap("SS", [m, c])
                s0_w[vm, vc] = T.Cast(f32, w0[vm, vc, 0, 0])
        for n, ty, tx, c, p in T.grid(n_, ny, nx, c_, p_):
            with T.sblock("s0_pad"):
                vn, vty, vtx, vc, vp = T.axis.remap("SSSSS", [n, ty, tx, c, p])
                yy = T.meta_var(vty * th * s_ + vp // cols - top)
                xx = T.meta_var(vtx * tw * s_ + vp % cols - left)
                inside = T.meta_var(vp < real and yy >= 0 and yy < h_ and xx >= 0 and xx < w_)
                s0_pad[vn, vty, vtx, vc, vp] = T.if_then_else(
                    inside,
                    x[vn, vc, T.max(T.min(yy, h_ - 1), 0), T.max(T.min(xx, w_ - 1), 0)],
                    T.Cast(dt, 0),
                )
        # one loop nest per block of the grid (image, tile, group of channel tiles), every stage
        # inside it, as in cuda_pw_dw_tc
        for n, ty, tx, g, turn in T.grid(n_, ny, nx, m_ // (ct * reuse), reuse):
            mb = T.meta_var(g * reuse + turn)  # the channel tile
            for mi, p, c in T.grid(ct, p_, c_):
                with T.sblock("s0_acc"):
                    vn, vty, vtx = T.axis.remap("SSS", [n, ty, tx])
                    vm = T.axis.spatial(m_, mb * ct + mi)
                    vp, vc = T.axis.remap("SR", [p, c])
                    with T.init():
                        s0_acc[vn, vty, vtx, vm, vp] = T.float32(0)
                    s0_acc[vn, vty, vtx, vm, vp] = s0_acc[vn, vty, vtx, vm, vp] + s0_w[vm, vc] * T.Cast(
                        f32, s0_pad[vn, vty, vtx, vc, vp]
                    )
            for mi, p in T.grid(ct, p_):
                with T.sblock("s0_out"):
                    vn, vty, vtx = T.axis.remap("SSS", [n, ty, tx])
                    vm = T.axis.spatial(m_, mb * ct + mi)
                    vp = T.axis.spatial(p_, p)
                    yy = T.meta_var(vty * th * s_ + vp // cols - top)
                    xx = T.meta_var(vtx * tw * s_ + vp % cols - left)
                    inside = T.meta_var(vp < real and yy >= 0 and yy < h_ and xx >= 0 and xx < w_)
                    s0_out[vn, vty, vtx, vm, vp] = T.if_then_else(
                        inside,
                        T.Cast(dt, pw_act(s0_acc[vn, vty, vtx, vm, vp] + T.Cast(f32, b0[vm]))),
                        T.Cast(dt, 0),
                    )
            depthwise(n, ty, tx, mb, s0_out, s1_acc, w1, b1, residual, out)

    return fcm if spec.residual else without_param(fcm, 5)  # the body never reads it


def schedule(sch: Schedule, spec: FcmSpec, tiles: FcmTiles) -> None:
    """Schedule :func:`register_pw_definition` in ``sch`` (see the module doc)."""
    threads = (tiles.threads // WARP, WARP)
    gemm = sch.get_sblock("s0_acc")
    n, ty, tx, m_group, _, m, p, c = sch.get_loops(gemm)
    block = sch.fuse(n, ty, tx, m_group)
    sch.bind(block, "blockIdx.x")

    channel_group, channel = sch.split(m, [None, REGISTER_CHANNELS])
    # one pixel a lane has no pixel loop: decompose_reduction refused the unit loop
    rounds, lane, *pixel = sch.split(p, [None, WARP, tiles.patch_rows][: 3 if tiles.patch_rows > 1 else 2])
    # a warp per channel group: with several, TVM sized the sums' registers over the whole patch
    # (a remainder of the thread index defeated its bounds)
    sch.reorder(channel_group, lane, rounds, c, channel, *pixel)
    sch.bind(channel_group, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")

    weights = sch.get_sblock("s0_w")
    sch.set_scope(weights, 0, "local")
    sch.compute_at(weights, lane)

    pad = sch.get_sblock("s0_pad")
    sch.set_scope(pad, 0, SHARED)
    sch.compute_at(pad, block)
    spread(sch, pad, block, threads)

    pw_out = sch.get_sblock("s0_out")
    sch.set_scope(pw_out, 0, result_scope(spec, tiles))
    sch.compute_inline(sch.cache_write(gemm, 0, "local"))  # s0_out reads the sums from registers
    sch.reverse_compute_at(pw_out, rounds)
    sch.decompose_reduction(gemm, c)
    patch = sch.cache_read(gemm, _read_index(sch, gemm, sch.get(pad).writes[0].source.name), "local")
    sch.compute_at(patch, c)
    if pixel:
        sch.vectorize(sch.get_loops(patch)[-1])  # a thread's patch_rows pixels, one vector load
    for loop in (c, channel, *pixel, *loops_below(sch, pw_out, rounds), *sch.get_loops(weights)[-2:]):
        sch.unroll(loop)

    # no kernel column in registers: in the flat patch a column is strided, and TVM would size its
    # registers over the whole patch
    depthwise_by_columns(sch, sch.get_sblock("s1_acc"), sch.get_sblock("s1_out"), threads, cache_column=False)


def result_scope(spec: FcmSpec, tiles: FcmTiles) -> str:
    """Where the PW result lives: static shared memory where the block still launches (in all
    48 KiB or less, or a patch of 48 KiB or more in dynamic memory: :func:`.wmma.
    shared_memory_problems`), apart from the patch; else dynamic, merged with it. Apart, TVM's
    barrier placement sees that the rounds only read the patch and write the result: two barriers
    a turn (before its rounds and before its DW) instead of two a round."""
    pixels = padded_pixels(spec, tiles)
    patch = spec.in_channels * pixels * DTYPE_BYTES[spec.dtype]
    result = tiles.channel_tile * pixels * DTYPE_BYTES[spec.dtype]
    apart = result <= STATIC_SMEM and (patch + result <= STATIC_SMEM or patch >= STATIC_SMEM)
    return "shared" if apart else SHARED


def _read_index(sch: Schedule, block, name: str) -> int:
    """Index among ``block``'s reads of the buffer called ``name``."""
    return [region.source.name for region in sch.get(block).reads].index(name)


def register_pw_primfunc(
    spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False
) -> tvm.tirx.PrimFunc:
    """The scheduled kernel; call only when :func:`register_pw_problems` is empty."""
    definition = register_pw_definition(spec, tiles, fast_math)
    sch = Schedule(definition.with_attr("global_symbol", name))
    schedule(sch, spec, tiles)
    return sch.mod["main"]
