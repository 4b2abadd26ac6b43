"""What the tensor-core kernels share: WMMA's fragment shape, shared-memory scopes, and the
schedule steps that deal copies out to warps and cut 2-D copies into fragments."""

from __future__ import annotations

from math import gcd

import tvm
from tvm.s_tir import Schedule
from tvm.script import tirx as T

from .layout import STATIC_SMEM, WARP, ceil_div
from .spec import FcmSpec, FcmTiles

FRAGMENT = 16  # WMMA m = n = k
DTYPE = "float16"
HALF_BYTES = 2
# The float16 tiles live in dynamic shared memory, the float32 accumulators in static: TVM's
# storage rewrite reuses a dead buffer of the same scope whatever its dtype, and lowering then
# failed on the accumulators placed in a float16 buffer ("tvm_access_ptr element type must match").
SHARED = "shared.dyn"
ACCUMULATORS = "shared"
CHUNKS = (32, FRAGMENT)  # input channels per shared-memory step, the largest that divides them


def whole_fragments(count: int) -> int:
    """``count`` padded up to whole fragments (40 channels -> 48, 49 pixels -> 64)."""
    return ceil_div(count, FRAGMENT) * FRAGMENT


def largest_chunk(channels: int) -> int:
    """Input channels per shared-memory step: 32, or 16 where 32 does not divide them (144)."""
    return next(step for step in CHUNKS if channels % step == 0)


def tile_problems(spec: FcmSpec, tiles: FcmTiles) -> list[str]:
    """What every tensor-core kernel asks of its tiles (empty if they have it): float16, a
    channel tile of whole fragments dividing the output channels, a spatial tile dividing the
    output, whole warps, and no knob of the CUDA-core kernel but ``split`` (and PW->DW's
    ``patch_reuse``)."""
    found = []
    if spec.dtype != DTYPE:
        found.append(f"tensor cores need {DTYPE}, not {spec.dtype}")
    out = spec.output
    if tiles.channel_tile % FRAGMENT or out.c % tiles.channel_tile:
        found.append(f"channel tile {tiles.channel_tile} must be a multiple of {FRAGMENT} dividing {out.c}")
    if out.h % tiles.tile_h or out.w % tiles.tile_w:
        found.append(f"tile {tiles.tile_h}x{tiles.tile_w} must divide the output {out.h}x{out.w}")
    if tiles.threads % WARP or not 0 < tiles.threads <= 1024:
        found.append(f"{tiles.threads} threads are not whole warps (at most 1024)")
    other = FcmTiles(
        tiles.channel_tile,
        tiles.tile_h,
        tiles.tile_w,
        tiles.threads,
        tiles.split,
        patch_reuse=tiles.patch_reuse if spec.kind == "pw_dw" else 1,
        tensor_cores=1,
    )
    if tiles != other:
        found.append("tensor cores take no other knob (rows, lanes, columns; patch reuse but for PW->DW)")
    return found


def shared_memory_problems(smem: int, accumulators: int, max_smem: int) -> list[str]:
    """Why a block with ``smem`` bytes of shared memory, ``accumulators`` of them the static
    float32 accumulators and the rest dynamic, cannot launch (empty if it can).

    A kernel gets 48 KiB of shared memory in all unless its dynamic limit is raised, and TVM's
    CUDA runtime raises it (to the dynamic size) only for 48 KiB of dynamic shared memory or more:
    a block of more than 48 KiB launches only when its dynamic part alone is that large."""
    dynamic = smem - accumulators
    if accumulators > STATIC_SMEM:
        return [f"{accumulators} bytes of accumulators > {STATIC_SMEM} of static shared memory"]
    if smem > max_smem:
        return [f"{smem} bytes of shared memory > {max_smem}"]
    if smem > STATIC_SMEM and dynamic < STATIC_SMEM:
        return [
            f"{smem} bytes of shared memory > {STATIC_SMEM} with {dynamic} of them dynamic: "
            f"TVM raises a kernel's limit only for {STATIC_SMEM} dynamic bytes or more"
        ]
    return []


