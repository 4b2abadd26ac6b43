"""A pointwise convolution whose input is scaled per image and channel first, on tensor cores (fp16).

Squeeze-excitation ends in ``y = x * gate``, and the project PW reads ``y``: stock TVM writes
``y`` (as big as ``x``) and reads it back. This kernel reads ``x`` and the ``(N, C)`` gate and
scales each value as it stages it, so ``y`` never reaches global memory:
``out = act(W . (x * gate) + b) [+ residual]``.

A thread block computes ``channel_tile`` output channels over ``pixel_tile`` consecutive pixels of
the batch (the images flattened one after another: a 1x1 convolution has no halo, so a tile is any
run of pixels, and a 7x7 image's 49 pixels pad no tile of their own). Whatever is not whole
fragments is padded with zeros and never stored: the batch's last pixel tile, output channels up
to a whole channel tile (24 -> 32), input channels up to a multiple of 16 (72 -> 80). Per chunk
of 32 input channels (16 where 32 does not divide them) it

1. stages the chunk's weights and its scaled input (``chunk x pixel_tile``, float16) in shared
   memory,
2. multiplies them on tensor cores (``wmma`` 16x16x16, float32 accumulators in fragments, each
   warp a grid of them),

then stores the accumulators to shared memory and applies bias, activation and residual as it
writes the output once. Where the blocks would not fill the GPU (batch 1's deep layers),
``split`` slices of the input channels run side by side and a second kernel sums their partial
sums and writes the output instead. It is the DW->PW tensor-core kernel (``cuda_dw_pw_tc.py``) with the
depthwise stage replaced by the scale. FuseGatedPointwise puts it in place of squeeze-excitation's
product and the project PW; correct on an H200, but slow at batch 32 (docs/kernels.md, "Not done
yet").
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass, replace

import tvm
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from ..errors import FcmError
from ..gpus import DEFAULT_GPU, all_gpus
from .compute import ACTIVATION_BUILDERS
from .layout import ceil_div
from .primfunc import OP_PATTERN_ATTR, OPAQUE, SCHEDULED_ATTR
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
    warp_grid,
    whole_fragments,
    without_param,
)

SYMBOL = "fcm_gated_pw"
# Blocks of a split kernel, in waves of the GPU's SMs: on the H200 at batch 1, the largest split
# within two waves was the fastest of every split (or 0.4 us from it) for all project PWs of
# EfficientNet-B0 and MobileNetV3-Large; one wave missed four by 1-6 us
# (docs/results/gated_pw_h200_b1.json)
SPLIT_WAVES = 2


@dataclass(frozen=True)
class GatedPointwise:
    """``act(W . (x * gate[n, c]) + b) [+ residual]`` on an ``batch x in_channels x height x width``
    float16 input; the gate is float32, one value per image and input channel."""

    batch: int
    in_channels: int
    out_channels: int
    height: int
    width: int
    activation: str = "none"
    residual: bool = False

    def __post_init__(self) -> None:
        if min(self.batch, self.in_channels, self.out_channels, self.height, self.width) < 1:
            raise ValueError("every dimension of a gated pointwise convolution must be positive")
        if self.activation not in ACTIVATION_BUILDERS:
            raise ValueError(f"activation {self.activation!r} is not one of {', '.join(ACTIVATION_BUILDERS)}")

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def batch_pixels(self) -> int:
        return self.batch * self.pixels

    @property
    def key(self) -> str:
        shape = f"{self.batch}x{self.in_channels}x{self.height}x{self.width}"
        return f"gated_pw {shape} -> {self.out_channels}:{self.activation}{' +res' if self.residual else ''}"

    def param_shapes(self) -> list[tuple[int, ...]]:
        """The kernel's inputs in order: x, gate, W, b (and the residual where there is one)."""
        n, c, o, h, w = self.batch, self.in_channels, self.out_channels, self.height, self.width
        shapes = [(n, c, h, w), (n, c), (o, c, 1, 1), (o,)]
        return shapes + [(n, o, h, w)] if self.residual else shapes

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.batch, self.out_channels, self.height, self.width)


