"""FusePlanner's cost model: global-memory traffic and time of a DW/PW chain, unfused or fused.

The unfused chain runs as one stock kernel per stage: each reads its input and weights and
writes its output, so every intermediate is written once and read once; the read is served by
L2 for the share of the intermediate that survives there between producer and consumer.

The fused chain is one FCM kernel whose blocks each compute ``channel_tile`` output channels of
a ``tile_h x tile_w`` output tile. A block reads the input patch it needs (the tile plus the
depthwise halo, every input channel) and the weights of its channels; the intermediate never
leaves shared memory. With ``C_out / channel_tile`` channel blocks the input is requested that
many times (each block recomputes the chain's shared part): those re-reads reach DRAM only for
the share that L2 does not keep between sweeps.

Every estimate keeps two ledgers, split by tensor role (:class:`Traffic`): ``requested``, the
sector-granular global-memory accesses of the kernel (the paper's GMA, ncu ``lts__t_bytes``),
and ``dram``, what reaches DRAM (ncu ``dram__bytes``). Time is the larger of DRAM, L2 and
compute time over the grid's parallel efficiency, plus a fixed launch overhead per kernel.
The formulas are listed in docs/planner.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from functools import cache
from importlib import resources
from math import prod

from ..gpus import GpuSpec
from ..schedules.layout import DTYPE_BYTES, depthwise_patch
from ..schedules.spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .memory import (
    contiguous_bytes,
    l2_bandwidth,
    l2_capacity,
    l2_hit_fraction,
    row_segment_sectors,
    write_back_fraction,
)
from .occupancy import REGISTERS_BASE, Occupancy, occupancy, parallel_efficiency, registers_per_thread
from .tiles import accumulators, shared_bytes

# What one kernel launch costs beyond its work: driver and runtime submission plus the gap
# between dependent kernels, for launches from the Relax VM without CUDA graphs (~3 us).
LAUNCH_OVERHEAD_S = 3e-6

# Stock (unfused) stage kernels are modelled as streaming kernels with this many threads per
# block and one output per thread: well occupied, no redundant traffic (which flatters them).
STAGE_THREADS = 256


@dataclass(frozen=True)
class Traffic:
    """Bytes of global-memory traffic of a kernel or chain, by tensor role.

    ``input`` is the chain's input (and the residual, read at the end); ``intermediate_*`` the
    tensors between stages; ``output`` the chain's output.
    """

    input: float = 0.0
    weights: float = 0.0
    intermediate_write: float = 0.0
    intermediate_read: float = 0.0
    output: float = 0.0

    @property
    def intermediate(self) -> float:
        return self.intermediate_write + self.intermediate_read

    @property
    def read(self) -> float:
        return self.input + self.weights + self.intermediate_read

    @property
    def written(self) -> float:
        return self.intermediate_write + self.output

    @property
    def total(self) -> float:
        return self.read + self.written

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class KernelEstimate:
    """Predicted traffic and time of one kernel launch."""

    name: str
    requested: Traffic  # global-memory accesses the kernel makes, sector-granular (L2 level)
    dram: Traffic  # what of them reaches DRAM
    flops: float
    blocks: int
    threads: int
    occupancy: Occupancy
    efficiency: float  # share of the GPU's peak throughput the grid gets (occupancy, waves)
    reread_l2_hit: float  # share of re-read data served by L2 (1.0 when nothing is re-read)
    dram_s: float
    l2_s: float
    compute_s: float
    slowdown: float = 1.0  # measured over modelled time of this kind of kernel (data/calibration.json)
    launch_s: float = LAUNCH_OVERHEAD_S  # what the launch costs beyond the work

    @property
    def busy_s(self) -> float:
        """Time the GPU works on the kernel: the binding resource over the parallel efficiency."""
        return max(self.dram_s, self.l2_s, self.compute_s) / self.efficiency * self.slowdown

    @property
    def time_s(self) -> float:
        return self.busy_s + self.launch_s

    @property
    def bound(self) -> str:
        """What limits the kernel: ``dram``, ``l2`` or ``compute``."""
        times = {"dram": self.dram_s, "l2": self.l2_s, "compute": self.compute_s}
        return max(times, key=lambda name: times[name])


@dataclass(frozen=True)
class ChainEstimate:
    """A chain's kernels (one per stage unfused, one FCM fused) and their totals."""

    kernels: tuple[KernelEstimate, ...]
    tiles: FcmTiles | None = None  # the FCM's tiles; None for the unfused chain
    measured_s: float | None = None  # the chain's measured time on this GPU, which time_s then is

    @property
    def fused(self) -> bool:
        return self.tiles is not None

    @property
    def requested(self) -> Traffic:
        return sum((k.requested for k in self.kernels), Traffic())

    @property
    def dram(self) -> Traffic:
        return sum((k.dram for k in self.kernels), Traffic())

    def dram_observed(self, gpu: GpuSpec) -> Traffic:
        """DRAM traffic of one run of the chain from a cold L2, as ncu's ``dram__bytes`` sums it
        over the chain's kernels: the reads of :attr:`dram`, but of the writes only the share L2
        has written back before the last kernel ends (:func:`.memory.write_back_fraction`).

        A kernel's writes are on average followed by half of its own new traffic and all of the
        later kernels'. At batch 1 every chain fits in L2 and none of its writes is seen; a batch-32
        intermediate of 150 MB is mostly written back while it is still being written.
        """
        new_bytes = [k.dram.total for k in self.kernels]
        observed = Traffic()
        for i, kernel in enumerate(self.kernels):
            after = new_bytes[i] / 2 + sum(new_bytes[i + 1 :])
            share = write_back_fraction(after, l2_capacity(gpu))
            observed += replace(
                kernel.dram,
                intermediate_write=kernel.dram.intermediate_write * share,
                output=kernel.dram.output * share,
            )
        return observed

    @property
    def flops(self) -> float:
        return sum(k.flops for k in self.kernels)

    @property
    def time_s(self) -> float:
        if self.measured_s is not None:
            return self.measured_s
        return sum(k.time_s for k in self.kernels)


