"""PW -> DW -> PW (the inverted-residual body): both intermediates live in shared memory only.

A thread block computes ``channel_tile`` output channels over a ``tile_h x tile_w`` output patch
of one image. The final PW sums over the mid (expanded) channels in chunks; for each chunk the
block

1. stages the chunk's weights of all three stages in shared memory,
2. computes the first PW (bias, activation; zero outside the image) of the chunk over the patch
   plus halo into shared memory, the input read from global memory (L1/L2),
3. computes the DW (bias, activation) of the chunk over the patch into shared memory,
4. adds the chunk's contribution to the outputs each thread keeps in registers,

then applies bias, activation and residual and writes the outputs once.
"""

from __future__ import annotations

from tvm.s_tir import Schedule

from .cuda_base import (
    FcmRule,
    KernelPlan,
    compute_depthwise_shared,
    compute_patch,
    init_before,
    load_results_in_vectors,
    load_weights_in_vectors,
    place_patch_input,
    stage_weights,
    tile_final_sum,
    unroll_inner,
)
from .layout import (
    clipped_tile,
    computed_patch,
    depthwise_patch,
    depthwise_result,
    fetched_elements,
    patch_channels,
)
from .spec import FcmSpec, FcmTiles


class PwDwPw(FcmRule):
    kind = "pw_dw_pw"

    def reduction_channels(self, spec: FcmSpec) -> int:
        return spec.shapes[1].c

    def patch_shape(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> tuple[int, int, int] | None:
        return (chunk, *depthwise_patch(spec, 1, tiles))

    def shared_elements(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> dict[str, int]:
        channel_tile, tile_h, tile_w = clipped_tile(spec, tiles)
        rows, cols = computed_patch(spec, tiles)
        threads, kernel = tiles.threads, spec.stages[1].kernel
        mid, c_out = spec.shapes[1].c, spec.output.c
        layout = self.patch_threads(spec, tiles, chunk)
        # the patch and the 1x1 weights its sums read get the same (possibly padded) channels
        allocated = chunk if layout is None else patch_channels(layout, chunk, mid, threads)
        pw_weights = fetched_elements(chunk, spec.in_channels, mid, threads)
        return {
            "pw1 result": allocated * rows * cols,
            "patch weights": max(pw_weights, allocated * spec.in_channels),
            "dw weights": fetched_elements(chunk, kernel**2, mid, threads),
            "dw result": depthwise_result(chunk, tile_h * tile_w, mid, threads, tiles.depthwise_cols),
            "last pw weights": fetched_elements(channel_tile, chunk, c_out, threads),
        }

    def apply(self, sch: Schedule, spec: FcmSpec, plan: KernelPlan) -> None:
        threads, scope = plan.tiles.threads, plan.scope
        final = tile_final_sum(sch, sch.get_sblock("s2_acc"), sch.get_sblock("s2_out"), plan)
        chunk_loop = final.chunk_loop

        dw_acc = sch.get_sblock("s1_acc")
        compute_depthwise_shared(
            sch, sch.get_sblock("s1_out"), dw_acc, chunk_loop, threads, scope, plan.tiles.depthwise_cols
        )
        pw1_acc = sch.get_sblock("s0_acc")
        patch_step = compute_patch(
            sch, sch.get_sblock("s0_out"), pw1_acc, chunk_loop, plan.patch, scope, plan.tiles.patch_unroll
        )
        place_patch_input(sch, pw1_acc, final.loops.block, threads, scope, plan.staged_input)
        pw1_weights = stage_weights(sch, pw1_acc, "w0", chunk_loop, threads, scope)
        stage_weights(sch, dw_acc, "w1", chunk_loop, threads, scope)
        pw2_weights = stage_weights(sch, final.acc, "w2", chunk_loop, threads, scope)
        if plan.tiles.patch_lanes > 1:
            load_weights_in_vectors(sch, pw1_acc, pw1_weights, patch_step, plan.tiles.patch_lanes)
        if plan.tiles.weight_lanes > 1:
            load_weights_in_vectors(sch, final.acc, pw2_weights, final.step_loop, plan.tiles.weight_lanes)
        if plan.tiles.output_cols > 1:
            load_results_in_vectors(
                sch, final.acc, sch.get_sblock("s1_out"), final.step_loop, plan.tiles.output_cols
            )

        init_before(sch, final.acc, chunk_loop)
        unroll_inner(sch, final.loops.block)
