"""Check the FCM kernels on a GPU: numbers against float64 torch, times against cuDNN.

Two steps, because the GPU host has only the TVM runtime:

1. Here (TVM compiler, nvcc not needed)::

       .venv/bin/python tests/gpu/check_fcm_kernels.py export /tmp/fcm_kernels

   compiles every variant for sm_90 and writes ``<name>.so`` per kernel plus ``manifest.json``
   (the specs as plain data, so that step 2 needs neither TE nor fcm_tvm.schedules).

2. On the GPU host (TVM runtime with CUDA, torch)::

       python tests/gpu/check_fcm_kernels.py run /tmp/fcm_kernels [--repeat 50]

   loads each library, poisons the output with NaN, runs on fresh random inputs, compares every
   element with a float64 torch reference (``conv2d`` with ``groups``), times the kernel with
   ``time_evaluator`` and the unfused torch/cuDNN sequence in the same dtype with CUDA events,
   and prints a table last. Exit status 1 if any kernel is wrong.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import json
import multiprocessing
import sys
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

TOLERANCE = {"float32": 1e-5, "float16": 2e-3}
TARGET = {"kind": "cuda", "arch": "sm_90"}

# -- step 1: export (needs the TVM compiler and fcm_tvm) --------------------------------------


def variants() -> list[tuple[str, object, object]]:
    """(name, spec, tiles or None): MobileNetV2/V3-like layers, then edge cases of the kernels."""
    from fcm_tvm.schedules import Depthwise as D
    from fcm_tvm.schedules import FcmSpec, FcmTiles
    from fcm_tvm.schedules import Pointwise as P

    layers = {
        "mbv2_b0_dw_pw": (32, 112, 112, (D(3, 1, None, "relu6"), P(16)), False),
        "mbv2_b1_expand_dw": (16, 112, 112, (P(96, "relu6"), D(3, 2, (0, 0, 1, 1), "relu6")), False),
        "mbv2_b2_ir": (24, 56, 56, (P(144, "relu6"), D(3, 1, None, "relu6"), P(24)), True),
        "mbv2_b4_ir": (32, 28, 28, (P(192, "relu6"), D(3, 1, None, "relu6"), P(32)), True),
        "mbv2_b11_ir": (96, 14, 14, (P(576, "relu6"), D(3, 1, None, "relu6"), P(96)), True),
        "mbv2_b15_ir": (160, 7, 7, (P(960, "relu6"), D(3, 1, None, "relu6"), P(160)), True),
        "mbv2_b16_dw_pw": (960, 7, 7, (D(3, 1, None, "relu6"), P(320)), False),
        "mbv3_k5_hswish": (96, 14, 14, (P(240, "hardswish"), D(5, 1, None, "hardswish"), P(40)), False),
        "mbv3_k5_s2_dw_pw": (72, 56, 56, (D(5, 2, None, "relu"), P(40)), False),
    }
    result = []
    for dtype in ("float32", "float16"):
        for batch in (1, 8):
            for name, (c, h, w, stages, residual) in layers.items():
                spec = FcmSpec(batch, c, h, w, stages, residual, dtype)
                result.append((f"{name}_n{batch}_{dtype}", spec, None))
    edges = {
        "edge_k7_s2_asym_silu": FcmSpec(3, 20, 13, 13, (D(7, 2, (1, 3, 2, 0), "silu"), P(24, "sigmoid"))),
        "edge_pw_dw_k5_s2_odd": FcmSpec(2, 12, 9, 11, (P(40, "hardswish"), D(5, 2, (2, 1, 1, 2), "relu"))),
        "edge_ir_k7_tail": FcmSpec(
            1, 10, 13, 13, (P(30, "silu"), D(7, 1, None, "sigmoid"), P(10, "relu")), True
        ),
        "edge_fp16_ir_batch64": FcmSpec(
            64, 16, 14, 14, (P(64, "relu6"), D(3, 2, (0, 0, 1, 1), "relu6"), P(24)), dtype="float16"
        ),
    }
    result += [(name, spec, None) for name, spec in edges.items()]
    tiles = {
        "tiles_dw_pw_16x4x8": ("mbv2_b0_dw_pw_n1_float32", FcmTiles(16, 4, 8, 128)),
        "tiles_ir_8x8x8": ("mbv2_b2_ir_n1_float32", FcmTiles(8, 8, 8, 128)),
        "tiles_expand_dyn_smem": ("mbv2_b1_expand_dw_n1_float32", FcmTiles(64, 8, 8, 256)),
    }
    by_name = {name: spec for name, spec, _ in result}
    result += [(name, by_name[base], t) for name, (base, t) in tiles.items()]
    return result


def spec_to_dict(spec) -> dict:
    from fcm_tvm.schedules import Depthwise

    stages = []
    for stage in spec.stages:
        if isinstance(stage, Depthwise):
            stages.append(
                {"type": "dw", "kernel": stage.kernel, "stride": stage.stride, "pads": list(stage.pads),
                 "activation": stage.activation}
            )  # fmt: skip
        else:
            stages.append({"type": "pw", "out_channels": stage.out_channels, "activation": stage.activation})
    return {
        "input": list(spec.input.as_tuple()),
        "output": list(spec.output.as_tuple()),
        "stages": stages,
        "residual": spec.residual,
        "dtype": spec.dtype,
        "param_shapes": [list(s) for s in spec.param_shapes()],
    }


def export(folder: Path) -> None:
    import tvm

    from fcm_tvm.schedules import default_tiles, fcm_primfunc
    from fcm_tvm.schedules.cuda import max_shared_memory

    target = tvm.target.Target(TARGET)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    for name, spec, tiles in variants():
        func = fcm_primfunc(spec, tiles, target)
        symbol = str(func.attrs["global_symbol"])
        lib = tvm.compile(tvm.IRModule({symbol: func}), target=target)
        lib.export_library(str(folder / f"{name}.so"))
        used = tiles or default_tiles(spec, max_shared_memory(target))
        manifest.append(
            {
                "name": name,
                "file": f"{name}.so",
                "symbol": symbol,
                "tiles": asdict(used),
                **spec_to_dict(spec),
            }
        )
        print(f"exported {name} ({symbol}, tiles {used})")
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(manifest)} kernels in {folder}")


def sweep_export(folder: Path, per_layer: int = 12) -> None:
    """Export tile choices of the MobileNet-like layers, one library per layer, for timing them.

    Half the choices are FusePlanner's best predicted, half spread over the rest of its ranking,
    so the measurements show both whether the best tiles win and how far the prediction is off.
    """
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.planner import estimate_fused
    from fcm_tvm.planner.tiles import candidate_tiles
    from fcm_tvm.schedules import default_tiles

    gpu = get_gpu("h100")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = []
    layers = [(n, s) for n, s, tiles in variants() if tiles is None and n.startswith("mb") and "_n1_" in n]
    for name, spec in layers:
        ranked = sorted(candidate_tiles(spec, gpu), key=lambda t: estimate_fused(spec, t, gpu).time_s)
        best, rest = ranked[: per_layer // 2], ranked[per_layer // 2 :]
        step = max(1, len(rest) // (per_layer - len(best)))
        spread = rest[::step][: per_layer - len(best)]
        chosen = list(dict.fromkeys([*best, *spread, default_tiles(spec, gpu.smem_per_block)]))
        entries = _export_layer((name, spec, chosen, folder))
        for entry, tiles in zip(entries, chosen):
            entry["predicted_us"] = estimate_fused(spec, tiles, gpu).time_s * 1e6
        manifest += entries
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def split_choices(spec, gpu) -> list:
    """The default tile and the cost model's best, each unsplit and split 2x, 4x, ... up to one
    reduction chunk per block: what the split buys on every chain, and whether the model sees it."""
    from dataclasses import replace

    from fcm_tvm.planner import plan_chain
    from fcm_tvm.planner.tiles import SPLITS, fit_problems, tile_grid
    from fcm_tvm.schedules import default_tiles

    bases = [default_tiles(spec, gpu.smem_per_block)]
    modelled = plan_chain(spec, gpu, candidates=tile_grid(spec, gpu)).fused  # not the measured table
    if modelled is not None:
        bases.append(replace(modelled.tiles, split=1))
    choices = [replace(base, split=split) for base in bases for split in SPLITS]
    return [t for t in dict.fromkeys(choices) if not fit_problems(spec, t, gpu)]


BROAD_THREADS = (128, 196, 256, 392, 512)
BROAD_WAVES = (1, 8)  # a broad candidate's blocks fill the H100's SMs this many times, at least and at most


def broad_choices(spec, gpu, limit: int = 32) -> list:
    """A wider tile search than :func:`split_choices`: every fitting tile of 128-512 threads,
    each with the splits that make its grid fill the GPU one to eight times, ranked by the cost
    model; the ``limit`` best, plus the default tile and the tile measured best so far.

    Why: the sweeps so far tried a dozen tiles per chain, and under CUDA graphs what is left of
    an FCM's cost is its GPU time, which depends on how many warps each SM gets."""
    from dataclasses import replace

    from fcm_tvm.planner import estimate_fused
    from fcm_tvm.planner.cost_model import fcm_blocks
    from fcm_tvm.planner.measured import measured
    from fcm_tvm.planner.tiles import candidate_tiles, fit_problems, splits
    from fcm_tvm.schedules import default_tiles

    low, high = (waves * gpu.sm_count for waves in BROAD_WAVES)
    choices = []
    for base in candidate_tiles(spec, gpu):
        if base.threads not in BROAD_THREADS:
            continue
        for split in splits(spec):
            tiles = replace(base, split=split)
            if low <= fcm_blocks(spec, tiles) <= high and not fit_problems(spec, tiles, gpu):
                choices.append(tiles)
    ranked = sorted(choices, key=lambda tiles: estimate_fused(spec, tiles, gpu).time_s)[:limit]
    known = measured(spec, gpu)
    anchors = [default_tiles(spec, gpu.smem_per_block)] + ([known.tiles] if known else [])
    return list(dict.fromkeys([*anchors, *ranked]))