# -- shared arithmetic -------------------------------------------------------------------------


def element_bytes(spec: FcmSpec) -> int:
    return DTYPE_BYTES[spec.dtype]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def stage_weight_elements(spec: FcmSpec, index: int, out_channels: int | None = None) -> int:
    """Weights plus bias of stage ``index``; ``out_channels`` narrows it to a block's channel slice."""
    stage, before = spec.stages[index], spec.shapes[index]
    channels = spec.shapes[index + 1].c if out_channels is None else out_channels
    per_channel = stage.kernel**2 if isinstance(stage, Depthwise) else before.c
    return channels * (per_channel + 1)


def stage_macs_per_output(spec: FcmSpec, index: int) -> int:
    """Multiply-adds behind one output element of stage ``index`` (K*K depthwise, C_in pointwise)."""
    stage = spec.stages[index]
    return stage.kernel**2 if isinstance(stage, Depthwise) else spec.shapes[index].c


def weights_bytes(spec: FcmSpec, sector: int) -> int:
    """All the chain's weights and biases, each stage's a contiguous tensor."""
    eb = element_bytes(spec)
    return sum(contiguous_bytes(stage_weight_elements(spec, i) * eb, sector) for i in range(len(spec.stages)))


def kernel_estimate(
    name: str,
    requested: Traffic,
    dram: Traffic,
    flops: float,
    grid: tuple[int, int, Occupancy],
    reread_l2_hit: float,
    gpu: GpuSpec,
) -> KernelEstimate:
    """Price a kernel: DRAM bytes at DRAM bandwidth, requested bytes at L2 bandwidth, FLOPs at the
    CUDA-core rate (``fp32_tflops``; the FCM kernels use no tensor cores, fp16 included)."""
    blocks, threads, occ = grid
    return KernelEstimate(
        name=name,
        requested=requested,
        dram=dram,
        flops=flops,
        blocks=blocks,
        threads=threads,
        occupancy=occ,
        efficiency=parallel_efficiency(blocks, threads, occ.blocks_per_sm, gpu),
        reread_l2_hit=reread_l2_hit,
        dram_s=dram.total / (gpu.dram_bandwidth_gbs * 1e9),
        l2_s=requested.total / l2_bandwidth(gpu),
        compute_s=flops / (gpu.fp32_tflops * 1e12),
    )


# -- unfused: one stock kernel per stage -----------------------------------------------------


