"""FusePlanner's cost model, stated as the effects it must capture (formulas: docs/planner.md)."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fcm_tvm.errors import FcmError
from fcm_tvm.gpus import get_gpu
from fcm_tvm.planner.cost_model import (
    LAUNCH_OVERHEAD_S,
    Traffic,
    estimate_fused,
    estimate_unfused,
    fcm_flops,
    fused_time_bound,
    weights_bytes,
)
from fcm_tvm.planner.layers import model_chains
from fcm_tvm.planner.memory import (
    contiguous_bytes,
    l2_capacity,
    l2_hit_fraction,
    row_segment_sectors,
    segment_sectors,
    write_back_fraction,
)
from fcm_tvm.planner.occupancy import latency_hiding, occupancy, parallel_efficiency
from fcm_tvm.planner.tiles import candidate_tiles, tile_grid
from fcm_tvm.schedules.spec import Depthwise, FcmSpec, FcmTiles, Pointwise

H100 = get_gpu("h100")
ORIN = get_gpu("orin")
SMALL_L2_H100 = replace(H100, l2_bytes=2**20)


def dw_pw(channels: int, size: int, out_channels: int, stride: int = 1, batch: int = 1) -> FcmSpec:
    return FcmSpec(batch, channels, size, size, (Depthwise(3, stride), Pointwise(out_channels)))


def pw_dw(channels: int, size: int, expanded: int, kernel: int = 3) -> FcmSpec:
    return FcmSpec(1, channels, size, size, (Pointwise(expanded), Depthwise(kernel)))


def tensor_bytes(numel: int) -> int:
    return numel * 4  # float32


# -- the unfused chain -------------------------------------------------------------------------


def test_an_unfused_dw_pw_pair_moves_the_intermediate_twice():
    spec = dw_pw(32, 112, 16)
    intermediate = tensor_bytes(spec.intermediates[0].numel)
    requested = estimate_unfused(spec, H100).requested
    assert requested.intermediate_write == intermediate
    assert requested.intermediate_read == intermediate


def test_stock_tvm_with_unfolded_batchnorm_runs_two_kernels_per_stage_and_moves_each_result_again():
    spec = FcmSpec(1, 16, 28, 28, (Pointwise(96), Depthwise(3), Pointwise(16)), residual=True)
    folded = estimate_unfused(spec, H100)
    unfolded = estimate_unfused(spec, H100, epilogue_kernels=True)
    assert len(unfolded.kernels) == 2 * len(folded.kernels)
    results = sum(tensor_bytes(shape.numel) for shape in spec.shapes[1:])
    moved_again = unfolded.requested.intermediate - folded.requested.intermediate
    assert moved_again == pytest.approx(2 * results, rel=0.01), "each raw result written and read back"
    assert unfolded.requested.input == folded.requested.input, "the residual is read once, by an epilogue"
    assert unfolded.requested.output == folded.requested.output
    assert unfolded.flops == folded.flops, "the epilogue kernels add traffic, not convolution work"


def test_writes_that_stay_in_l2_until_the_chain_ends_are_not_seen_in_dram():
    small = dw_pw(32, 28, 16)  # 0.4 MB: everything stays in L2
    assert estimate_unfused(small, H100).dram_observed(H100).written == 0
    assert estimate_fused(small, FcmTiles(16, 7, 7, 196), H100).dram_observed(H100).written == 0
    assert estimate_unfused(small, H100).dram_observed(H100).read == estimate_unfused(small, H100).dram.read


def test_writes_far_beyond_l2_are_mostly_written_back_while_the_chain_runs():
    big = dw_pw(32, 112, 16, batch=32)  # 51 MB intermediate, 25 MB of L2 for it
    unfused = estimate_unfused(big, H100)
    observed = unfused.dram_observed(H100)
    assert 0.5 * unfused.dram.written < observed.written < unfused.dram.written
    assert write_back_fraction(0, l2_capacity(H100)) == 0
    assert write_back_fraction(4 * l2_capacity(H100), l2_capacity(H100)) == pytest.approx(0.75)


def test_an_intermediate_too_big_for_l2_reaches_dram_both_ways():
    spec = dw_pw(32, 112, 16)  # 1.6 MB intermediate, 1 MiB of L2
    dram = estimate_unfused(spec, SMALL_L2_H100).dram
    assert dram.intermediate_write == tensor_bytes(spec.intermediates[0].numel)
    assert 0 < dram.intermediate_read <= dram.intermediate_write
    assert dram.intermediate_read > 0.5 * dram.intermediate_write


def test_an_intermediate_that_fits_in_l2_is_written_to_dram_but_read_from_l2():
    spec = dw_pw(32, 112, 16)
    unfused = estimate_unfused(spec, H100)
    assert unfused.dram.intermediate_write == tensor_bytes(spec.intermediates[0].numel)
    assert unfused.dram.intermediate_read == 0
    assert unfused.kernels[1].reread_l2_hit == 1.0


def test_unfused_kernels_read_input_and_weights_and_write_output_once():
    spec = dw_pw(32, 56, 64)
    dram = estimate_unfused(spec, H100).dram
    assert dram.input == tensor_bytes(spec.input.numel)
    assert dram.output == tensor_bytes(spec.output.numel)
    assert dram.weights == weights_bytes(spec, 32)
    assert weights_bytes(spec, 32) == contiguous_bytes(4 * 32 * 10, 32) + contiguous_bytes(4 * 64 * 33, 32)


def test_unfused_flops_are_the_chains_multiply_adds():
    spec = dw_pw(32, 56, 64, stride=2)
    pixels = 28 * 28
    assert estimate_unfused(spec, H100).flops == 2 * (32 * pixels * 9 + 64 * 32 * pixels)


def test_the_residual_is_read_once_with_the_input():
    spec = FcmSpec(1, 24, 56, 56, (Pointwise(144), Depthwise(3), Pointwise(24)), residual=True)
    x = tensor_bytes(spec.input.numel)
    assert estimate_unfused(spec, H100).dram.input == 2 * x
    assert estimate_fused(spec, FcmTiles(24, 8, 8, 192), H100).dram.input == 2 * x


# -- the fused chain ---------------------------------------------------------------------------


def test_the_fused_kernel_never_moves_the_intermediate():
    spec = dw_pw(32, 112, 16)
    fused = estimate_fused(spec, FcmTiles(16, 8, 8, 256), H100)
    assert fused.requested.intermediate == 0
    assert fused.dram.intermediate == 0
    assert fused.dram.output == tensor_bytes(spec.output.numel)


def test_the_fused_kernel_requests_its_input_once_per_channel_block():
    spec = dw_pw(32, 56, 64)
    one_block = estimate_fused(spec, FcmTiles(64, 8, 8, 256), H100).requested.input
    four_blocks = estimate_fused(spec, FcmTiles(16, 8, 8, 256), H100).requested.input
    assert four_blocks == pytest.approx(4 * one_block)
    assert one_block > tensor_bytes(spec.input.numel)  # the halo is read by both neighbours


def test_redundant_input_reads_reach_dram_only_when_l2_cannot_keep_the_input():
    spec = dw_pw(96, 112, 64)  # 4.8 MB of input per image, read by 4 channel blocks
    tiles = FcmTiles(16, 8, 8, 256)
    x = tensor_bytes(spec.input.numel)
    kept = estimate_fused(spec, tiles, H100)
    assert kept.dram.input == x
    assert kept.kernels[0].reread_l2_hit == 1.0
    lost = estimate_fused(spec, tiles, ORIN)  # 2 MiB of usable L2
    assert x < lost.dram.input < 4 * x
    assert lost.kernels[0].reread_l2_hit < 0.5


def test_weights_read_by_every_block_come_from_dram_once_when_they_fit_in_l2():
    spec = dw_pw(96, 56, 64)
    fused = estimate_fused(spec, FcmTiles(16, 8, 8, 256), H100)
    assert fused.requested.weights > 50 * weights_bytes(spec, 32)  # 196 blocks
    assert fused.dram.weights == weights_bytes(spec, 32)


def test_one_block_per_image_computes_exactly_the_chains_flops():
    spec = dw_pw(32, 8, 16)
    assert fcm_flops(spec, FcmTiles(16, 8, 8, 256)) == estimate_unfused(spec, H100).flops


def test_each_channel_block_recomputes_the_depthwise_stage():
    spec = dw_pw(32, 8, 64)
    depthwise = 2 * 32 * 64 * 9
    pointwise = 2 * 64 * 32 * 64
    assert fcm_flops(spec, FcmTiles(16, 8, 8, 256)) == 4 * depthwise + pointwise


def test_edge_tiles_compute_whole_tiles_but_move_only_the_image():
    tiles = FcmTiles(16, 4, 4, 64)
    ragged, even = dw_pw(32, 7, 16), dw_pw(32, 8, 16)  # both 2x2 tiles of 4x4
    assert fcm_flops(ragged, tiles) == fcm_flops(even, tiles)
    ragged_out = estimate_fused(ragged, tiles, H100)
    assert ragged_out.dram.output == tensor_bytes(16 * 7 * 7) < estimate_fused(even, tiles, H100).dram.output
    assert ragged_out.requested.output > ragged_out.dram.output  # 28-byte rows end in partial sectors


def test_a_kernel_over_whole_images_expands_each_image_once_and_only_its_projection_sums_slices():
    block = FcmSpec(32, 192, 7, 7, (Pointwise(1152, "relu"), Depthwise(5), Pointwise(192)), residual=True)
    whole = FcmTiles(192, 7, 7, 224, 9, output_cols=7, image=2)
    assert fcm_flops(block, whole) == estimate_unfused(block, H100).flops  # no halo, no recompute
    tiled = FcmTiles(192, 7, 7, 224, 9, output_cols=7)
    assert fcm_flops(block, tiled) > 1.6 * fcm_flops(block, whole)  # the expansion over 11x11 pixels
    assert [k.name for k in estimate_fused(block, whole, H100).kernels][1:] == ["sum of 9 slices"]
    head = FcmSpec(32, 192, 7, 7, (Pointwise(1152, "silu"), Depthwise(5, 1, None, "silu")))
    fused = estimate_fused(head, FcmTiles(1152, 7, 7, 224, 9, output_cols=7, image=2), H100)
    assert len(fused.kernels) == 1 and fused.dram.intermediate_write == 0  # its blocks share the channels out
    assert fused.dram.output == tensor_bytes(32 * 1152 * 49)


def test_too_big_tiles_are_a_clear_error():
    with pytest.raises(FcmError, match="shared memory"):
        estimate_fused(
            pw_dw(1024, 56, 128), FcmTiles(128, 32, 32, 1024), replace(H100, smem_per_block=48 * 1024)
        )


# -- memory granularity and L2 -----------------------------------------------------------------


def test_a_contiguous_tensor_costs_whole_sectors():
    assert contiguous_bytes(32, 32) == 32
    assert contiguous_bytes(33, 32) == 64


def test_a_row_segment_costs_every_sector_it_touches():
    assert segment_sectors(0, 32, 32) == 1
    assert segment_sectors(4, 32, 32) == 2
    assert row_segment_sectors(0, 8, 64, 4, 32) == 1  # aligned rows of 256 B: 8 floats, one sector
    assert row_segment_sectors(1, 8, 64, 4, 32) == 2
    assert 1 < row_segment_sectors(0, 7, 7, 4, 32) < 2  # 28-byte rows straddle sectors some of the time


def test_narrow_tiles_waste_more_of_each_sector_than_wide_ones():
    spec = dw_pw(32, 64, 16)
    narrow = estimate_fused(spec, FcmTiles(16, 16, 4, 64), H100).requested.input
    wide = estimate_fused(spec, FcmTiles(16, 4, 16, 64), H100).requested.input  # same halo area
    assert narrow > 1.3 * wide


def test_l2_serves_a_reuse_that_fits_and_a_share_of_one_that_does_not():
    assert l2_hit_fraction(10e6, 25e6) == 1.0
    assert l2_hit_fraction(50e6, 25e6) == 0.5
    assert l2_capacity(H100) < H100.l2_bytes


# -- occupancy and time ------------------------------------------------------------------------


def test_shared_memory_and_threads_limit_the_blocks_per_sm():
    assert occupancy(256, 100 * 1024, 40, H100).blocks_per_sm == 2
    assert occupancy(256, 100 * 1024, 40, H100).limited_by == "shared memory"
    assert occupancy(1024, 0, 32, H100).blocks_per_sm == 2
    assert occupancy(1024, 0, 64, H100).limited_by == "registers"
    assert occupancy(32, 0, 32, H100).limited_by == "block limit"


def test_a_grid_smaller_than_the_gpu_gets_a_share_of_it():
    assert parallel_efficiency(66, 512, 4, H100) == pytest.approx(0.5)
    assert parallel_efficiency(132 * 4 * 10, 512, 4, H100) == pytest.approx(1.0)


def test_one_block_too_many_costs_a_whole_wave():
    one_wave = parallel_efficiency(132, 512, 1, H100)
    assert parallel_efficiency(133, 512, 1, H100) == pytest.approx(one_wave * 133 / 264)


def test_few_resident_threads_cannot_reach_peak_throughput():
    assert latency_hiding(2048, H100) == 1.0
    assert latency_hiding(256, H100) == pytest.approx(0.5)
    assert parallel_efficiency(132 * 10, 256, 1, H100) == pytest.approx(0.5)


def test_kernel_time_is_the_binding_resource_over_efficiency_plus_a_launch():
    kernel = estimate_fused(dw_pw(32, 112, 16), FcmTiles(16, 8, 8, 256), H100).kernels[0]
    assert kernel.dram_s == pytest.approx(kernel.dram.total / 3350e9)
    assert kernel.time_s == pytest.approx(
        max(kernel.dram_s, kernel.l2_s, kernel.compute_s) / kernel.efficiency * kernel.slowdown
        + LAUNCH_OVERHEAD_S
    )
    unfused = estimate_unfused(dw_pw(32, 112, 16), H100)
    assert len(unfused.kernels) == 2
    assert unfused.time_s > 2 * LAUNCH_OVERHEAD_S


def test_the_search_bound_never_exceeds_a_fused_estimate():
    for _, spec in model_chains("efficientnet_b0")[::3]:
        for tiles in candidate_tiles(spec, H100)[::7]:
            assert fused_time_bound(spec, tiles, H100) <= estimate_fused(spec, tiles, H100).time_s * (
                1 + 1e-12
            )


# -- invariants over random chains -------------------------------------------------------------

chains = st.builds(
    lambda kind, c, size, out, k, s: FcmSpec(
        1,
        c,
        size,
        size,
        (Depthwise(k, s), Pointwise(out)) if kind == "dw_pw" else (Pointwise(out), Depthwise(k, s)),
    ),
    st.sampled_from(["dw_pw", "pw_dw"]),
    st.sampled_from([8, 24, 40, 96]),
    st.sampled_from([7, 14, 28, 56]),
    st.sampled_from([16, 32, 48, 144]),
    st.sampled_from([3, 5]),
    st.sampled_from([1, 2]),
)


@given(chains, st.data())
def test_dram_traffic_never_exceeds_what_kernels_request(spec, data):
    for gpu in (H100, ORIN):
        estimates = [estimate_unfused(spec, gpu)]
        grid = tile_grid(spec, gpu)
        tiles = data.draw(st.sampled_from(grid))
        with contextlib.suppress(FcmError):  # tiles that do not fit are the planner's business
            estimates.append(estimate_fused(spec, tiles, gpu))
        for estimate in estimates:
            for role, dram in estimate.dram.as_dict().items():
                assert dram <= getattr(estimate.requested, role) + 1e-6, role
            assert estimate.dram.input >= tensor_bytes(spec.input.numel) - 1e-6


def test_traffic_adds_up_by_role():
    total = Traffic(input=1, weights=2, intermediate_write=3) + Traffic(intermediate_read=4, output=5)
    assert (total.read, total.written, total.total) == (7, 8, 15)
