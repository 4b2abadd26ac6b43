"""Squeeze-excitation as one kernel call: ``x * gate(W2 . act(W1 . mean(x) + b1) + b2)``.

Stock TVM runs it as three kernels: the channel means, fc1 with its activation, and fc2 with the
gate fused to the product with ``x``. Its ``mean`` kernel is slow where an image is small and the
channels many (24 us for EfficientNet-B0's 7x7x1152 at batch 32 in fp16 on an H200, a tenth of
the bandwidth), fc2's broadcast product is a GEMV on a 1x1 image that MetaSchedule tunes poorly
(18 us for the same block at batch 1 on an H100), and each kernel costs ~2.7 us in a CUDA graph
however small it is. This call does all of it and keeps the gate on chip:

* A kernel of its own first sums each channel's image: threads along a row of the image in
  vector loads (a warp for a small image, up to the whole block for a large one), meeting in a
  cross-thread reduction; the means go to global memory in the model's dtype, as stock's do.
* A thread block of the next kernel scales ``channel_tile`` channels over ``pixel_tile`` pixels
  of one image. It first computes the gate of its channels into shared memory: a warp per
  channel, its lanes summing ``W2``'s row against the hidden vector, the lanes' sums meeting in a
  warp reduction. Then every thread scales its share of the tile's pixels.
* The hidden vector (``squeeze`` values, each a dot product over all channels, computed the same
  way) is computed by every block into shared memory (no third launch, but every block reads all
  of ``W1``), or, where that reads too much per SM, once by a kernel of its own before the scaling
  kernel, in the same PrimFunc (:func:`default_tiles`, ``SeTiles.hidden_kernel``).

Everything is accumulated in float32 and stored in the model's dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np
import tvm
from tvm import te, tirx
from tvm.s_tir import Schedule

from ..errors import FcmError
from ..gpus import DEFAULT_GPU, all_gpus
from .compute import ACTIVATION_BUILDERS
from .primfunc import OP_PATTERN_ATTR, OPAQUE, SCHEDULED_ATTR

ACTIVATIONS = ("relu", "silu")  # fc1's, as MobileNetV3 and EfficientNet have them
GATES = ("sigmoid", "hardsigmoid")
DTYPES = ("float16", "float32")
WARP = 32
TARGET_ELEMENTS = 2048  # elements a block scales: 8 per thread at 256 threads
# Every block reads all of fc1's weights to compute the hidden vector itself, and an SM runs its
# share of the blocks: past this many such bytes per SM the hidden vector gets a kernel of its own.
# Measured on an H100 (docs/results/excite_h100_means.json, each call alone, launches included),
# 128 KiB misses two of the 16 distinct batch-1 fp16 blocks (EfficientNet-B0's 1152x48 and
# MobileNetV3-Large's 480x120 stay in the blocks, 3.7 and 4.7 us slower alone than apart) and
# loses 3.5 us over the 16 at batch 32; 64-96 KiB miss none at batch 1 and lose 2.4 us at batch
# 32, so 96 KiB (the published end-to-end figures before the twenty-eighth session used 128 KiB)
HIDDEN_BYTES_PER_SM = 96 * 1024
GATES_PER_BLOCK = 32  # channels a block of the gate-only call computes the gates of, at most
RUNS_PER_THREAD = 4  # vector loads of an image row a thread of the means kernel makes, at most
SYMBOL = "fcm_se"


def _hardsigmoid(x: tirx.Expr) -> tirx.Expr:
    # ONNX HardSigmoid(alpha=1/6, beta=1/2), as MobileNetV3 gates its squeeze-excitation
    return tirx.min(
        tirx.max(x / tirx.const(6, "float32") + tirx.const(0.5, "float32"), tirx.const(0, "float32")),
        tirx.const(1, "float32"),
    )


GATE_BUILDERS = {"sigmoid": tirx.sigmoid, "hardsigmoid": _hardsigmoid}


@dataclass(frozen=True)
class SqueezeExcite:
    """One squeeze-excitation block: the channel means of ``x``, fc1, fc2, the gate, the product."""

    batch: int
    channels: int
    height: int
    width: int
    squeeze: int  # fc1's output channels
    activation: str = "relu"
    gate: str = "sigmoid"
    dtype: str = "float32"
    scales: bool = True  # False: the call returns the (N, C) float32 gate, for a gated PW to apply

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("unsupported squeeze-excitation: " + "; ".join(problems))

    def problems(self) -> list[str]:
        found = []
        if min(self.batch, self.channels, self.height, self.width, self.squeeze) < 1:
            found.append("every dimension must be positive")
        if self.activation not in ACTIVATIONS:
            found.append(f"activation {self.activation!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.gate not in GATES:
            found.append(f"gate {self.gate!r} is not one of {', '.join(GATES)}")
        if self.dtype not in DTYPES:
            found.append(f"dtype {self.dtype} is not one of {', '.join(DTYPES)}")
        return found

    @property
    def pixels(self) -> int:
        return self.height * self.width

    @property
    def key(self) -> str:
        """How records and reports name it, e.g. ``se 1x1152x7x7 s48 silu sigmoid float16``."""
        shape = f"{self.batch}x{self.channels}x{self.height}x{self.width}"
        key = f"se {shape} s{self.squeeze} {self.activation} {self.gate} {self.dtype}"
        return key if self.scales else f"{key} gate-only"

    def param_shapes(self) -> list[tuple[int, ...]]:
        """The kernel's inputs in order: x, W1, b1, W2, b2."""
        n, c, s = self.batch, self.channels, self.squeeze
        return [(n, c, self.height, self.width), (s, c, 1, 1), (s,), (c, s, 1, 1), (c,)]

    @property
    def output_shape(self) -> tuple[int, ...]:
        if not self.scales:
            return (self.batch, self.channels)
        return (self.batch, self.channels, self.height, self.width)

    @property
    def output_dtype(self) -> str:
        return self.dtype if self.scales else "float32"