def stage_traffic(spec: FcmSpec, index: int, sector: int) -> Traffic:
    """What stock stage kernel ``index`` requests: its input, weights and output once each
    (whole tensors, contiguous, so only the last sector of each is partial); the last stage also
    reads the residual."""
    eb = element_bytes(spec)
    first, last = index == 0, index == len(spec.stages) - 1
    source = contiguous_bytes(spec.shapes[index].numel * eb, sector)
    result = contiguous_bytes(spec.shapes[index + 1].numel * eb, sector)
    return Traffic(
        input=(source if first else 0) + residual_bytes(spec, index, sector),
        weights=contiguous_bytes(stage_weight_elements(spec, index) * eb, sector),
        intermediate_read=0 if first else source,
        intermediate_write=0 if last else result,
        output=result if last else 0,
    )


def residual_bytes(spec: FcmSpec, index: int, sector: int) -> int:
    """The residual stage ``index`` reads: the output's shape, read by the last stage only."""
    if index != len(spec.stages) - 1 or not spec.residual:
        return 0
    return contiguous_bytes(spec.output.numel * element_bytes(spec), sector)


def intermediate_l2_hit(producer: Traffic, consumer: Traffic, gpu: GpuSpec) -> float:
    """Share of an intermediate that the consumer kernel finds in L2.

    Between writing a byte and reading it back, the rest of the producer's traffic and the
    consumer's traffic before that byte pass through L2: on average half of each kernel's
    requested bytes, ``(producer + consumer) / 2``, the reuse distance of :func:`l2_hit_fraction`.
    """
    return l2_hit_fraction((producer.total + consumer.total) / 2, l2_capacity(gpu))


def stage_flops(spec: FcmSpec, index: int) -> float:
    return 2.0 * spec.shapes[index + 1].numel * stage_macs_per_output(spec, index)


def stage_name(spec: FcmSpec, index: int) -> str:
    stage, before, after = spec.stages[index], spec.shapes[index], spec.shapes[index + 1]
    if isinstance(stage, Depthwise):
        return f"dw{stage.kernel}x{stage.kernel}/{stage.stride} {before.c}"
    assert isinstance(stage, Pointwise)
    return f"pw {before.c}->{after.c}"


def stock_grid(spec: FcmSpec, index: int, gpu: GpuSpec) -> tuple[int, int, Occupancy]:
    """Blocks, threads and occupancy of a stock stage kernel: one output per thread, no shared memory."""
    blocks = ceil_div(spec.shapes[index + 1].numel, STAGE_THREADS)
    return blocks, STAGE_THREADS, occupancy(STAGE_THREADS, 0, REGISTERS_BASE, gpu)


def estimate_stage(
    spec: FcmSpec,
    index: int,
    gpu: GpuSpec,
    input_l2_hit: float,
    requested: Traffic,
    epilogue: bool = False,
) -> KernelEstimate:
    """Stock kernel of stage ``index`` requesting ``requested``; ``input_l2_hit`` of its
    intermediate input is served by L2. An ``epilogue`` kernel does no FLOPs to speak of."""
    dram = replace(requested, intermediate_read=requested.intermediate_read * (1 - input_l2_hit))
    grid = stock_grid(spec, index, gpu)
    hit = input_l2_hit if requested.intermediate_read else 1.0
    flops = 0.0 if epilogue else stage_flops(spec, index)
    name = f"epilogue of {stage_name(spec, index)}" if epilogue else stage_name(spec, index)
    kernel = kernel_estimate(name, requested, dram, flops, grid, hit, gpu)
    stock = _calibration()["stock_stage"]
    return replace(kernel, slowdown=stock["time_factor"], launch_s=stock["overhead_us"] * 1e-6)


def split_epilogue(spec: FcmSpec, index: int, sector: int) -> tuple[Traffic, Traffic]:
    """Stage ``index`` as stock TVM runs it when the BatchNorm is not folded: the convolution
    writes its raw result, and a separate elementwise kernel (BatchNorm, activation, residual)
    reads it back and writes the stage's output. ncu counts 6 kernels for a stock PW->DW->PW."""
    eb = element_bytes(spec)
    whole = stage_traffic(spec, index, sector)
    result = contiguous_bytes(spec.shapes[index + 1].numel * eb, sector)
    residual = residual_bytes(spec, index, sector)
    convolution = replace(whole, input=whole.input - residual, intermediate_write=result, output=0.0)
    epilogue = Traffic(
        input=residual,
        weights=contiguous_bytes(2 * spec.shapes[index + 1].c * eb, sector),  # scale and shift
        intermediate_read=result,
        intermediate_write=whole.intermediate_write,
        output=whole.output,
    )
    return convolution, epilogue