PATCH_ROWS = (2, 4)
PATCH_ROW_BASES = 2
PATCH_ROW_MIN_CHANNELS = 40  # shallower 1x1 sums are not bound by their weight loads


def patch_row_choices(spec, gpu, measured_rows: dict) -> list:
    """The ``PATCH_ROW_BASES`` fastest tiles measured for ``spec`` (``measured_rows``: key -> rows
    of earlier sweeps), each with 2 and 4 rows per thread in its 1x1 patch, and the fastest
    as it was, timed again beside them. Chains without a 1x1 patch (DW->PW), or whose 1x1 sums
    run over fewer than ``PATCH_ROW_MIN_CHANNELS`` channels, get none."""
    from dataclasses import replace

    from fcm_tvm.planner.tiles import fit_problems
    from fcm_tvm.schedules import FcmTiles

    if spec.kind == "dw_pw" or spec.in_channels < PATCH_ROW_MIN_CHANNELS:
        return []
    rows = sorted(measured_rows.get(spec.key, []), key=lambda row: row["fcm_us"])
    bases = list(dict.fromkeys(FcmTiles(**row["tiles"]) for row in rows))[:PATCH_ROW_BASES]
    choices = bases[:1] + [replace(base, patch_rows=n) for base in bases for n in PATCH_ROWS]
    return [tiles for tiles in dict.fromkeys(choices) if not fit_problems(spec, tiles, gpu)]


OUTPUT_ROWS = (2, 4, 7, 8)


def around_table_tile(spec, gpu, variants) -> list:
    """The tile of the H100's measured table for ``spec`` as it is, and ``variants(tile)`` of
    it, those that fit; none for a chain the table lacks."""
    from fcm_tvm.planner.measured import measured
    from fcm_tvm.planner.tiles import fit_problems

    known = measured(spec, gpu)
    if known is None:
        return []
    choices = [known.tiles, *variants(known.tiles)]
    return [tiles for tiles in dict.fromkeys(choices) if not fit_problems(spec, tiles, gpu)]