def split_warps(warps: int, channel_frags: int) -> tuple[int, int]:
    """(channel, pixel) warps: as many along channels as divide both, the rest along pixels."""
    along_channels = gcd(warps, channel_frags)
    return along_channels, warps // along_channels


def warp_grid(warps: int, fragment_grid: tuple[int, int]) -> tuple[int, int] | None:
    """:func:`split_warps` over a (channel, pixel) grid of fragments; None when the pixel warps
    do not tile the pixel fragments."""
    channel_frags, pixel_frags = fragment_grid
    along_channels, along_pixels = split_warps(warps, channel_frags)
    return (along_channels, along_pixels) if pixel_frags % along_pixels == 0 else None


def spread(sch: Schedule, block, anchor, threads: tuple[int, int]):
    """Deal a block's loops under ``anchor`` out to all threads (warps, lanes), each thread's
    steps unrolled so that their global loads are in flight together (a rolled loop waited for
    each load in turn: 190 us for a 7x7 layer on 5 blocks); the lane loop."""
    loops = sch.get_loops(block)
    at = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(anchor)))
    steps, warp, lane = sch.split(sch.fuse(*loops[at + 1 :]), [None, *threads])
    sch.bind(warp, "threadIdx.y")
    sch.bind(lane, "threadIdx.x")
    sch.unroll(steps)
    return lane


def spread_over_grid(sch: Schedule, block, threads: int) -> None:
    """A kernel of its own: a thread per element."""
    blocks, lanes = sch.split(sch.fuse(*sch.get_loops(block)), [None, threads])
    sch.bind(blocks, "blockIdx.x")
    sch.bind(lanes, "threadIdx.x")


def fragments(sch: Schedule, block):
    """Split a copy's two loops into 16x16 fragments; the loop a WMMA load or store replaces."""
    rows, cols = sch.get_loops(block)[-2:]
    row_frag, row_in = sch.split(rows, [None, FRAGMENT])
    col_frag, col_in = sch.split(cols, [None, FRAGMENT])
    sch.reorder(row_frag, col_frag, row_in, col_in)
    return row_in


def tensorize_gemm(sch: Schedule, gemm, step, a_frag, b_frag, store, to_global: bool = False) -> None:
    """Put a scheduled GEMM on WMMA: its fragment loads, the accumulators' zeroing at ``step``,
    the multiply-adds, and the accumulators' store (to shared memory, or ``to_global``)."""
    import tvm.s_tir.tensor_intrin.cuda as wmma  # registers the WMMA intrinsics

    sch.tensorize(fragments(sch, a_frag), wmma.WMMA_LOAD_16x16x16_F16_A_DYN_INTRIN)
    sch.tensorize(fragments(sch, b_frag), wmma.WMMA_LOAD_16x16x16_F16_B_DYN_INTRIN)
    init = sch.decompose_reduction(gemm, step)
    sch.tensorize(sch.get_loops(init)[-2], wmma.WMMA_FILL_16x16x16_F32_INTRIN)
    sch.tensorize(sch.get_loops(gemm)[-3], wmma.WMMA_SYNC_16x16x16_f16f16f32_INTRIN)
    stored = (
        wmma.WMMA_STORE_16x16x16_F32_GLOBAL_INTRIN
        if to_global
        else wmma.WMMA_STORE_16x16x16_F32_SHARED_INTRIN
    )
    sch.tensorize(fragments(sch, store), stored)


def stored_output(activation, residual: bool, dtype: str = DTYPE):
    """The last stage's epilogue in TVMScript: ``(acc, bias, res) -> dtype`` of the activated
    float32 sum, plus the residual where the chain has one."""

    def value(acc, bias, res):
        out = activation(acc + T.Cast("float32", bias))
        return T.Cast(dtype, out + T.Cast("float32", res) if residual else out)

    return value


def without_param(func: tvm.tirx.PrimFunc, index: int) -> tvm.tirx.PrimFunc:
    """``func`` without its ``index``-th parameter (one its body never reads)."""
    params = [param for i, param in enumerate(func.params) if i != index]
    return tvm.tirx.PrimFunc(params, func.body, func.ret_type, func.attrs)