def estimate_unfused(spec: FcmSpec, gpu: GpuSpec, epilogue_kernels: bool = False) -> ChainEstimate:
    """The chain as one stock kernel per stage, each intermediate written once and read once;
    with ``epilogue_kernels``, two per stage (:func:`split_epilogue`), as stock TVM runs an
    ONNX graph whose BatchNorms are not folded."""
    sector = gpu.sector_bytes
    kernels = []  # (stage, traffic, is the epilogue kernel)
    for i in range(len(spec.stages)):
        if epilogue_kernels:
            convolution, epilogue = split_epilogue(spec, i, sector)
            kernels += [(i, convolution, False), (i, epilogue, True)]
        else:
            kernels.append((i, stage_traffic(spec, i, sector), False))
    estimates = []
    for k, (stage, traffic, epilogue) in enumerate(kernels):
        hit = intermediate_l2_hit(kernels[k - 1][1], traffic, gpu) if k else 0.0
        estimates.append(estimate_stage(spec, stage, gpu, hit, traffic, epilogue))
    return ChainEstimate(tuple(estimates))


# -- fused: one FCM kernel -------------------------------------------------------------------


def depthwise_index(spec: FcmSpec) -> int:
    return next(i for i, stage in enumerate(spec.stages) if isinstance(stage, Depthwise))


def clipped_tiles(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int, int]:
    """(channels, rows, columns) of a block's output tile, no larger than the output."""
    out = spec.output
    return min(tiles.channel_tile, out.c), min(tiles.tile_h, out.h), min(tiles.tile_w, out.w)


def fcm_grid_shape(spec: FcmSpec, tiles: FcmTiles) -> tuple[int, int, int, int]:
    """(images, channel blocks, row tiles, column tiles) of the FCM grid; partial tiles at the edges."""
    out = spec.output
    channels, rows, cols = clipped_tiles(spec, tiles)
    return out.n, ceil_div(out.c, channels), ceil_div(out.h, rows), ceil_div(out.w, cols)