def output_row_choices(spec, gpu) -> list:
    """The table's tile (:func:`around_table_tile`) with 2, 4, 7 or 8 output rows per thread
    (those that divide its tile), on its threads and on half of them (the same channel lanes,
    twice the register tile); where the kernel has a 1x1 patch, also 2 and 4 output rows with as
    many patch rows (both register tiles deeper at once)."""
    from dataclasses import replace

    def variants(base):
        choices = [
            replace(base, output_rows=rows, threads=threads)
            for rows in OUTPUT_ROWS
            if base.tile_h % rows == 0
            for threads in (base.threads, base.threads // 2)
        ]
        if spec.kind != "dw_pw":
            deeper = [replace(base, output_rows=rows, patch_rows=rows) for rows in (2, 4)]
            choices += [tiles for tiles in deeper if base.tile_h % tiles.output_rows == 0]
        return choices

    return around_table_tile(spec, gpu, variants)


def vector_load_choices(spec, gpu) -> list:
    """The table's tile (:func:`around_table_tile`) with the weights of the last PW stage, of the
    1x1 patch, or of both loaded 2 or 4 at a time: on its threads and on half of them (twice the
    channels per thread, so that whole vectors fit where they did not), and for the patch also
    with 2 patch rows."""
    from dataclasses import replace

    def variants(base):
        halves = (base.threads, base.threads // 2)
        choices = []
        if spec.kind != "pw_dw":
            choices += [replace(base, weight_lanes=n, threads=t) for n in (4, 2) for t in halves]
        if spec.kind != "dw_pw":
            choices += [replace(base, patch_lanes=n, threads=t) for n in (4, 2) for t in halves]
            choices += [replace(base, patch_lanes=n, patch_rows=2) for n in (4, 2)]
        if spec.kind == "pw_dw_pw":
            choices += [
                replace(base, patch_lanes=n, weight_lanes=n, threads=t) for n in (4, 2) for t in halves
            ]
        return choices

    return around_table_tile(spec, gpu, variants)


def depthwise_col_choices(spec, gpu) -> list:
    """The table's tile (:func:`around_table_tile`) with 2, 4 or 7 depthwise columns per thread
    (those that divide its width), on its threads and on half of them; none for PW->DW."""
    from dataclasses import replace

    if spec.kind == "pw_dw":
        return []
    return around_table_tile(
        spec,
        gpu,
        lambda base: [
            replace(base, depthwise_cols=cols, threads=threads)
            for cols in (2, 4, 7)
            for threads in (base.threads, base.threads // 2)
        ],
    )


def output_col_choices(spec, gpu) -> list:
    """The table's tile (:func:`around_table_tile`) with 2 or 4 output columns per thread (their
    depthwise results loaded in vectors): on its threads and on half of them, and with one output
    row (the columns instead of its rows); none for PW->DW."""
    from dataclasses import replace

    if spec.kind == "pw_dw":
        return []

    def variants(base):
        return [
            replace(base, output_cols=cols, threads=threads, output_rows=rows)
            for cols in (2, 4)
            for threads in (base.threads, base.threads // 2)
            for rows in dict.fromkeys((base.output_rows, 1))
        ]

    return around_table_tile(spec, gpu, variants)


FP16_BROAD = 6  # the cost model's best broad candidates, beside the float32 twin's tiles


def fp32_tile_choices(spec, gpu) -> list:
    """For a float16 chain: its own measured tile timed again, the tiles its float32 twin was
    measured fastest with (on each clock the table has), each also without vector loads, and
    the ``FP16_BROAD`` best broad candidates (:func:`broad_choices`). None in float32.

    Why: the float16 chains were timed with the cost model's tile only, and most lost to stock
    (e.g. MnasNet's 72x56x56 DW->PW, 15.8 against 10.8 us in a graph), while their float32
    twins, swept over hundreds of tiles, win (6.6 us)."""
    from dataclasses import replace

    from fcm_tvm.planner.measured import CLOCKS, measured, measured_on
    from fcm_tvm.planner.tiles import fit_problems

    if spec.dtype != "float16":
        return []
    twin = replace(spec, dtype="float32")
    timed = [known.tiles for clock in CLOCKS if (known := measured_on(twin, gpu, clock))]
    own = measured(spec, gpu)
    scalar = [replace(tiles, weight_lanes=1, patch_lanes=1) for tiles in timed]
    broad = broad_choices(spec, gpu, limit=FP16_BROAD)
    choices = [*([own.tiles] if own else []), *timed, *scalar, *broad]
    return [tiles for tiles in dict.fromkeys(choices) if not fit_problems(spec, tiles, gpu)]


TC_CHANNEL_TILES = (16, 32, 48, 64, 96, 128)
TC_THREADS = (128, 256, 512)
TC_SPLITS = (1, 2, 4, 8)
TC_PER_CHAIN = 16
TC_KINDS = ("dw_pw", "pw_dw")


def tensor_core_choices(spec, gpu) -> list:
    """For a float16 DW->PW or PW->DW chain: tensor-core tiles (the whole output, or 7x7 / 8x8
    tiles of it, over 16-128 channels, 4-16 warps, DW->PW split 1-8 ways), those wasting the
    fewest padded (and, for PW->DW, halo) pixels first, and beside them the chain's CUDA-core
    tile of the measured table (or the default tile) to compare with."""
    from fcm_tvm.planner.measured import measured
    from fcm_tvm.schedules import FcmTiles, default_tiles
    from fcm_tvm.schedules.tensor_cores import padding_waste, tensor_core_problems

    if spec.kind not in TC_KINDS or spec.dtype != "float16":
        return []
    out = spec.output
    sides = {(out.h, out.w)} | {(s, s) for s in (7, 8) if out.h % s == 0 and out.w % s == 0}
    candidates = [
        FcmTiles(c, h, w, t, split, tensor_cores=1)
        for c in TC_CHANNEL_TILES
        for h, w in sides
        for t in TC_THREADS
        for split in TC_SPLITS
    ]
    fitting = [t for t in candidates if not tensor_core_problems(spec, t, gpu.smem_per_block)]
    fitting.sort(key=lambda t: (round(padding_waste(spec, t), 2), -t.channel_tile, -t.threads))
    known = measured(spec, gpu)  # on a table that may already hold a TC tile (the H200's)
    on_cuda_cores = known is not None and not known.tiles.tensor_cores
    cuda_cores = known.tiles if on_cuda_cores else default_tiles(spec, gpu.smem_per_block)
    return [cuda_cores, *fitting[:TC_PER_CHAIN]] if fitting else []


def table_tensor_core_choices(spec, gpu) -> list:
    """For a float16 DW->PW or PW->DW chain, one tensor-core tile: the H200 table's where it holds
    one, else the first of :func:`tensor_core_choices`. Exported from two versions of a kernel, it
    times a change of the kernel on the tiles the builds use."""
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.planner.measured import measured

    known = measured(spec, get_gpu("h200"))
    if known is not None and known.tiles.tensor_cores:
        return [known.tiles]
    return tensor_core_choices(spec, gpu)[1:2]


PATCH_REUSE = (1, 2, 3, 4, 6, 8)


def table_tile_variants(spec, gpu, variants) -> list:
    """For a float16 PW->DW chain, ``variants(tile)`` of :func:`table_tensor_core_choices`'
    tile: those that fit, each once, in order."""
    from fcm_tvm.schedules.tensor_cores import tensor_core_problems

    if spec.kind != "pw_dw":
        return []
    chosen = [tiles for base in table_tensor_core_choices(spec, gpu) for tiles in variants(base)]
    return [t for t in dict.fromkeys(chosen) if not tensor_core_problems(spec, t, gpu.smem_per_block)]


def patch_reuse_choices(spec, gpu) -> list:
    """For a float16 PW->DW chain, the table's tensor-core tile with each of :data:`PATCH_REUSE`
    channel tiles a block (those that divide the channels and fit)."""
    from dataclasses import replace

    return table_tile_variants(spec, gpu, lambda base: [replace(base, patch_reuse=r) for r in PATCH_REUSE])


TC_WARP_THREADS = (64, 128, 256, 512)


def tc_warp_choices(spec, gpu) -> list:
    """For a float16 PW->DW chain, the table's tensor-core tile with 2-16 warps, over its channel
    tile and twice that (fewer warps each hold more fragments of the GEMM, and load fewer of them
    again from shared memory); those that fit."""
    from dataclasses import replace

    def variants(base):
        channels = (base.channel_tile, 2 * base.channel_tile)
        return [replace(base, channel_tile=c, threads=t) for c in channels for t in TC_WARP_THREADS]

    return table_tile_variants(spec, gpu, variants)


def with_enough_blocks(spec, gpu, tiles: list) -> list:
    """The ``tiles`` of four blocks an SM or more, or at batch 1 (fewer blocks in all) half as many
    as the most any of them has."""
    out = spec.output

    def blocks(t) -> int:
        return out.n * (out.h // t.tile_h) * (out.w // t.tile_w) * (out.c // (t.channel_tile * t.patch_reuse))

    enough = min(4 * gpu.sm_count, max(map(blocks, tiles), default=0) // 2)
    return [t for t in tiles if blocks(t) >= enough]


def beside_table_tile(spec, chosen: list) -> list:
    """``chosen`` after the tile the H200 table holds for ``spec`` (which H100 builds plan with),
    so that a sweep times it in the same run; nothing if nothing was chosen."""
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.planner.measured import measured

    known = measured(spec, get_gpu("h200"))
    return ([known.tiles] if known is not None and chosen else []) + chosen


RW_CHANNEL_TILES = (8, 16, 32)
RW_TILE_ROWS = (2, 4, 7, 8, 14)
RW_REUSE = (1, 2, 3, 4, 6, 8, 12)
RW_PATCH_ROWS = (2, 4)
RW_PER_CHAIN = 16
RW_SM_SMEM = 228 * 1024  # an H100 SM's shared memory
RW_MIN_WARPS = 8


def register_pw_choices(spec, gpu) -> list:
    """For a PW->DW chain of at most 40 input channels, tiles of the kernel with its PW weights in
    registers: 8-32 channels, tiles of 2-14 rows over the whole output width (or half of it),
    1-12 channel tiles a block, 2 or 4 pixels a lane; those of 8 warps an SM or more and four
    blocks an SM or more (at batch 1, half the most blocks a tile has), wasting the fewest halo and
    padded pixels at the highest occupancy first; before them the tile of the H200 table (which
    H100 builds plan with), timed in the same run."""
    from fcm_tvm.schedules import FcmTiles
    from fcm_tvm.schedules.cuda_pw_dw_regs import (
        MAX_INPUT_CHANNELS,
        block_threads,
        padding_waste,
        register_pw_problems,
        shared_bytes,
    )

    if spec.kind != "pw_dw" or spec.in_channels > MAX_INPUT_CHANNELS:
        return []
    out = spec.output
    widths = {out.w} | ({out.w // 2} if out.w % 2 == 0 and out.w >= 28 else set())
    candidates = [
        FcmTiles(c, h, w, block_threads(c), patch_rows=rows, patch_reuse=reuse, register_pw=1)
        for c in RW_CHANNEL_TILES
        for h in RW_TILE_ROWS
        for w in widths
        for reuse in RW_REUSE
        for rows in RW_PATCH_ROWS
    ]

    def warps_per_sm(t) -> int:
        return min(RW_SM_SMEM // shared_bytes(spec, t), 32) * t.threads // 32

    fitting = [
        t
        for t in candidates
        if not register_pw_problems(spec, t, gpu.smem_per_block) and warps_per_sm(t) >= RW_MIN_WARPS
    ]
    fitting = with_enough_blocks(spec, gpu, fitting)
    # halo and padding against occupancy (fewer than 16 warps an SM hide little latency)
    fitting.sort(key=lambda t: (padding_waste(spec, t) * (1 + 8 / min(warps_per_sm(t), 16)), -t.patch_reuse))
    chosen, per_tile = [], {}
    for t in fitting:  # at most a third of the choices of one channel tile
        if per_tile.get(t.channel_tile, 0) < RW_PER_CHAIN // 3 + 1 and len(chosen) < RW_PER_CHAIN:
            chosen.append(t)
            per_tile[t.channel_tile] = per_tile.get(t.channel_tile, 0) + 1
    return beside_table_tile(spec, chosen)


ST_CHANNELS = (2, 4, 8)  # channels a thread
ST_WARPS = (1, 2)
ST_TILE_ROWS = (1, 2, 3, 4)
ST_TALL_ROWS = (7, 14)  # where no tile reaches ST_MIN_REUSE (the first sweep's best at 40 channels)
ST_PER_CHAIN = 18
ST_MAX_SUMS = 32  # the DW's sums a thread
ST_MIN_LANE_USE = 0.75  # of a segment's lanes writing, or the most any tile reaches ...
ST_LEAST_LANE_USE = 0.4  # ... but this many at least
ST_MIN_REUSE = 8  # multiply-adds per loaded input vector: channels x columns a lane


def stream_choices(spec, gpu) -> list:
    """For a PW->DW chain (DW->PW: :func:`dw_pw_stream_choices`), tiles of the kernel streamed
    through registers: 2-8 channels a thread, 1-2 warps a block, strips of 2-4 rows, 1-4 output
    columns a lane over the widest tile its lanes cover (and half of it), a warp over one row or
    two (narrow outputs), three quarters of a segment's lanes writing or more, each input load
    feeding 8 multiply-adds or more (else as many as any tile does, in strips of 7 or 14 rows
    too), four blocks an SM or more, those that waste the fewest lanes and recomputed rows first;
    before them the tile of the H200 table, timed in the same run. (The first sweep,
    docs/results/sweep_pw_dw_stream_b32_fp16_h100.json: strips of 7-14 rows and one column a
    lane ran 1.5-6x slower than 4 rows of 2.)"""
    from fcm_tvm.schedules.stream import accumulators_per_thread, stream_problems

    if spec.kind == "dw_pw":
        return dw_pw_stream_choices(spec, gpu)
    if spec.kind != "pw_dw":
        return []
    out, dw = spec.output, spec.stages[1]
    candidates = stream_candidates(dw, out.w, ST_CHANNELS, ST_TILE_ROWS + ST_TALL_ROWS, halves=True)

    def reuse(t) -> int:
        return t.stream * dw.stride * t.output_cols

    fitting = [
        t
        for t in candidates
        if not stream_problems(spec, t) and accumulators_per_thread(spec, t) <= ST_MAX_SUMS
    ]
    fitting = well_used(fitting)
    least = min(ST_MIN_REUSE, max(map(reuse, fitting), default=0))
    fitting = [
        t
        for t in fitting
        if reuse(t) >= least and (least < ST_MIN_REUSE or t.tile_h // t.lane_rows in ST_TILE_ROWS)
    ]

    def waste(t) -> float:  # lanes per written column, input rows per output row's share
        return stream_strip_waste(dw, t) / stream_lane_use(t)

    return beside_table_tile(spec, sorted(with_enough_blocks(spec, gpu, fitting), key=waste)[:ST_PER_CHAIN])


def stream_widths(dw, out_w: int, cols: int, lane_rows: int, halves: bool) -> set[int]:
    """The widest tile width (and, with ``halves``, half of it) that divides ``out_w`` and that a
    segment's writing lanes cover with ``cols`` columns each."""
    from fcm_tvm.schedules.layout import WARP
    from fcm_tvm.schedules.warp_lanes import lane_layout

    most = cols * lane_layout(dw, cols, WARP // lane_rows).writing_lanes
    fitting = [w for w in range(cols, min(most, out_w) + 1, cols) if out_w % w == 0]
    if not fitting:
        return set()
    return set(fitting[-1:] + ([w for w in fitting if 2 * w == fitting[-1]] if halves else []))


def stream_candidates(dw, out_w: int, channels, strips, halves: bool) -> list:
    """Streamed tiles of ``channels`` channels a thread, :data:`ST_WARPS` warps, each column count
    and rows a warp, strips of ``strips`` rows, over :func:`stream_widths`."""
    from fcm_tvm.schedules import FcmTiles
    from fcm_tvm.schedules.warp_lanes import LANE_ROWS, OUTPUT_COLS

    return [
        FcmTiles(cpt * warps, h * rows, w, 32 * warps, output_cols=cols, stream=cpt, lane_rows=rows)
        for cpt in channels
        for warps in ST_WARPS
        for cols in OUTPUT_COLS
        for rows in LANE_ROWS
        for h in strips
        for w in stream_widths(dw, out_w, cols, rows, halves)
    ]


def stream_lane_use(t) -> float:
    """The share of a segment's lanes that write."""
    from fcm_tvm.schedules.warp_lanes import segment

    return t.tile_w / t.output_cols / segment(t)


def well_used(tiles: list) -> list:
    """The tiles whose segments write :data:`ST_MIN_LANE_USE` of their lanes, or as many as the
    best of them (:data:`ST_LEAST_LANE_USE` at least), a warp over one row where that does as
    well as two."""
    best = max(map(stream_lane_use, tiles), default=0)
    used = [t for t in tiles if stream_lane_use(t) >= max(min(ST_MIN_LANE_USE, best), ST_LEAST_LANE_USE)]
    one_row = [t for t in used if t.lane_rows == 1]
    return one_row if one_row and max(map(stream_lane_use, one_row)) >= min(ST_MIN_LANE_USE, best) else used


def stream_strip_waste(dw, t) -> float:
    """Input rows a thread reads per output row's share of them (the window's overlap)."""
    from fcm_tvm.schedules.warp_lanes import strip_rows

    rows = strip_rows(t)
    return (dw.stride * (rows - 1) + dw.kernel) / (dw.stride * rows)


ST_DW_PW_CHANNELS = (4, 8, 12, 16, 20, 24, 32, 40, 48)  # output channels a thread
ST_DW_PW_ROWS = (1, 2, 4)
ST_DW_PW_MAX_SUMS = 64


def dw_pw_stream_choices(spec, gpu) -> list:
    """For a DW->PW chain, tiles of the streamed kernel: 4-48 output channels a thread (each
    channel group computes the DW again, so the fewest groups first), 1-2 warps, strips of 1-4
    rows, a warp over one row or two, 1-4 columns a lane, at most 64 sums a thread, three
    quarters of a segment's lanes writing or more, four blocks an SM or more; before them the tile
    of the H200 table."""
    from fcm_tvm.schedules.stream import accumulators_per_thread, stream_problems

    out, dw = spec.output, spec.stages[0]
    candidates = stream_candidates(dw, out.w, ST_DW_PW_CHANNELS, ST_DW_PW_ROWS, halves=False)
    fitting = [
        t
        for t in candidates
        if not stream_problems(spec, t) and accumulators_per_thread(spec, t) <= ST_DW_PW_MAX_SUMS
    ]
    fitting = well_used(fitting)

    def cost(t) -> tuple:  # DW computed once per channel group; rows read again per strip
        return (out.c // t.stream, stream_strip_waste(dw, t) / stream_lane_use(t))

    return beside_table_tile(spec, sorted(with_enough_blocks(spec, gpu, fitting), key=cost)[:ST_PER_CHAIN])


IM_PIXELS = (7, 14)  # a thread's run of pixels: the zoo's deep images are 7, 14 and 28 wide
IM_THREADS = (224, 448)  # whole warps over 7 or 28 runs of pixels
IM_MID = {"pw_dw_pw": (1, 2, 4), "pw_dw": (1, 2, 4, 8)}  # mid channels a thread expands
IM_WAVES = (1, 2, 4)  # blocks about that many times the blocks the SMs hold at once
IM_PER_CHAIN = {"pw_dw_pw": 16, "pw_dw": 10}
IM_MAX_SIDE = {"pw_dw_pw": 56, "pw_dw": 28}  # input images: larger ones are the tiled kernels'


def image_choices(spec, gpu) -> list:
    """For a PW->DW->PW chain of images up to 56x56 or a PW->DW chain up to 28x28, tiles of
    the kernel over whole images: 7 or 14 pixels and 1-4 (PW->DW: 1-8) mid channels a thread, 7
    or 14 warps, and for each the splits of the mid channels whose blocks come nearest to filling
    the SMs once, twice and four times (by registers, about 32 a thread beyond its buffers, and
    shared memory); those of the fewest idle SM slots first, then the most work a load feeds;
    before them the tile of the H200 table, timed in the same run."""
    from dataclasses import replace

    from fcm_tvm.schedules import FcmTiles
    from fcm_tvm.schedules.cuda_image import blocks, image_problems, register_bytes, shared_bytes

    if spec.kind not in IM_MID or spec.height > IM_MAX_SIDE[spec.kind]:
        return []
    out, mid = spec.output, spec.shapes[1].c
    max_smem = gpu.smem_per_block

    def resident(t) -> int:  # blocks an SM holds at once
        registers = (register_bytes(spec, t) // 4 + 32) * t.threads
        smem = shared_bytes(spec, t) + gpu.reserved_smem_per_block
        return max(1, min(gpu.registers_per_sm // registers, gpu.smem_per_sm // smem))

    chosen = {}
    for p, threads, r in itertools.product(IM_PIXELS, IM_THREADS, IM_MID[spec.kind]):
        base = FcmTiles(out.c, out.h, out.w, threads, output_cols=p, image=r)
        splits = [s for s in range(1, mid + 1) if mid % s == 0]
        fitting = [
            t for t in (replace(base, split=s) for s in splits) if not image_problems(spec, t, max_smem)
        ]
        for waves in IM_WAVES:
            if fitting:
                target = waves * gpu.sm_count * resident(fitting[0])
                best = min(fitting, key=lambda t: abs(blocks(spec, t) - target))
                chosen[best] = gpu.sm_count * resident(best)

    def cost(t) -> tuple:
        slots = chosen[t]
        idle = -blocks(spec, t) % slots / (blocks(spec, t) + slots)
        return (round(idle, 1), -t.image * t.output_cols)

    return beside_table_tile(spec, sorted(chosen, key=cost)[: IM_PER_CHAIN[spec.kind]])


def image_dw_run_choices(spec, gpu) -> list:
    """The tiles of :func:`image_choices` with the DW by runs of pixels (``depthwise_cols =
    output_cols``); for a PW->DW chain beside those tiles as they are (the PW->DW->PW ones were
    swept in the thirty-sixth session)."""
    from dataclasses import replace

    tiles = image_choices(spec, gpu)
    runs = [replace(t, depthwise_cols=t.output_cols) for t in tiles if t.image]
    return list(dict.fromkeys(tiles + runs if spec.kind == "pw_dw" else runs))  # once each


CHOICE_FLAGS = {  # flag of ``splits``: what it exports instead of the split choices, and the rule
    "--output-rows": ("output-row variants of the table's tiles", output_row_choices),
    "--vector-loads": ("vector-loaded weights of the table's tiles", vector_load_choices),
    "--depthwise-cols": ("depthwise columns per thread of the table's tiles", depthwise_col_choices),
    "--output-cols": (
        "output columns per thread (results in vectors) of the table's tiles",
        output_col_choices,
    ),
    "--fp32-tiles": ("float16 chains with their float32 twins' measured tiles", fp32_tile_choices),
    "--tensor-cores": ("tensor-core tiles of the float16 DW->PW and PW->DW chains", tensor_core_choices),
    "--table-tensor-cores": (
        "one tensor-core tile per float16 DW->PW or PW->DW chain",
        table_tensor_core_choices,
    ),
    "--tc-warps": (
        "that tile of each float16 PW->DW chain with 2-16 warps, over 1-2x its channels",
        tc_warp_choices,
    ),
    "--register-pw": (
        "tiles of the PW->DW kernel with its PW weights in registers (at most 40 input channels)",
        register_pw_choices,
    ),
    "--stream": ("tiles of the DW->PW and PW->DW kernels streamed through registers", stream_choices),
    "--image": ("tiles of the PW->DW->PW and PW->DW kernels over whole images", image_choices),
    "--image-dw-runs": (
        "those tiles with the DW by runs of pixels (PW->DW: beside them)",
        image_dw_run_choices,
    ),
    "--patch-reuse": (
        "that tile of each float16 PW->DW chain with 1-8 channel tiles a block",
        patch_reuse_choices,
    ),
}


def measured_sweep_rows(paths: list[Path]) -> dict:
    """Correct rows of earlier ``run --json`` files by chain key."""
    from fcm_tvm.benchmarks.measured_table import spec_from_row

    by_key: dict = {}
    for path in paths:
        for row in json.loads(path.read_text()):
            if row.get("ok"):
                by_key.setdefault(spec_from_row(row).key, []).append(row)
    return by_key


def splits_export(
    folder: Path,
    models: list[str],
    batches: list[int],
    jobs: int = 2,
    precisions: tuple[str, ...] = ("fp32",),
    sub_chains: bool = False,
    kinds: set[str] | None = None,
    skip_measured: set[str] = frozenset(),
    choose=split_choices,
) -> None:
    """Export ``choose(spec, gpu)`` (:func:`split_choices`, :func:`broad_choices`) for every
    distinct chain of ``models`` (as the ONNX importer finds them in the zoo's models; with
    ``sub_chains`` also what the pass falls back to inside a PW->DW->PW chain), only of ``kinds``
    if given, and of the ``skip_measured`` kinds only the chains the H100's table of measured
    chains lacks: a library per chain."""
    from concurrent.futures import ProcessPoolExecutor

    from fcm_tvm.benchmarks.chains import LayerCase, model_chains
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.planner.measured import measured

    gpu = get_gpu("h100")
    folder.mkdir(parents=True, exist_ok=True)
    chains = {}
    for model in models:
        for batch in batches:
            for precision in precisions:
                case = LayerCase(model, batch, precision)
                for index, (spec, _) in enumerate(model_chains(case, sub_chains=sub_chains)):
                    if kinds is not None and spec.kind not in kinds:
                        continue
                    if spec.kind in skip_measured and measured(spec, gpu) is not None:
                        continue
                    chains.setdefault(spec, f"{model}_c{index}_n{batch}_{precision}")
    chosen = {spec: choose(spec, gpu) for spec in chains}
    work = [(name, spec, chosen[spec], folder) for spec, name in chains.items() if chosen[spec]]
    print(f"{sum(len(choices) for _, _, choices, _ in work)} kernels of {len(work)} chains", flush=True)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:  # CUDA is up
        manifest = [entry for entries in pool.map(_export_layer, work) for entry in entries]
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    print(f"{len(manifest)} kernels of {len(work)} chains in {folder}")


def _export_layer(item) -> list[dict]:
    """Compile tile choices of one chain into one library; its manifest entries."""
    import tvm

    from fcm_tvm.errors import FcmError
    from fcm_tvm.schedules import fcm_primfunc

    name, spec, choices, folder = item
    target = tvm.target.Target(TARGET)
    functions, manifest = {}, []
    for index, tiles in enumerate(choices):
        symbol = f"fcm_{spec.kind}_t{index}"
        try:
            functions[symbol] = fcm_primfunc(spec, tiles, target).with_attr("global_symbol", symbol)
        except FcmError as error:  # TVM sized shared memory past the plan's bound: it would not launch
            print(f"skipped {name}@{tiles.label}: {error}", flush=True)
            continue
        manifest.append(
            {
                "name": f"{name}@{tiles.label}",
                "layer": name,
                "file": f"{name}.so",
                "symbol": symbol,
                "tiles": asdict(tiles),
                "sweep": True,
                **spec_to_dict(spec),
            }
        )
    if functions:
        tvm.compile(tvm.IRModule(functions), target=target).export_library(str(folder / f"{name}.so"))
    print(f"exported {len(manifest)} tile choices of {name}", flush=True)
    return manifest


# -- step 2: run (needs the TVM runtime with CUDA, and torch) ---------------------------------


def torch_activation(name: str):
    import torch.nn.functional as F

    return {
        "none": lambda v: v,
        "relu": F.relu,
        "relu6": lambda v: v.clamp(0.0, 6.0),
        "hardswish": lambda v: v * (v / 6.0 + 0.5).clamp(0.0, 1.0),
        "sigmoid": lambda v: v.sigmoid(),
        "silu": lambda v: v * v.sigmoid(),
    }[name]


def torch_fcm(entry: dict, tensors: list, dtype):
    """The chain with torch ops in ``dtype`` (float64: the reference; the model dtype: cuDNN)."""
    import torch.nn.functional as F

    current = tensors[0].to(dtype)
    for index, stage in enumerate(entry["stages"]):
        weight, bias = tensors[1 + 2 * index].to(dtype), tensors[2 + 2 * index].to(dtype)
        if stage["type"] == "dw":
            top, left, bottom, right = stage["pads"]
            padded = F.pad(current, (left, right, top, bottom))
            current = F.conv2d(padded, weight, bias, stride=stage["stride"], groups=current.shape[1])
        else:
            current = F.conv2d(current, weight, bias)
        current = torch_activation(stage["activation"])(current)
    if entry["residual"]:
        current = current + tensors[-1].to(dtype)
    return current


def random_inputs(entry: dict, generator) -> list:
    import torch

    dtype = getattr(torch, entry["dtype"])
    shapes = entry["param_shapes"]
    arrays = []
    for index, shape in enumerate(shapes):
        is_weight = 0 < index < 1 + 2 * len(entry["stages"]) and index % 2 == 1
        is_bias = 0 < index < 1 + 2 * len(entry["stages"]) and index % 2 == 0
        scale = (shape[1] * shape[2] * shape[3]) ** -0.5 if is_weight else 0.2 if is_bias else 1.0
        values = torch.randn(shape, generator=generator, dtype=torch.float64, device="cuda") * scale
        arrays.append(values.to(dtype))
    return arrays


@functools.cache
def load_library(path: str):
    """Each library once: a CUDA source library is compiled (nvcc) when it is loaded, and a
    sweep's library holds all the tile choices of a chain."""
    import tvm

    return tvm.runtime.load_module(path)


class Launch(NamedTuple):
    """One launch of a manifest's kernel on fresh random inputs, its output poisoned before and
    compared with the float64 torch reference after (relative error of the whole output and of
    its worst element; inf where an element is not finite)."""

    module: object
    inputs: list  # torch tensors, in the kernel's parameter order
    args: list  # the same on the device, as TVM tensors
    out: object
    rel: float
    worst: float


def launch_checked(entry: dict, folder: Path, generator) -> Launch:
    import numpy as np
    import torch
    import tvm

    dev = tvm.cuda(0)
    module = load_library(str(folder / entry["file"]))
    inputs = random_inputs(entry, generator)
    args = [tvm.runtime.tensor(t.cpu().numpy(), dev) for t in inputs]
    out = tvm.runtime.tensor(np.full(entry["output"], np.nan, dtype=entry["dtype"]), dev)
    module[entry["symbol"]](*args, out)
    dev.sync()
    actual = torch.from_numpy(out.numpy().astype(np.float64))
    expected = torch_fcm(entry, inputs, torch.float64).cpu()
    if not bool(torch.isfinite(actual).all()):
        return Launch(module, inputs, args, out, float("inf"), float("inf"))
    rel = float((actual - expected).norm() / expected.norm().clamp_min(1e-30))
    worst = float((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30))
    return Launch(module, inputs, args, out, rel, worst)


def check(entry: dict, folder: Path, generator, repeat: int) -> dict:
    import numpy as np
    import tvm

    launch = launch_checked(entry, folder, generator)
    tolerance = TOLERANCE[entry["dtype"]]
    ok = launch.rel < tolerance and launch.worst < 10 * tolerance  # inf (not finite) fails both

    timer = launch.module.time_evaluator(entry["symbol"], tvm.cuda(0), number=10, repeat=repeat)
    fcm_us = float(np.median(timer(*launch.args, launch.out).results)) * 1e6
    cudnn_us = float("nan")
    if not entry.get("sweep"):  # a sweep times many tiles of one layer: cuDNN once is enough
        inputs = launch.inputs
        cudnn_us = time_torch(lambda: torch_fcm(entry, inputs, inputs[0].dtype), repeat)
    return {
        "name": entry["name"],
        "layer": entry.get("layer", entry["name"]),
        "tiles": entry["tiles"],
        "predicted_us": entry.get("predicted_us"),
        "ok": ok,
        "rel": launch.rel,
        "worst": launch.worst,
        "fcm_us": fcm_us,
        "cudnn_us": cudnn_us,
        **{key: entry[key] for key in ("input", "output", "stages", "residual", "dtype")},
    }


def time_torch(fn, repeat: int) -> float:
    """Median microseconds of ``fn`` (10 calls per sample) with CUDA events, after warm-up."""
    import statistics

    import torch

    for _ in range(5):
        fn()
    samples = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / 10)
    return statistics.median(samples)


def compile_libraries(folder: Path, manifest: list[dict], jobs: int) -> None:
    """Load (and so compile) every library up front on ``jobs`` threads: nvcc runs as a
    subprocess, so the threads overlap; a failure is left for :func:`check` to report."""
    from concurrent.futures import ThreadPoolExecutor

    def load(path: str) -> None:
        with contextlib.suppress(Exception):
            load_library(path)

    files = sorted({str(folder / entry["file"]) for entry in manifest})
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(load, files))


def run(folder: Path, repeat: int, only: str | None, json_path: Path | None = None, jobs: int = 8) -> int:
    import torch

    torch.backends.cudnn.benchmark = True
    _register_cuda_compiler()
    generator = torch.Generator(device="cuda")
    generator.seed()  # fresh inputs every run
    manifest = [
        e for e in json.loads((folder / "manifest.json").read_text()) if not only or only in e["name"]
    ]
    compile_libraries(folder, manifest, jobs)
    card = {"device": torch.cuda.get_device_name()}  # which card timed it: tables are per GPU
    rows = []
    for entry in manifest:
        try:
            rows.append({**check(entry, folder, generator, repeat), **card})
        except Exception as error:  # report and carry on: one broken kernel must not hide the rest
            message = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
            rows.append({"name": entry["name"], "ok": False, "error": message[:120], **card})
        print(json.dumps(rows[-1]), flush=True)
        if json_path:  # after every kernel: a run cut off by a time limit keeps what it measured
            json_path.write_text(json.dumps(rows, indent=1))
    print_table(rows)
    return 0 if rows and all(r["ok"] for r in rows) else 1


def _register_cuda_compiler() -> None:
    """Load the CUDA runtime and compile callback with fcm_tvm's helpers when they are importable.

    A runtime-only TVM needs both to load CUDA source libraries; a full TVM has them already.
    """
    try:
        import tvm

        from fcm_tvm.runtime import load_cuda_runtime, register_cuda_compiler
    except ImportError:
        return
    load_cuda_runtime()
    major, minor = tvm.cuda(0).compute_version.split(".")
    register_cuda_compiler(f"sm_{major}{minor}")


def print_table(rows: list[dict]) -> None:
    print()
    print(f"{'kernel':40} {'ok':>4} {'rel err':>9} {'worst':>9} {'FCM us':>9} {'cuDNN us':>9} {'speedup':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['name']:40} {'FAIL':>4} {r['error']}")
            continue
        speedup = r["cudnn_us"] / r["fcm_us"] if r["fcm_us"] > 0 else float("nan")
        print(
            f"{r['name']:40} {'ok' if r['ok'] else 'FAIL':>4} {r['rel']:9.1e} {r['worst']:9.1e} "
            f"{r['fcm_us']:9.1f} {r['cudnn_us']:9.1f} {speedup:7.2f}x"
        )
    bad = [r["name"] for r in rows if not r["ok"]]
    print(f"\n{len(rows) - len(bad)} passed, {len(bad)} failed")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("export", help="compile and export every variant (no GPU needed)").add_argument(
        "folder", type=Path
    )
    sub.add_parser("sweep", help="export tile choices of the MobileNet-like layers").add_argument(
        "folder", type=Path
    )
    splits = sub.add_parser("splits", help="export split choices of every chain of the layer tables")
    splits.add_argument("--broad", type=int, metavar="N", help="instead: the N best broad choices per chain")
    splits.add_argument(
        "--patch-rows", metavar="SWEEP.json,...", help="instead: patch-row variants of their best tiles"
    )
    for flag, (what, _) in CHOICE_FLAGS.items():
        splits.add_argument(flag, action="store_true", help=f"instead: {what}")
    splits.add_argument("folder", type=Path)
    splits.add_argument("--models", default="mobilenet_v2,efficientnet_b0")
    splits.add_argument("--batch", default="1")
    splits.add_argument("--jobs", type=int, default=2)
    splits.add_argument("--precision", default="fp32")
    splits.add_argument("--sub-chains", action="store_true", help="also the chains the pass falls back to")
    splits.add_argument("--kinds", help="only these kinds, e.g. pw_dw,pw_dw_pw")
    splits.add_argument("--skip-measured", default="", help="kinds whose measured chains are left out")
    runner = sub.add_parser("run", help="check and time the exported kernels on the GPU")
    runner.add_argument("folder", type=Path)
    runner.add_argument("--repeat", type=int, default=30)
    runner.add_argument("--only", help="run only kernels whose name contains this")
    runner.add_argument("--json", type=Path, help="also write the rows as JSON here")
    runner.add_argument("--jobs", type=int, default=8, help="threads that compile the libraries first")
    args = parser.parse_args(argv)
    if args.command == "export":
        export(args.folder)
        return 0
    if args.command == "sweep":
        sweep_export(args.folder)
        return 0
    if args.command == "splits":
        batches = [int(b) for b in args.batch.split(",")]
        kinds = set(args.kinds.split(",")) if args.kinds else None
        precisions = tuple(args.precision.split(","))
        splits_export(
            args.folder,
            args.models.split(","),
            batches,
            args.jobs,
            precisions,
            args.sub_chains,
            kinds,
            set(filter(None, args.skip_measured.split(","))),
            _choice_rule(args),
        )
        return 0
    return run(args.folder, args.repeat, args.only, args.json, args.jobs)


def _choice_rule(args: argparse.Namespace):
    """The tile choices ``splits`` exports per chain, as the flags ask."""
    if args.patch_rows:
        rows = measured_sweep_rows([Path(path) for path in args.patch_rows.split(",")])
        return functools.partial(patch_row_choices, measured_rows=rows)
    if args.broad:
        return functools.partial(broad_choices, limit=args.broad)
    asked = (rule for flag, (_, rule) in CHOICE_FLAGS.items() if getattr(args, flag[2:].replace("-", "_")))
    return next(asked, split_choices)  # argparse's dest of "--output-rows" is output_rows


if __name__ == "__main__":
    sys.exit(main())
