"""PW -> DW: the pointwise result over the patch and its halo lives in shared memory only.

A thread block computes ``channel_tile`` channels over a ``tile_h x tile_w`` output patch of one
image. It stages the PW and DW weights of its channels in shared memory, computes the PW (bias,
activation; zero outside the image, which is the DW's padding) over the patch plus halo into
shared memory, summing all input channels in registers with the input read from global memory
(each value is read by ``channel_tile / reg_c`` threads, through L1), then each thread computes
its DW outputs from shared memory and writes them once.
"""

from __future__ import annotations

from tvm.s_tir import Schedule

from .cuda_base import (
    FcmRule,
    KernelPlan,
    compute_patch,
    keep_in_registers,
    load_weights_in_vectors,
    place_patch_input,
    stage_weights,
    tile_output,
    unroll_inner,
)
from .layout import (
    clipped_tile,
    computed_patch,
    depthwise_patch,
    fetched_elements,
    patch_channels,
)
from .spec import FcmSpec, FcmTiles


class PwDw(FcmRule):
    kind = "pw_dw"

    def reduction_channels(self, spec: FcmSpec) -> int:
        return 1  # no chunked reduction: each PW sum runs over all inputs of one pixel at once

    def patch_shape(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> tuple[int, int, int] | None:
        return (clipped_tile(spec, tiles)[0], *depthwise_patch(spec, 1, tiles))

    def shared_elements(self, spec: FcmSpec, tiles: FcmTiles, chunk: int) -> dict[str, int]:
        channel_tile = clipped_tile(spec, tiles)[0]
        rows, cols = computed_patch(spec, tiles)
        threads, kernel, mid = tiles.threads, spec.stages[1].kernel, spec.output.c
        layout = self.patch_threads(spec, tiles, chunk)
        # the patch and the 1x1 weights its sums read get the same (possibly padded) channels
        allocated = channel_tile if layout is None else patch_channels(layout, channel_tile, mid, threads)
        pw_weights = fetched_elements(channel_tile, spec.in_channels, mid, threads)
        return {
            "pw result": allocated * rows * cols,
            "patch weights": max(pw_weights, allocated * spec.in_channels),
            "dw weights": fetched_elements(channel_tile, kernel**2, mid, threads),
        }

    def apply(self, sch: Schedule, spec: FcmSpec, plan: KernelPlan) -> None:
        threads, scope = plan.tiles.threads, plan.scope
        dw_acc = sch.get_sblock("s1_acc")
        loops = tile_output(sch, dw_acc, plan.layout)
        sch.reorder(*loops.registers, *loops.reductions)  # one output at a time: one register
        keep_in_registers(sch, dw_acc, sch.get_sblock("s1_out"), loops.registers[-1])

        pw_acc = sch.get_sblock("s0_acc")
        patch_step = compute_patch(
            sch, sch.get_sblock("s0_out"), pw_acc, loops.block, plan.patch, scope, plan.tiles.patch_unroll
        )
        place_patch_input(sch, pw_acc, loops.block, threads, scope, plan.staged_input)
        pw_weights = stage_weights(sch, pw_acc, "w0", loops.block, threads, scope)
        if plan.tiles.patch_lanes > 1:
            load_weights_in_vectors(sch, pw_acc, pw_weights, patch_step, plan.tiles.patch_lanes)
        stage_weights(sch, dw_acc, "w1", loops.block, threads, scope)

        unroll_inner(sch, loops.block)