@dataclass(frozen=True)
class GatedPwTiles:
    """Output channels and pixels a thread block computes (whole fragments), and its threads."""

    channel_tile: int = 32
    pixel_tile: int = 64
    threads: int = 128
    split: int = 1  # slices of the input channels, side by side in blocks, summed by a 2nd kernel
    chunk: int = 0  # input channels per shared-memory step; 0: the largest of wmma.CHUNKS that divides

    @property
    def label(self) -> str:
        step = f" k{self.chunk}" if self.chunk else ""
        return f"c{self.channel_tile} p{self.pixel_tile} t{self.threads} s{self.split}{step} tc"

    @classmethod
    def from_label(cls, label: str) -> GatedPwTiles:
        """The tiles a :attr:`label` names (as the GPU checks' rows record them)."""
        fields = {"c": "channel_tile", "p": "pixel_tile", "t": "threads", "s": "split", "k": "chunk"}
        words = label.split()
        if words[-1:] != ["tc"] or not all(w[:1] in fields and w[1:].isdigit() for w in words[:-1]):
            raise ValueError(f"not a gated pointwise tile label: {label!r}")
        return cls(**{fields[w[0]]: int(w[1:]) for w in words[:-1]})


def fastest_tiles(rows: list[dict]) -> dict[str, GatedPwTiles]:
    """By kernel key, the tiles of the fastest correct row of a GPU check
    (``tests/gpu/check_gated_pw.py --json``)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row.get("ok") and (row["key"] not in best or row["median_us"] < best[row["key"]]["median_us"]):
            best[row["key"]] = row
    return {key: GatedPwTiles.from_label(row["tiles"]) for key, row in best.items()}


def padded_in_channels(spec: GatedPointwise) -> int:
    return whole_fragments(spec.in_channels)


def padded_out_channels(spec: GatedPointwise, tiles: GatedPwTiles) -> int:
    return ceil_div(spec.out_channels, tiles.channel_tile) * tiles.channel_tile


def chunk(spec: GatedPointwise, tiles: GatedPwTiles | None = None) -> int:
    """Input channels per shared-memory step: the tiles', else :func:`~.wmma.largest_chunk`."""
    return tiles.chunk if tiles and tiles.chunk else largest_chunk(padded_in_channels(spec))


def fragment_grid(tiles: GatedPwTiles) -> tuple[int, int]:
    """(channel, pixel) fragments of a block's output."""
    return tiles.channel_tile // FRAGMENT, tiles.pixel_tile // FRAGMENT


def shared_bytes(spec: GatedPointwise, tiles: GatedPwTiles) -> int:
    """One block's shared memory: the weights and scaled input of a chunk (float16), and the
    float32 accumulators staged for the epilogue."""
    halves = (tiles.channel_tile + tiles.pixel_tile) * chunk(spec, tiles)
    return halves * HALF_BYTES + accumulator_bytes(tiles)


def accumulator_bytes(tiles: GatedPwTiles) -> int:
    return tiles.channel_tile * tiles.pixel_tile * 4