def fcm_blocks(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Thread blocks of the FCM kernel: the grid of output tiles, each dealt to ``split`` blocks."""
    return prod(fcm_grid_shape(spec, tiles)) * tiles.split


def input_passes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """How many blocks read each input patch: one per channel block, and with a split, one per
    slice where the first stage is a PW (every slice needs every input channel); a DW-first
    slice reads only its own channels."""
    channel_blocks = fcm_grid_shape(spec, tiles)[1]
    return channel_blocks * (tiles.split if isinstance(spec.stages[0], Pointwise) else 1)


def sums_slices(spec: FcmSpec, tiles: FcmTiles) -> bool:
    """Whether a split's blocks sum slices into a workspace that a second kernel adds up: every
    split but that of the PW->DW kernel over whole images, whose blocks share the channels out."""
    return tiles.split > 1 and not (tiles.image and spec.kind == "pw_dw")


def workspace_bytes(spec: FcmSpec, tiles: FcmTiles, sector: int) -> int:
    """The float32 partial sums a split writes (and its second kernel reads): one output per slice."""
    if not sums_slices(spec, tiles):
        return 0
    return contiguous_bytes(tiles.split * spec.output.numel * DTYPE_BYTES["float32"], sector)


def halo_spans(
    out_extent: int, tile: int, stage: Depthwise, pad: int, in_extent: int
) -> list[tuple[int, int]]:
    """Input index range ``[start, stop)`` that each output tile along one axis reads: the tile
    plus the depthwise halo, clipped to the image (padding is not read)."""
    spans = []
    for first in range(0, out_extent, tile):
        last = min(out_extent, first + tile) - 1
        start = first * stage.stride - pad
        stop = last * stage.stride - pad + stage.kernel
        spans.append((max(0, start), min(in_extent, stop)))
    return spans


def tiled_plane_bytes(
    spans_h: list[tuple[int, int]], spans_w: list[tuple[int, int]], width: int, elem_bytes: int, sector: int
) -> float:
    """Bytes requested to read every tile's rectangle of one channel plane of ``width`` columns:
    rows times the sectors each row segment touches (:func:`row_segment_sectors`)."""
    rows = sum(stop - start for start, stop in spans_h)
    row_sectors = sum(row_segment_sectors(a, b - a, width, elem_bytes, sector) for a, b in spans_w)
    return rows * row_sectors * sector


def sliced_stages(spec: FcmSpec) -> list[bool]:
    """Which stages a block computes only for its own channel slice: the last stage, and any stage
    before it whose channels pass unchanged (depthwise) to the block's outputs."""
    sliced = [False] * len(spec.stages)
    for i in reversed(range(len(spec.stages))):
        sliced[i] = True
        if not isinstance(spec.stages[i], Depthwise):
            break
    return sliced


def fcm_block_weight_bytes(spec: FcmSpec, tiles: FcmTiles, sector: int) -> int:
    """Weights (and biases) one block reads: a channel slice of each sliced stage, all of the others."""
    eb, channels = element_bytes(spec), clipped_tiles(spec, tiles)[0]
    return sum(
        contiguous_bytes(stage_weight_elements(spec, i, channels if cut else None) * eb, sector)
        for i, cut in enumerate(sliced_stages(spec))
    )


def fcm_input_sweep(spec: FcmSpec, tiles: FcmTiles, sector: int) -> float:
    """Input bytes one image's blocks of one channel block request: every tile's patch (tile plus
    depthwise halo, clipped to the image) for every input channel."""
    x, out, stage = spec.input, spec.output, spec.stages[depthwise_index(spec)]
    top, left, _, _ = stage.pads
    _, rows, cols = clipped_tiles(spec, tiles)
    spans_h = halo_spans(out.h, rows, stage, top, x.h)
    spans_w = halo_spans(out.w, cols, stage, left, x.w)
    return x.c * tiled_plane_bytes(spans_h, spans_w, x.w, element_bytes(spec), sector)


def fcm_output_plane(spec: FcmSpec, tiles: FcmTiles, sector: int) -> float:
    """Output bytes one image's blocks write (tile rows are row segments of the output)."""
    out = spec.output
    _, rows, cols = clipped_tiles(spec, tiles)
    spans_h = [(a, min(out.h, a + rows)) for a in range(0, out.h, rows)]
    spans_w = [(a, min(out.w, a + cols)) for a in range(0, out.w, cols)]
    return out.c * tiled_plane_bytes(spans_h, spans_w, out.w, element_bytes(spec), sector)


def fcm_requested(spec: FcmSpec, tiles: FcmTiles, sector: int) -> Traffic:
    """Global-memory accesses of the FCM kernel: the input patches once per :func:`input_passes`,
    the weights per output tile (a split's slices share them out), each output (and residual)
    element once. A split kernel writes its workspace instead; :func:`split_sum_estimate` reads
    it, with the residual, and writes the output."""
    images = spec.output.n
    result = images * fcm_output_plane(spec, tiles, sector)
    patches = images * input_passes(spec, tiles) * fcm_input_sweep(spec, tiles, sector)
    weights = prod(fcm_grid_shape(spec, tiles)) * fcm_block_weight_bytes(spec, tiles, sector)
    if sums_slices(spec, tiles):
        workspace = workspace_bytes(spec, tiles, sector)
        return Traffic(input=patches, weights=weights, intermediate_write=workspace)
    return Traffic(input=patches + (result if spec.residual else 0), weights=weights, output=result)


def fcm_flops(spec: FcmSpec, tiles: FcmTiles) -> float:
    """FLOPs the FCM grid issues: every block computes its whole tile (edge tiles included, as
    predicated-off work), stages before the depthwise one on the halo patch, for all channels
    except the block's channel slice of :func:`sliced_stages`."""
    channels, rows, cols = clipped_tiles(spec, tiles)
    dw = depthwise_index(spec)
    patch_rows, patch_cols = depthwise_patch(spec, dw, tiles)
    if tiles.image:  # the image itself: its border is the DW's padding
        patch_rows, patch_cols = spec.shapes[dw].h, spec.shapes[dw].w
    per_block = 0
    for i, cut in enumerate(sliced_stages(spec)):
        pixels = patch_rows * patch_cols if i < dw else rows * cols
        stage_channels = channels if cut else spec.shapes[i + 1].c
        per_block += 2 * pixels * stage_channels * stage_macs_per_output(spec, i)
    return float(per_block * prod(fcm_grid_shape(spec, tiles)))  # a split shares each tile's work out


def fcm_input_l2_hit(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> float:
    """Share of the input re-reads (one per further channel block) that L2 serves.

    Blocks run channel-block-major (image, channel block, tile row, tile column), so a patch is
    re-read one sweep after it was read: in between pass one image's input, the output slice of
    one channel block, and the weights. That sum is the reuse distance (1.0: nothing re-read).
    """
    images, channel_blocks, _, _ = fcm_grid_shape(spec, tiles)
    if channel_blocks == 1:
        return 1.0
    eb, sector = element_bytes(spec), gpu.sector_bytes
    x_bytes = contiguous_bytes(spec.input.numel * eb, sector)
    out_bytes = contiguous_bytes(spec.output.numel * eb, sector)
    share = clipped_tiles(spec, tiles)[0] / spec.output.c
    reuse = (x_bytes + out_bytes * share) / images + weights_bytes(spec, sector)
    return l2_hit_fraction(reuse, l2_capacity(gpu))


def fcm_weight_l2_hit(
    spec: FcmSpec, tiles: FcmTiles, requested: Traffic, wave_blocks: int, gpu: GpuSpec
) -> float:
    """Share of the per-block weight re-reads that L2 serves.

    The ``wave_blocks`` blocks in flight span ``ceil(wave / tiles per image) + 1`` channel blocks
    (channel-block-major order), so that many weight slices are in use. A slice is re-read each
    time a block that needs it starts, and between two such starts each slice in use sees about one
    block's streamed bytes (input patch and output) pass. Reuse distance: the weights in use plus
    one block's streamed bytes per slice in use.
    """
    eb, sector = element_bytes(spec), gpu.sector_bytes
    images, channel_blocks, row_tiles, col_tiles = fcm_grid_shape(spec, tiles)
    slices = min(channel_blocks, ceil_div(wave_blocks, row_tiles * col_tiles) + 1)
    channels = clipped_tiles(spec, tiles)[0]
    in_use = sum(
        slices * contiguous_bytes(stage_weight_elements(spec, i, channels) * eb, sector)
        if cut
        else contiguous_bytes(stage_weight_elements(spec, i) * eb, sector)
        for i, cut in enumerate(sliced_stages(spec))
    )
    streamed = (requested.input + requested.output) / (images * channel_blocks * row_tiles * col_tiles)
    return l2_hit_fraction(in_use + slices * streamed, l2_capacity(gpu))


def fcm_dram(
    spec: FcmSpec, tiles: FcmTiles, requested: Traffic, wave_blocks: int, gpu: GpuSpec
) -> tuple[Traffic, float]:
    """DRAM traffic of the FCM kernel, and the share of input re-reads that L2 serves.

    The input is fetched once (what the tiles touch), and again per further channel block for
    the share :func:`fcm_input_l2_hit` misses (a split's slices of one tile run back to back: their
    re-reads hit). The weights are fetched once, and the per-block re-reads again for the share
    :func:`fcm_weight_l2_hit` misses. Output and residual move once; a split's workspace, for the
    share L2 cannot hold (:func:`workspace_l2_hit`).
    """
    eb, sector = element_bytes(spec), gpu.sector_bytes
    images, channel_blocks, _, _ = fcm_grid_shape(spec, tiles)
    x_bytes = contiguous_bytes(spec.input.numel * eb, sector)
    out_bytes = contiguous_bytes(spec.output.numel * eb, sector)
    weights = weights_bytes(spec, sector)
    first = min(x_bytes, images * fcm_input_sweep(spec, tiles, sector))
    input_hit = fcm_input_l2_hit(spec, tiles, gpu)
    weight_hit = fcm_weight_l2_hit(spec, tiles, requested, wave_blocks, gpu)
    inputs = first * (1 + (channel_blocks - 1) * (1 - input_hit))
    weights = weights + max(0.0, requested.weights - weights) * (1 - weight_hit)
    if sums_slices(spec, tiles):
        spill = requested.intermediate_write * (1 - workspace_l2_hit(spec, tiles, gpu))
        return Traffic(input=inputs, weights=weights, intermediate_write=spill), input_hit
    residual = out_bytes if spec.residual else 0
    return Traffic(input=inputs + residual, weights=weights, output=out_bytes), input_hit


def workspace_l2_hit(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> float:
    """Share of a split's workspace that stays in L2 from its write to its read.

    TVM's workspace pool hands every call the same scratch memory, so the lines stay dirty in L2
    and are overwritten in place: only the share that L2 cannot hold is written back to DRAM.
    """
    return l2_hit_fraction(workspace_bytes(spec, tiles, gpu.sector_bytes), l2_capacity(gpu))


def split_sum_estimate(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> KernelEstimate:
    """The second kernel of a split: reads the workspace (and the residual), writes the output."""
    sector, threads = gpu.sector_bytes, tiles.threads
    workspace = workspace_bytes(spec, tiles, sector)
    out_bytes = contiguous_bytes(spec.output.numel * element_bytes(spec), sector)
    requested = Traffic(
        input=out_bytes if spec.residual else 0, intermediate_read=workspace, output=out_bytes
    )
    hit = workspace_l2_hit(spec, tiles, gpu)
    dram = replace(requested, intermediate_read=workspace * (1 - hit))
    grid = (ceil_div(spec.output.numel, threads), threads, occupancy(threads, 0, REGISTERS_BASE, gpu))
    flops = float(tiles.split * spec.output.numel)
    return kernel_estimate(f"sum of {tiles.split} slices", requested, dram, flops, grid, hit, gpu)


def fcm_name(spec: FcmSpec, tiles: FcmTiles) -> str:
    return f"fcm {spec.kind} {tiles.label}"


def estimate_fused(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> ChainEstimate:
    """The chain as one FCM kernel with ``tiles``; :class:`FcmError` if they do not fit ``gpu``."""
    smem = shared_bytes(spec, tiles, gpu)
    occ = occupancy(tiles.threads, smem, registers_per_thread(accumulators(spec, tiles)), gpu)
    blocks = fcm_blocks(spec, tiles)
    requested = fcm_requested(spec, tiles, gpu.sector_bytes)
    dram, input_hit = fcm_dram(spec, tiles, requested, min(blocks, occ.blocks_per_sm * gpu.sm_count), gpu)
    grid = (blocks, tiles.threads, occ)
    kernel = kernel_estimate(
        fcm_name(spec, tiles), requested, dram, fcm_flops(spec, tiles), grid, input_hit, gpu
    )
    kernels = (replace(kernel, slowdown=fcm_time_factor(spec.kind)),)
    if sums_slices(spec, tiles):
        kernels += (split_sum_estimate(spec, tiles, gpu),)
    return ChainEstimate(kernels, tiles)


@cache
def _calibration() -> dict:
    return json.loads(resources.files("fcm_tvm").joinpath("data/calibration.json").read_text())


def fcm_time_factor(kind: str) -> float:
    """How much slower the FCM kernels of ``kind`` measured than the roofline model predicts."""
    return float(_calibration()["fcm_time_factor"].get(kind, 1.0))


def fused_time_bound(spec: FcmSpec, tiles: FcmTiles, gpu: GpuSpec) -> float:
    """A lower bound of ``estimate_fused(spec, tiles, gpu).time_s`` that needs no shared-memory plan.

    Shared memory only lowers blocks per SM, which enters the estimate twice: the parallel
    efficiency (bounded by its best value over every blocks-per-SM that threads and registers
    allow) and the wave whose traffic competes with the weights in L2 (smallest at one block per
    SM). The planner visits tiles in the order of this bound and stops once it exceeds the best
    estimate found, so it builds shared-memory plans for a few candidates only.
    """
    occ = occupancy(tiles.threads, 0, registers_per_thread(accumulators(spec, tiles)), gpu)
    blocks = fcm_blocks(spec, tiles)
    efficiency = max(
        parallel_efficiency(blocks, tiles.threads, b, gpu) for b in range(1, occ.blocks_per_sm + 1)
    )
    requested = fcm_requested(spec, tiles, gpu.sector_bytes)
    dram, _ = fcm_dram(spec, tiles, requested, min(blocks, gpu.sm_count), gpu)
    seconds = (
        dram.total / (gpu.dram_bandwidth_gbs * 1e9),
        requested.total / l2_bandwidth(gpu),
        fcm_flops(spec, tiles) / (gpu.fp32_tflops * 1e12),
    )
    launches = 2 if sums_slices(spec, tiles) else 1
    return max(seconds) / efficiency * fcm_time_factor(spec.kind) + launches * LAUNCH_OVERHEAD_S
