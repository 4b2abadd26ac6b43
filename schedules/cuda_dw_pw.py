"""DW -> PW: the depthwise result of a chunk of input channels lives in shared memory only.

A thread block computes ``channel_tile`` output channels over a ``tile_h x tile_w`` output patch
of one image. The PW sum over the input channels runs in chunks; for each chunk the block

1. stages the input patch with its halo (zero-padded) and the DW weights in shared memory,
2. computes the DW (bias, activation) of the chunk over the patch into shared memory,
3. stages the chunk's PW weights in shared memory,
4. adds the chunk's contribution to the outputs each thread keeps in registers,

then applies bias, activation and residual and writes the outputs once.
"""

from __future__ import annotations

from tvm.s_tir import Schedule

from .cuda_base import (
    FcmRule,
    KernelPlan,
    compute_depthwise_shared,
    compute_shared_at,
    init_before,
    load_results_in_vectors,
    load_weights_in_vectors,
    spread_over_threads,
    stage_weights,
    tile_final_sum,
    unroll_inner,
)
from .layout import clipped_tile, depthwise_patch, depthwise_result, fetched_elements
from .spec import FcmSpec, FcmTiles


class DwPw(FcmRule):
    kind = "dw_pw"

    def reduction_channels(self, spec: FcmSpec) -> int:
        return spec.in_channels

    def patch_shape(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> tuple[int, int, int] | None:
        return None

    def shared_elements(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> dict[str, int]:
        channel_tile, tile_h, tile_w = clipped_tile(spec, tiles)
        rows, cols = depthwise_patch(spec, 0, tiles)
        threads, kernel = tiles.threads, spec.stages[0].kernel
        c_in, c_out = spec.in_channels, spec.output.c
        return {
            "input patch": fetched_elements(chunk, rows * cols, c_in, threads),
            "dw weights": fetched_elements(chunk, kernel**2, c_in, threads),
            "dw result": depthwise_result(chunk, tile_h * tile_w, c_in, threads, tiles.depthwise_cols),
            "last pw weights": fetched_elements(channel_tile, chunk, c_out, threads),
        }

    def apply(self, sch: Schedule, spec: FcmSpec, plan: KernelPlan) -> None:
        threads, scope = plan.tiles.threads, plan.scope
        final = tile_final_sum(sch, sch.get_sblock("s1_acc"), sch.get_sblock("s1_out"), plan)
        pw_acc, chunk_loop = final.acc, final.chunk_loop

        dw_acc = sch.get_sblock("s0_acc")
        compute_depthwise_shared(
            sch, sch.get_sblock("s0_out"), dw_acc, chunk_loop, threads, scope, plan.tiles.depthwise_cols
        )
        pad = sch.get_sblock("s0_pad")
        compute_shared_at(sch, pad, chunk_loop, scope)
        spread_over_threads(sch, pad, chunk_loop, threads)
        stage_weights(sch, dw_acc, "w0", chunk_loop, threads, scope)
        pw_weights = stage_weights(sch, pw_acc, "w1", chunk_loop, threads, scope)
        if plan.tiles.weight_lanes > 1:
            load_weights_in_vectors(sch, final.acc, pw_weights, final.step_loop, plan.tiles.weight_lanes)
        if plan.tiles.output_cols > 1:
            load_results_in_vectors(
                sch, final.acc, sch.get_sblock("s0_out"), final.step_loop, plan.tiles.output_cols
            )

        init_before(sch, pw_acc, chunk_loop)
        unroll_inner(sch, final.loops.block)
