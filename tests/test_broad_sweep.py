"""The broad tile sweep (``tests/gpu/check_fcm_kernels.py splits --broad N``) asks the GPU only
about tiles that fit and fill it, and always about the tiles the planner already uses."""

from __future__ import annotations

from dataclasses import replace

from fcm_tvm.gpus import get_gpu
from fcm_tvm.planner.cost_model import fcm_blocks
from fcm_tvm.planner.measured import measured
from fcm_tvm.planner.tiles import fit_problems
from fcm_tvm.schedules import default_tiles
from fcm_tvm.schedules.spec import Depthwise, FcmSpec, Pointwise
from tests.conftest import gpu_script

H100 = get_gpu("h100")
BLOCK = FcmSpec(1, 96, 14, 14, (Pointwise(576, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(96)), True)


def kernel_checker():
    return gpu_script("check_fcm_kernels")


def test_broad_choices_fit_fill_the_gpu_and_keep_the_default_and_the_measured_best():
    checker = kernel_checker()
    choices = checker.broad_choices(BLOCK, H100, limit=6)
    anchors = [default_tiles(BLOCK, H100.smem_per_block), measured(BLOCK, H100).tiles]
    assert choices[:2] == anchors
    searched = choices[2:]
    assert len(searched) == 6 and len(set(choices)) == len(choices)
    low, high = (waves * H100.sm_count for waves in checker.BROAD_WAVES)
    for tiles in searched:
        assert not fit_problems(BLOCK, tiles, H100)
        assert tiles.threads in checker.BROAD_THREADS
        assert low <= fcm_blocks(BLOCK, tiles) <= high


def test_output_row_choices_retime_the_measured_tile_and_only_deepen_its_register_tiles():
    checker = kernel_checker()
    block = FcmSpec(
        32, 24, 56, 56, (Pointwise(144, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True
    )
    known = measured(block, H100).tiles
    choices = checker.output_row_choices(block, H100)
    assert choices[0] == known and len(set(choices)) == len(choices) > 1
    for tiles in choices[1:]:
        assert tiles.output_rows > 1 and known.tile_h % tiles.output_rows == 0
        assert (tiles.channel_tile, tiles.tile_h, tiles.tile_w, tiles.split) == (
            known.channel_tile,
            known.tile_h,
            known.tile_w,
            known.split,
        )
        assert tiles.threads in (known.threads, known.threads // 2)
        assert tiles.patch_rows in (known.patch_rows, tiles.output_rows)
        assert not fit_problems(block, tiles, H100)


def test_output_row_choices_skip_chains_the_table_has_not_measured():
    unmeasured = FcmSpec(1, 24, 20, 20, (Pointwise(48), Depthwise(3, 1)))
    assert kernel_checker().output_row_choices(unmeasured, H100) == []


def test_a_float16_chain_is_swept_with_the_tiles_its_float32_twin_was_measured_fastest_with():
    checker = kernel_checker()
    fp32 = FcmSpec(1, 72, 56, 56, (Depthwise(3, 1, None, "relu"), Pointwise(24, "none")))
    fp16 = replace(fp32, dtype="float16")
    choices = checker.fp32_tile_choices(fp16, H100)
    assert choices[0] == measured(fp16, H100).tiles  # its own tile, timed again beside the others
    assert measured(fp32, H100).tiles in choices
    assert set(checker.broad_choices(fp16, H100, limit=checker.FP16_BROAD)) <= set(choices)
    assert len(set(choices)) == len(choices) and not any(fit_problems(fp16, t, H100) for t in choices)
    assert checker.fp32_tile_choices(fp32, H100) == []


def test_output_column_choices_retime_the_measured_tile_beside_its_column_variants():
    checker = kernel_checker()
    wide = FcmSpec(
        32, 24, 56, 56, (Pointwise(144, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True
    )
    choices = checker.output_col_choices(wide, H100)  # its table tile is 8 wide
    assert choices[0] == measured(wide, H100).tiles
    assert {tiles.output_cols for tiles in choices[1:]} <= {2, 4} and len(choices) > 1
    assert not any(fit_problems(wide, tiles, H100) for tiles in choices)
    assert checker.output_col_choices(BLOCK, H100) == [measured(BLOCK, H100).tiles]  # 7 wide: none
    pw_dw = FcmSpec(1, 64, 14, 14, (Pointwise(384, "relu6"), Depthwise(3, 1, None, "relu6")))
    assert checker.output_col_choices(pw_dw, H100) == []


def test_tensor_core_choices_cover_fp16_pw_dw_heads_beside_the_cuda_core_tile_and_fit():
    checker = kernel_checker()
    head = FcmSpec(
        32, 160, 7, 7, (Pointwise(960, "hardswish"), Depthwise(5, 1, None, "hardswish")), dtype="float16"
    )
    choices = checker.tensor_core_choices(head, H100)
    cuda_cores, searched = choices[0], choices[1:]
    assert not cuda_cores.tensor_cores and 0 < len(searched) <= checker.TC_PER_CHAIN
    for tiles in searched:
        assert tiles.tensor_cores and not fit_problems(head, tiles, H100)
    assert checker.tensor_core_choices(replace(head, dtype="float32"), H100) == []
    block = replace(BLOCK, dtype="float16")
    assert checker.tensor_core_choices(block, H100) == []  # PW->DW->PW has no tensor-core kernel


def test_table_tensor_core_choices_retime_the_h200_tables_tensor_core_tile_or_else_the_first_searched():
    checker = kernel_checker()
    measured_head = FcmSpec(
        32, 160, 7, 7, (Pointwise(960, "hardswish"), Depthwise(5, 1, None, "hardswish")), dtype="float16"
    )
    (table_tile,) = checker.table_tensor_core_choices(measured_head, H100)
    assert table_tile == measured(measured_head, get_gpu("h200")).tiles and table_tile.tensor_cores
    stages = (Pointwise(96, "relu"), Depthwise(3, 1, None, "relu"))
    unmeasured = FcmSpec(3, 48, 14, 14, stages, dtype="float16")
    assert measured(unmeasured, get_gpu("h200")) is None
    first_searched = checker.tensor_core_choices(unmeasured, H100)[1]
    assert checker.table_tensor_core_choices(unmeasured, H100) == [first_searched]


def test_patch_reuse_choices_retime_the_table_tile_with_more_channel_tiles_a_block_where_they_fit():
    checker = kernel_checker()
    head = FcmSpec(32, 24, 56, 56, (Pointwise(144, "silu"), Depthwise(3, 1, None, "silu")), dtype="float16")
    choices = checker.patch_reuse_choices(head, H100)
    (table_tile,) = checker.table_tensor_core_choices(head, H100)
    assert choices[0] == replace(table_tile, patch_reuse=1) and table_tile in choices and len(choices) > 1
    for tiles in choices:
        assert tiles.tensor_cores and not fit_problems(head, tiles, H100)
        assert head.output.c % (tiles.channel_tile * tiles.patch_reuse) == 0
    assert checker.patch_reuse_choices(BLOCK, H100) == []  # PW->DW only


def test_tc_warp_choices_retime_the_table_tile_with_other_warps_and_up_to_twice_its_channels():
    checker = kernel_checker()
    head = FcmSpec(32, 192, 7, 7, (Pointwise(1152, "relu"), Depthwise(3, 1, None, "relu")), dtype="float16")
    (table_tile,) = checker.table_tensor_core_choices(head, H100)
    choices = checker.tc_warp_choices(head, H100)
    assert table_tile in choices and len(set(choices)) == len(choices) > 1
    for tiles in choices:
        assert not fit_problems(head, tiles, H100)
        assert tiles.threads in (64, 128, 256, 512)
        assert tiles.channel_tile in (table_tile.channel_tile, 2 * table_tile.channel_tile)
        assert replace(tiles, channel_tile=table_tile.channel_tile, threads=table_tile.threads) == table_tile
    assert checker.tc_warp_choices(BLOCK, H100) == []  # PW->DW only