def tile_problems(spec: GatedPointwise, tiles: GatedPwTiles, max_smem: int) -> list[str]:
    """Why ``tiles`` cannot run ``spec`` (empty if they can)."""
    found = []
    if tiles.channel_tile % FRAGMENT or tiles.channel_tile < FRAGMENT:
        found.append(f"channel tile {tiles.channel_tile} is not whole fragments of {FRAGMENT}")
    if tiles.pixel_tile % FRAGMENT or tiles.pixel_tile < FRAGMENT:
        found.append(f"pixel tile {tiles.pixel_tile} is not whole fragments of {FRAGMENT}")
    if tiles.chunk % FRAGMENT or tiles.chunk < 0:
        found.append(f"chunk {tiles.chunk} is not whole fragments of {FRAGMENT}")
    elif tiles.split < 1 or padded_in_channels(spec) % (chunk(spec, tiles) * tiles.split):
        channels, step = padded_in_channels(spec), chunk(spec, tiles)
        found.append(f"split {tiles.split} does not divide {channels} channels in chunks of {step}")
    if tiles.threads % WARP or not 0 < tiles.threads <= 1024:
        found.append(f"{tiles.threads} threads are not whole warps (at most 1024)")
    elif not found and warp_grid(tiles.threads // WARP, fragment_grid(tiles)) is None:
        found.append(f"{tiles.threads // WARP} warps do not tile the {fragment_grid(tiles)} fragments")
    if not found:
        found = shared_memory_problems(shared_bytes(spec, tiles), accumulator_bytes(tiles), max_smem)
    return found


def tile_blocks(spec: GatedPointwise, tiles: GatedPwTiles) -> int:
    """Thread blocks of one slice: pixel tiles of the batch times channel tiles."""
    return ceil_div(spec.batch_pixels, tiles.pixel_tile) * ceil_div(spec.out_channels, tiles.channel_tile)


def slice_splits(spec: GatedPointwise) -> list[int]:
    """The splits of the input channels (default chunks) that leave each slice two chunks or more."""
    chunks = padded_in_channels(spec) // chunk(spec)
    return [s for s in range(1, chunks // 2 + 1) if chunks % s == 0]


def default_tiles(spec: GatedPointwise, sm_count: int | None = None) -> GatedPwTiles:
    """32 output channels where they divide (else 16: less padding), 64 pixels, four warps; the
    input channels split into as many slices as keep the blocks within :data:`SPLIT_WAVES` waves
    of ``sm_count`` SMs (by default the default GPU's) and each slice at least two chunks (batch
    1's deep layers give few blocks otherwise: six for 1152 -> 192 at 7x7)."""
    sm_count = sm_count or all_gpus()[DEFAULT_GPU].sm_count
    tiles = GatedPwTiles(32 if spec.out_channels % 32 == 0 else FRAGMENT, 64, 128)
    blocks, most = tile_blocks(spec, tiles), SPLIT_WAVES * sm_count
    return replace(tiles, split=max((s for s in slice_splits(spec) if blocks * s <= most), default=1))


def definition(spec: GatedPointwise, tiles: GatedPwTiles) -> tvm.tirx.PrimFunc:
    """Over (pixel tile of the batch, padded channel, pixel of the tile): the padded weights, the
    scaled input, the GEMM, the epilogue."""
    n_, c_, h_, w_ = spec.batch, spec.in_channels, spec.height, spec.width
    o_, p_ = spec.out_channels, tiles.pixel_tile
    cp_, op_ = padded_in_channels(spec), padded_out_channels(spec, tiles)
    sp = tiles.split
    slice_ = cp_ // sp
    t_ = ceil_div(spec.batch_pixels, p_)
    hw, nhw = spec.pixels, spec.batch_pixels
    f16, f32 = DTYPE, "float32"
    res_shape = spec.output_shape if spec.residual else (1,)
    epilogue = stored_output(ACTIVATION_BUILDERS[spec.activation], spec.residual)

    @T.prim_func(s_tir=True)
    def gated_pw(
        x: T.Buffer((n_, c_, h_, w_), f16),
        gate: T.Buffer((n_, c_), f32),
        w: T.Buffer((o_, c_, 1, 1), f16),
        b: T.Buffer((o_,), f16),
        residual: T.Buffer(res_shape, f16),
        out: T.Buffer((n_, o_, h_, w_), f16),
    ):
        T.func_attr({"tirx.noalias": True})
        weights = T.sblock_alloc_buffer((op_, cp_), f16)
        scaled = T.sblock_alloc_buffer((t_, cp_, p_), f16)
        acc = T.sblock_alloc_buffer((sp, t_, op_, p_), f32)
        for o, c in T.grid(op_, cp_):
            with T.sblock("weights"):
                vo, vc = T.axis.remap("SS", [o, c])
                weights[vo, vc] = T.if_then_else(vo < o_ and vc < c_, w[vo, vc, 0, 0], T.float16(0))
        for t, c, p in T.grid(t_, cp_, p_):
            with T.sblock("scaled"):
                vt, vc, vp = T.axis.remap("SSS", [t, c, p])
                q = T.meta_var(vt * p_ + vp)  # of the batch: image q // hw, its pixel q % hw
                scaled[vt, vc, vp] = T.if_then_else(
                    q < nhw and vc < c_,
                    T.Cast(f16, T.Cast(f32, x[q // hw, vc, q % hw // w_, q % w_]) * gate[q // hw, vc]),
                    T.float16(0),
                )
        for sl, t, o, p, c in T.grid(sp, t_, op_, p_, slice_):
            with T.sblock("acc"):
                vs, vt, vo, vp, vc = T.axis.remap("SSSSR", [sl, t, o, p, c])
                with T.init():
                    acc[vs, vt, vo, vp] = T.float32(0)
                acc[vs, vt, vo, vp] = acc[vs, vt, vo, vp] + T.Cast(
                    f32, weights[vo, vs * slice_ + vc]
                ) * T.Cast(f32, scaled[vt, vs * slice_ + vc, vp])
        for t, o, p in T.grid(t_, op_, p_):
            with T.sblock("out"):
                vt, vo, vp = T.axis.remap("SSS", [t, o, p])
                q = T.meta_var(vt * p_ + vp)
                at = T.meta_var((q // hw, vo, q % hw // w_, q % w_))
                res = T.meta_var(residual[at] if spec.residual else T.float16(0))
                total = T.meta_var(functools.reduce(operator.add, [acc[k, vt, vo, vp] for k in range(sp)]))
                if q < nhw and vo < o_:  # a body condition: reverse_compute_at drops a block predicate
                    out[at] = epilogue(total, b[vo], res)

    return gated_pw if spec.residual else without_param(gated_pw, 4)  # the body never reads it


def schedule(sch: Schedule, spec: GatedPointwise, tiles: GatedPwTiles) -> None:
    """Schedule :func:`definition` in ``sch`` (see the module doc)."""
    warps_c, warps_p = warp_grid(tiles.threads // WARP, fragment_grid(tiles))
    frags_c, frags_p = fragment_grid(tiles)
    threads = (warps_c * warps_p, WARP)
    gemm = sch.get_sblock("acc")
    sl, t, o, p, c = sch.get_loops(gemm)
    o_block, o_warp, o_frag, o_in = sch.split(o, [None, warps_c, frags_c // warps_c, FRAGMENT])
    p_warp, p_frag, p_in = sch.split(p, [warps_p, frags_p // warps_p, FRAGMENT])
    step, c_frag, c_in = sch.split(c, [None, chunk(spec, tiles) // FRAGMENT, FRAGMENT])
    sch.reorder(t, o_block, sl, o_warp, p_warp, step, c_frag, o_frag, p_frag, o_in, p_in, c_in)
    block = sch.fuse(t, o_block, sl)  # a tile's slices run side by side
    sch.bind(block, "blockIdx.x")
    warp = sch.fuse(o_warp, p_warp)
    sch.bind(warp, "threadIdx.y")

    split = tiles.split > 1
    store = sch.cache_write(gemm, 0, "wmma.accumulator")
    sch.reverse_compute_at(store, warp)
    if not split:  # else the slices' partial sums go to a global workspace, summed by a 2nd kernel
        sch.set_scope(store, 0, ACCUMULATORS)
    weights = sch.get_sblock("weights")
    sch.set_scope(weights, 0, SHARED)
    sch.compute_at(weights, step)
    a_frag = sch.cache_read(gemm, 0, "wmma.matrix_a")
    sch.compute_at(a_frag, c_frag)
    scaled = sch.get_sblock("scaled")
    sch.set_scope(scaled, 0, SHARED)
    b_frag = sch.cache_read(gemm, 1, "wmma.matrix_b")
    sch.compute_at(b_frag, c_frag)
    sch.compute_at(scaled, step)
    epilogue = sch.get_sblock("out")
    if split:
        spread_over_grid(sch, epilogue, tiles.threads)
    else:
        sch.reverse_compute_at(epilogue, block)

    spread(sch, weights, step, threads)
    spread(sch, scaled, step, threads)
    if not split:
        spread(sch, epilogue, block, threads)

    tensorize_gemm(sch, gemm, step, a_frag, b_frag, store, to_global=split)


def gated_pw_primfunc(
    spec: GatedPointwise, tiles: GatedPwTiles | None, target: tvm.target.Target
) -> tvm.tirx.PrimFunc:
    """The kernel for ``target``: the definition on CPUs (the stock pipeline schedules it), on
    tensor cores for CUDA. Tiles that do not fit raise :class:`FcmError`."""
    tiles = tiles or default_tiles(spec)
    kind = target.kind.name
    if kind in ("llvm", "c"):
        return definition(spec, tiles).with_attr("global_symbol", SYMBOL)
    if kind != "cuda":
        raise FcmError(f"no gated pointwise kernel for target kind '{kind}' (supported: cuda, llvm, c)")
    from .cuda import check_launchable, max_shared_memory

    if problems := tile_problems(spec, tiles, max_shared_memory(target)):
        raise FcmError(f"tiles {tiles.label} of {spec.key}: " + "; ".join(problems))
    sch = Schedule(tvm.IRModule({"main": definition(spec, tiles).with_attr("global_symbol", SYMBOL)}))
    schedule(sch, spec, tiles)
    check_launchable(sch.mod["main"], target, f"tiles {tiles.label} of {spec.key}")
    return sch.mod["main"].with_attrs({SCHEDULED_ATTR: True, OP_PATTERN_ATTR: OPAQUE})