@dataclass(frozen=True)
class SeTiles:
    """Channels and pixels one thread block scales, and its threads (whole warps)."""

    channel_tile: int
    pixel_tile: int
    threads: int = 256
    hidden_kernel: int = 0  # 1: the hidden vector in a kernel of its own, not in every block
    unroll: int = 0  # 1: a lane's loads along a matrix row unrolled (H100: no gain on the better placement)

    @property
    def label(self) -> str:
        flags = (" h" if self.hidden_kernel else "") + (" u" if self.unroll else "")
        return f"c{self.channel_tile} p{self.pixel_tile} t{self.threads}{flags}"


def default_tiles(se: SqueezeExcite, sm_count: int | None = None, threads: int = 256) -> SeTiles:
    """About :data:`TARGET_ELEMENTS` per block: whole images of as many channels as fit, or one
    channel's image cut into pixel tiles (tiles divide the image and the channels exactly); the
    hidden vector in a kernel of its own where the blocks of one SM (of ``sm_count``, by default
    the default GPU's) would read more than :data:`HIDDEN_BYTES_PER_SM` of fc1's weights."""
    sm_count = sm_count or all_gpus()[DEFAULT_GPU].sm_count
    if not se.scales:  # blocks of gates only: a few channels per warp
        tiles = SeTiles(_largest_divisor(se.channels, GATES_PER_BLOCK), se.pixels, threads)
    elif se.pixels >= TARGET_ELEMENTS:
        tiles = SeTiles(1, _largest_divisor(se.pixels, TARGET_ELEMENTS), threads)
    else:
        tiles = SeTiles(
            _largest_divisor(se.channels, max(1, TARGET_ELEMENTS // se.pixels)), se.pixels, threads
        )
    blocks = se.batch * (se.channels // tiles.channel_tile) * (se.pixels // tiles.pixel_tile)
    per_sm = -(-blocks // sm_count) * se.squeeze * se.channels * np.dtype(se.dtype).itemsize
    return replace(tiles, hidden_kernel=int(per_sm > HIDDEN_BYTES_PER_SM))


def tile_problems(se: SqueezeExcite, tiles: SeTiles) -> list[str]:
    found = []
    if se.channels % tiles.channel_tile:
        found.append(f"channel tile {tiles.channel_tile} does not divide {se.channels} channels")
    if se.pixels % tiles.pixel_tile:
        found.append(f"pixel tile {tiles.pixel_tile} does not divide {se.pixels} pixels")
    if tiles.threads % WARP or not 0 < tiles.threads <= 1024:
        found.append(f"{tiles.threads} threads are not whole warps (at most 1024)")
    return found


def _largest_divisor(value: int, at_most: int) -> int:
    return max(d for d in range(1, min(value, at_most) + 1) if value % d == 0)


def definition(se: SqueezeExcite) -> tvm.tirx.PrimFunc:
    """The block as TE, one stage per step (``means_sum``, ``means``, ``hidden_acc``, ``hidden``,
    ``gate_acc``, ``gate``, ``out``): sums in float32; the means, as stock's, and the output in
    the model's dtype."""
    n_, c_, s_ = se.batch, se.channels, se.squeeze
    act, gate_of = ACTIVATION_BUILDERS[se.activation], GATE_BUILDERS[se.gate]
    x, w1, b1, w2, b2 = (
        te.placeholder(shape, se.dtype, name)
        for shape, name in zip(se.param_shapes(), ("x", "w1", "b1", "w2", "b2"))
    )
    f32 = lambda value: value.astype("float32")  # noqa: E731
    i, j = te.reduce_axis((0, se.height), "i"), te.reduce_axis((0, se.width), "j")
    means_sum = te.compute((n_, c_), lambda n, ch: te.sum(f32(x[n, ch, i, j]), axis=[i, j]), "means_sum")
    pixels = tirx.const(se.pixels, "float32")
    means = te.compute((n_, c_), lambda n, ch: (means_sum[n, ch] / pixels).astype(se.dtype), "means")
    c = te.reduce_axis((0, c_), "c")
    hidden_acc = te.compute(
        (n_, s_), lambda n, s: te.sum(f32(w1[s, c, 0, 0]) * f32(means[n, c]), axis=c), "hidden_acc"
    )
    hidden = te.compute((n_, s_), lambda n, s: act(hidden_acc[n, s] + f32(b1[s])), "hidden")
    k = te.reduce_axis((0, s_), "k")
    gate_acc = te.compute(
        (n_, c_), lambda n, ch: te.sum(f32(w2[ch, k, 0, 0]) * hidden[n, k], axis=k), "gate_acc"
    )
    gate = te.compute((n_, c_), lambda n, ch: gate_of(gate_acc[n, ch] + f32(b2[ch])), "gate")
    if not se.scales:
        return te.create_prim_func([x, w1, b1, w2, b2, gate]).with_attr("tirx.noalias", True)
    out = te.compute(
        se.output_shape, lambda n, ch, i, j: (f32(x[n, ch, i, j]) * gate[n, ch]).astype(se.dtype), "out"
    )
    return te.create_prim_func([x, w1, b1, w2, b2, out]).with_attr("tirx.noalias", True)


def schedule(sch: Schedule, se: SqueezeExcite, tiles: SeTiles) -> None:
    """Schedule :func:`definition` (see the module doc): the means in a kernel of their own; then a
    thread block per tile of the output, the gate of its channels in shared memory, both
    matrix-vector products a warp per output and its lanes along the sum; the hidden vector per
    block, or once, in a kernel of its own before."""
    warps = tiles.threads // WARP
    _means_kernel(sch, se, tiles.threads)
    if tiles.hidden_kernel:
        sch.compute_inline(sch.get_sblock("hidden"))  # applied as the gate's sums read the hidden sums
        _hidden_kernel(sch, sch.get_sblock("hidden_acc"), warps, _vector(se.channels, se.dtype), tiles.unroll)
    block = _product_blocks(sch, se, tiles) if se.scales else _gate_blocks(sch, tiles)
    for stage in (*(("gate",) if se.scales else ()), "gate_acc"):
        sch.compute_at(sch.get_sblock(stage), block)
    if not tiles.hidden_kernel:
        for stage in ("hidden", "hidden_acc"):
            sch.compute_at(sch.get_sblock(stage), block)
    _warp_per_output(
        sch, sch.get_sblock("gate_acc"), warps, _vector(se.squeeze, se.dtype), ("w2",), unroll=tiles.unroll
    )
    if se.scales:
        sch.set_scope(sch.get_sblock("gate"), 0, "shared")
        _spread(sch, sch.get_sblock("gate"), block, warps)
    if not tiles.hidden_kernel:
        _warp_per_output(
            sch,
            sch.get_sblock("hidden_acc"),
            warps,
            _vector(se.channels, se.dtype),
            ("w1", "means"),
            unroll=tiles.unroll,
        )
        sch.set_scope(sch.get_sblock("hidden"), 0, "shared")
        _spread(sch, sch.get_sblock("hidden"), block, warps)


def _product_blocks(sch: Schedule, se: SqueezeExcite, tiles: SeTiles):
    """A thread block per tile of the product, its threads spread over the tile; the block loop."""
    out = sch.get_sblock("out")
    n, c, h, w = sch.get_loops(out)
    channel_block, channel = sch.split(c, [None, tiles.channel_tile])
    pixel_block, pixel = sch.split(sch.fuse(h, w), [None, tiles.pixel_tile])
    sch.reorder(n, channel_block, pixel_block, channel, pixel)
    block = sch.fuse(n, channel_block, pixel_block)
    sch.bind(block, "blockIdx.x")
    # at most 4 lanes: TVM writes an 8-lane float16 product as a make_uint4 nvcc rejects (cuda_postproc)
    _spread(sch, out, block, tiles.threads // WARP, _vector(tiles.pixel_tile, se.dtype, lanes=4))
    return block


def _gate_blocks(sch: Schedule, tiles: SeTiles):
    """A thread block per ``channel_tile`` gates of one image (the gate-only call); the block loop."""
    gate = sch.get_sblock("gate")
    n, c = sch.get_loops(gate)
    channel_block, _ = sch.split(c, [None, tiles.channel_tile])
    block = sch.fuse(n, channel_block)
    sch.bind(block, "blockIdx.x")
    _spread(sch, gate, block, tiles.threads // WARP)
    return block


def _means_kernel(sch: Schedule, se: SqueezeExcite, threads: int) -> None:
    """Each channel's sum over its image by :func:`row_threads` threads stepping along it in vector
    loads that never cross an image row, the rows of ``threads // row_threads`` channels per block;
    the mean is stored in the model's dtype by the same kernel."""
    means_sum = sch.get_sblock("means_sum")
    n, c, i, j = sch.get_loops(means_sum)
    vector = _vector(se.width, se.dtype)
    lanes = row_threads(se.pixels // vector, threads)
    block, row = sch.split(sch.fuse(n, c), [None, threads // lanes])
    run, lane, element = sch.split(sch.fuse(i, j), [None, lanes, vector])
    sch.reorder(block, row, lane, run, element)
    sch.bind(block, "blockIdx.x")
    sch.bind(row, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    if vector > 1:
        loaded = sch.cache_read(means_sum, 0, "local", consumer_blocks=[means_sum])  # not out's
        sch.compute_at(loaded, run)
        sch.vectorize(sch.get_loops(loaded)[-1])
    sch.unroll(run)  # a thread's loads in flight together
    sch.set_scope(means_sum, 0, "local")
    sch.reverse_compute_at(sch.get_sblock("means"), row)


def row_threads(runs: int, threads: int) -> int:
    """Threads that sum one image of ``runs`` vector loads: a warp, doubled (up to the block) until
    each thread makes at most :data:`RUNS_PER_THREAD` of them."""
    lanes = WARP
    while lanes < threads and runs > RUNS_PER_THREAD * lanes:
        lanes *= 2
    return lanes


def _hidden_kernel(sch: Schedule, hidden_acc, warps: int, vector: int, unroll: int) -> None:
    """The hidden sums in a kernel of their own, to global memory: a warp per sum, as many thread
    blocks as it takes."""
    n, s, _ = sch.get_loops(hidden_acc)
    block, _ = sch.split(sch.fuse(n, s), [None, warps])
    sch.bind(block, "blockIdx.x")
    _warp_per_output(sch, hidden_acc, warps, vector, ("w1", "means"), scope="global", unroll=unroll)


def _warp_per_output(
    sch: Schedule,
    acc,
    warps: int,
    vector: int,
    loads: tuple[str, ...],
    scope: str = "shared",
    unroll: int = 0,
) -> None:
    """A matrix-vector product: warps take outputs in turn, each lane sums every 32nd run of
    ``vector`` inputs (the global buffers ``loads`` read that many at a time; ``unroll``: all of a
    lane's runs at once), and the lanes' sums meet in a warp reduction."""
    *outer, inputs = sch.get_loops(acc)
    bound = not outer or sch.get(outer[-1]).thread_binding is not None
    outputs = sch.add_unit_loop(inputs) if bound else outer[-1]  # one output: a loop of one
    step, warp = sch.split(outputs, [None, warps])
    run, lane, element = sch.split(inputs, [None, WARP, vector])
    sch.reorder(step, warp, lane, run, element)
    sch.bind(warp, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    sch.set_scope(acc, 0, scope)
    reads = [region.source.name for region in sch.get(acc).reads]
    for name in loads if vector > 1 else ():
        loaded = sch.cache_read(acc, reads.index(name), "local")
        sch.compute_at(loaded, run)
        sch.vectorize(sch.get_loops(loaded)[-1])
    if unroll:
        sch.unroll(run)


def _vector(length: int, dtype: str, lanes: int = 8) -> int:
    """Elements per access along a row of ``length``: up to 16 bytes and ``lanes``, dividing the row."""
    widest = min(lanes, 16 // (2 if dtype == "float16" else 4))
    return next(v for v in (8, 4, 2, 1) if v <= widest and length % v == 0)


def _spread(sch: Schedule, sblock, anchor, warps: int, vector: int = 1) -> None:
    """Deal a stage's loops under ``anchor`` out to the block's threads, each thread stepping on
    by ``vector`` elements at a time."""
    loops = sch.get_loops(sblock)
    at = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(anchor)))
    inner = sch.fuse(*loops[at + 1 :]) if len(loops) > at + 1 else sch.add_unit_loop(sblock)
    _steps, warp, lane, element = sch.split(inner, [None, warps, WARP, vector])
    sch.bind(warp, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    if vector > 1:
        sch.vectorize(element)


def excite_primfunc(se: SqueezeExcite, tiles: SeTiles | None, target: tvm.target.Target) -> tvm.tirx.PrimFunc:
    """The kernel for ``target``: the definition on CPUs (the stock pipeline schedules it),
    scheduled by hand on CUDA. Tiles that do not fit raise :class:`FcmError`."""
    tiles = tiles or default_tiles(se)
    if problems := tile_problems(se, tiles):
        raise FcmError(f"tiles {tiles.label} of {se.key}: " + "; ".join(problems))
    kind = target.kind.name
    if kind in ("llvm", "c"):
        return definition(se).with_attr("global_symbol", SYMBOL)
    if kind == "cuda":
        return _cuda_primfunc(se, tiles)
    raise FcmError(f"no squeeze-excitation kernel for target kind '{kind}' (supported: cuda, llvm, c)")


@lru_cache(maxsize=128)
def _cuda_primfunc(se: SqueezeExcite, tiles: SeTiles) -> tvm.tirx.PrimFunc:
    sch = Schedule(tvm.IRModule({"main": definition(se).with_attr("global_symbol", SYMBOL)}))
    schedule(sch, se, tiles)
    return sch.mod["main"].with_attrs({SCHEDULED_ATTR: True, OP_PATTERN_ATTR: OPAQUE})
