"""The tensor-core DW->PW and PW->DW kernels (float16): their definitions against float64 on the
CPU, their CUDA with nvcc, and the tiles they take. WMMA does not run on a CPU: the GPU check runs
the scheduled kernels (tests/gpu/check_fcm_kernels.py splits --tensor-cores)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tvm

from fcm_tvm.benchmarks.measured_table import tiles_from_text
from fcm_tvm.errors import FcmError
from fcm_tvm.schedules import Depthwise, FcmSpec, FcmTiles, Pointwise, fcm_primfunc, tile_problems
from fcm_tvm.schedules.cuda import allocated_shared
from fcm_tvm.schedules.cuda_pw_dw_tc import chunk, padded_pixels
from fcm_tvm.schedules.tensor_cores import shared_bytes, tensor_core_definition

from .test_schedules import CUDA, assert_matches_reference, random_inputs, run_llvm
from .test_schedules_cuda import compile_cubin

MAX_SMEM = 227 * 1024
KERNEL = r'extern "C" __global__ void (?:__launch_bounds__\((\d+)\) )?(\w+)\(([^)]*)\)\s*\{'


def tc(channel_tile: int, tile_h: int, tile_w: int, threads: int, reuse: int = 1) -> FcmTiles:
    return FcmTiles(channel_tile, tile_h, tile_w, threads, patch_reuse=reuse, tensor_cores=1)


def dw_pw(n, c, h, w, kernel, stride, out, residual=False, acts=("relu6", "none")) -> FcmSpec:
    stages = (Depthwise(kernel, stride, None, acts[0]), Pointwise(out, acts[1]))
    return FcmSpec(n, c, h, w, stages, residual, "float16")


def pw_dw(n, c, h, w, mid, kernel, stride, residual=False, acts=("relu6", "relu6")) -> FcmSpec:
    stages = (Pointwise(mid, acts[0]), Depthwise(kernel, stride, None, acts[1]))
    return FcmSpec(n, c, h, w, stages, residual, "float16")


CASES = [  # deep layers of MobileNetV2 / MnasNet / EfficientNet, and what the definitions must get right
    (dw_pw(2, 64, 7, 7, 3, 1, 32), tc(32, 7, 7, 128)),  # 49 pixels padded to 64
    (dw_pw(1, 32, 14, 14, 3, 2, 48), tc(16, 7, 7, 64)),  # stride 2
    (dw_pw(2, 32, 14, 14, 5, 1, 32, acts=("silu", "hardswish")), tc(32, 7, 7, 128)),  # 4 tiles, 5x5
    (dw_pw(1, 64, 8, 8, 3, 1, 64, residual=True, acts=("relu", "relu")), tc(64, 8, 8, 256)),
    (dw_pw(1, 32, 14, 14, 3, 1, 16), tc(16, 14, 14, 32)),  # 196 pixels padded to 208
    (dw_pw(2, 48, 7, 7, 3, 1, 32), tc(32, 7, 7, 128)),  # 48 channels: 3 steps of 16
    (pw_dw(2, 40, 7, 7, 64, 3, 1), tc(32, 7, 7, 128)),  # 40 channels padded to 48; 9x9 patch, 96
    (pw_dw(1, 24, 14, 14, 32, 5, 2, acts=("hardswish", "silu")), tc(16, 7, 7, 64)),  # 17x17 patch
    (pw_dw(1, 32, 14, 14, 32, 3, 1, residual=True, acts=("relu", "none")), tc(32, 7, 7, 128)),
    (pw_dw(1, 16, 16, 16, 16, 3, 1, acts=("sigmoid", "relu")), tc(16, 16, 16, 64)),  # 18x18 patch, 352
    (pw_dw(2, 40, 7, 7, 64, 3, 1), tc(16, 7, 7, 64, reuse=2)),  # two channel tiles a block, one patch
    (pw_dw(1, 48, 14, 14, 48, 5, 1, residual=True, acts=("silu", "none")), tc(16, 7, 7, 128, reuse=3)),
    (pw_dw(1, 16, 14, 14, 96, 5, 2, acts=("hardswish", "silu")), tc(16, 7, 7, 64, reuse=3)),  # 2 blocks
    (pw_dw(1, 192, 7, 7, 96, 5, 1), tc(48, 7, 7, 256, reuse=2)),  # 61 KiB of dynamic shared memory
]


def case_id(case) -> str:
    spec, tiles = case
    return f"{spec.key.replace(' ', '_')}@{tiles.label.replace(' ', '_')}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_tiled_definition_matches_float64_on_the_cpu(case, rng: np.random.Generator) -> None:
    spec, tiles = case
    inputs = random_inputs(spec, rng)
    assert_matches_reference(spec, run_llvm(spec, inputs, tensor_core_definition(spec, tiles)), inputs)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_kernel_multiplies_on_tensor_cores_and_compiles(case, nvcc: str, tmp_path: Path) -> None:
    spec, tiles = case
    func = fcm_primfunc(spec, tiles, CUDA)
    source = tvm.compile(tvm.IRModule({"main": func}), target=CUDA).mod.imports[0].inspect_source()
    kernels = re.findall(KERNEL, source)
    assert [(threads, name) for threads, name, _ in kernels] == [
        (str(tiles.threads), f"fcm_{spec.kind}_kernel")
    ]
    pointers = {p.split()[-1] for p in kernels[0][2].split(",")}
    assert pointers == {"x_ptr", "w0_ptr", "b0_ptr", "w1_ptr", "b1_ptr", "out_ptr"} | (
        {"residual_ptr"} if spec.residual else set()
    ), "no global buffer beyond the parameters: the intermediate stays on chip"
    assert "nvcuda::wmma::mma_sync" in source and "wmma::accumulator, 16, 16, 16, float>" in source
    sigmoids = any(stage.activation in ("silu", "sigmoid") for stage in spec.stages)
    assert ("__expf(" in source) == sigmoids and not re.search(r"\bexpf\(", source), "fast exp only"
    static_smem = compile_cubin(nvcc, source, tmp_path)  # the float32 accumulators; the rest is dynamic
    assert 0 < static_smem <= shared_bytes(spec, tiles)


@pytest.mark.parametrize(
    ("spec", "tiles", "problem"),
    [
        (FcmSpec(1, 64, 7, 7, (Depthwise(3), Pointwise(32))), tc(32, 7, 7, 128), "need float16"),
        (dw_pw(1, 40, 7, 7, 3, 1, 32), tc(32, 7, 7, 128), "40 input channels"),
        (dw_pw(1, 64, 7, 7, 3, 1, 40), tc(32, 7, 7, 128), "dividing 40"),
        (dw_pw(1, 64, 14, 14, 3, 1, 32), tc(32, 8, 8, 128), "must divide the output 14x14"),
        (dw_pw(1, 64, 7, 7, 3, 1, 32), tc(32, 7, 7, 100), "whole warps"),
        (dw_pw(1, 64, 7, 7, 3, 1, 32), tc(32, 7, 7, 32 * 12), "12 warps do not tile"),
        (
            dw_pw(1, 64, 7, 7, 3, 1, 32),
            FcmTiles(32, 7, 7, 128, output_rows=2, tensor_cores=1),
            "no other knob",
        ),
        (dw_pw(1, 64, 28, 28, 3, 1, 128), tc(128, 28, 28, 128), "of static shared memory"),
        (dw_pw(1, 64, 7, 7, 3, 1, 32), FcmTiles(32, 7, 7, 128, split=4, tensor_cores=1), "split 4 does not"),
        (dw_pw(1, 64, 7, 7, 3, 1, 32), tc(16, 7, 7, 128, reuse=2), "patch reuse but for PW->DW"),
    ],
)
def test_tensor_core_tiles_name_what_does_not_fit(spec, tiles, problem: str) -> None:
    assert any(problem in found for found in tile_problems(spec, tiles, MAX_SMEM))
    with pytest.raises(FcmError, match=re.escape(problem)):
        fcm_primfunc(spec, tiles, CUDA)


@pytest.mark.parametrize(
    ("spec", "tiles", "problem"),
    [
        (FcmSpec(1, 32, 7, 7, (Pointwise(64), Depthwise(3))), tc(32, 7, 7, 128), "need float16"),
        (pw_dw(1, 32, 7, 7, 40, 3, 1), tc(32, 7, 7, 128), "dividing 40"),
        (pw_dw(1, 32, 14, 14, 64, 3, 1), tc(32, 8, 8, 128), "must divide the output 14x14"),
        (pw_dw(1, 32, 7, 7, 64, 3, 1), FcmTiles(32, 7, 7, 128, split=2, tensor_cores=1), "split must be 1"),
        (
            pw_dw(1, 32, 7, 7, 64, 3, 1),
            FcmTiles(32, 7, 7, 128, patch_rows=2, tensor_cores=1),
            "no other knob",
        ),
        (pw_dw(1, 64, 14, 14, 128, 5, 1), tc(128, 14, 14, 256), "of static shared memory"),
        (pw_dw(1, 64, 14, 14, 64, 5, 1), tc(32, 14, 14, 128), "dynamic bytes or more"),  # 76 KiB, 32 dynamic
        (
            pw_dw(1, 32, 7, 7, 96, 3, 1),
            tc(32, 7, 7, 128, reuse=2),
            "2 channel tiles of 32 per block do not divide 96",
        ),
        (
            pw_dw(1, 512, 14, 14, 64, 5, 1),
            tc(16, 14, 14, 64, reuse=2),
            f"bytes of shared memory > {MAX_SMEM}",
        ),  # the whole patch
    ],
)
def test_pw_dw_tensor_core_tiles_name_what_does_not_fit(spec, tiles, problem: str) -> None:
    assert any(problem in found for found in tile_problems(spec, tiles, MAX_SMEM))
    with pytest.raises(FcmError, match=re.escape(problem)):
        fcm_primfunc(spec, tiles, CUDA)


@pytest.mark.parametrize(
    ("spec", "tiles"),
    [
        (pw_dw(32, 112, 14, 14, 672, 5, 1, acts=("silu", "silu")), tc(32, 7, 7, 128)),  # 224 pairs: 2 rounds
        (pw_dw(1, 24, 14, 14, 32, 3, 2), tc(16, 7, 7, 64)),  # stride 2: 112 pairs, 2 rounds
    ],
    ids=["dw5", "dw3s2"],
)
def test_a_pw_dw_thread_keeps_its_channels_depthwise_weights_and_a_kernel_column_in_registers(
    spec: FcmSpec, tiles: FcmTiles
) -> None:
    source = tvm.compile(tvm.IRModule({"main": fcm_primfunc(spec, tiles, CUDA)}), target=CUDA)
    source = source.mod.imports[0].inspect_source()
    dw = spec.stages[1]
    column = (tiles.tile_h - 1) * dw.stride + dw.kernel
    assert source.count("w1_ptr[") == dw.kernel**2, "each weight loaded once per round, not per output"
    assert source.count("s0_out_shared_dyn_local_ptr[") > 0
    loads = re.findall(r"s0_out_shared_dyn_local_ptr\[(\d+)\] = ", source)
    assert len(loads) == dw.kernel * column, "a kernel column of inputs loaded once, feeding every output"
    assert f"s1_acc_local_ptr[{tiles.tile_h}]" in source, "the column's sums in registers"


def test_pw_dw_pw_has_no_tensor_core_kernel() -> None:
    stages = (Pointwise(64), Depthwise(3), Pointwise(32))
    spec = FcmSpec(1, 32, 7, 7, stages, dtype="float16")
    assert any("only for dw_pw and pw_dw" in p for p in tile_problems(spec, tc(32, 7, 7, 128), MAX_SMEM))


def test_tensor_core_tiles_are_labelled_and_read_back_from_labels() -> None:
    tiles = tc(64, 7, 7, 128)
    assert tiles.label == "c64 7x7 t128 s1 tc"
    assert tiles_from_text(tiles.label) == tiles
    assert tiles_from_text("c64 7x7 t196 s8 d7").tensor_cores == 0
    reused = tc(16, 7, 7, 128, reuse=3)
    assert reused.label == "c16 7x7 t128 s1 r3 tc"
    assert tiles_from_text(reused.label) == reused


def test_patch_reuse_is_a_tensor_core_knob_the_cuda_core_kernels_refuse() -> None:
    spec = FcmSpec(1, 32, 14, 14, (Pointwise(64), Depthwise(3)), dtype="float16")
    problems = tile_problems(spec, FcmTiles(32, 7, 7, 128, patch_reuse=2), MAX_SMEM)
    assert any("patch_reuse is a knob of the tensor-core PW->DW kernel" in p for p in problems)


def test_patch_reuse_stages_the_whole_input_patch_once_per_block() -> None:
    spec = pw_dw(32, 16, 112, 112, 96, 3, 2, acts=("silu", "silu"))
    one, three = (tc(16, 8, 8, 128, reuse=r) for r in (1, 3))
    sources = {}
    for tiles in (one, three):
        func = fcm_primfunc(spec, tiles, CUDA)
        sources[tiles] = (
            tvm.compile(tvm.IRModule({"main": func}), target=CUDA).mod.imports[0].inspect_source()
        )
    assert "for (int turn = 0; turn < 3; ++turn)" in sources[three], "three channel tiles in turn"
    patch_staged = sources[three].index("x_ptr[")
    assert patch_staged < sources[three].index("for (int turn"), "the input patch staged before the turns"
    assert "for (int turn" not in sources[one]
    deep = pw_dw(1, 64, 14, 14, 128, 3, 1)  # 64 input channels: two chunks of 32
    chunked, whole = (tc(16, 7, 7, 128, reuse=r) for r in (1, 2))
    assert (chunk(deep, chunked), chunk(deep, whole)) == (32, 64), "whole patch, whole weights: one step"
    other_chunk = (64 - 32) * (padded_pixels(deep, whole) + 16) * 2  # patch and 16 channels' weights
    assert shared_bytes(deep, whole) - shared_bytes(deep, chunked) == other_chunk


def test_a_block_past_48_kib_keeps_48_kib_or_more_dynamic_so_that_tvm_raises_its_limit() -> None:
    spec, tiles = pw_dw(1, 192, 7, 7, 96, 5, 1), tc(48, 7, 7, 256, reuse=2)  # the whole 192-channel patch
    sizes = allocated_shared(fcm_primfunc(spec, tiles, CUDA), CUDA)
    assert sum(sizes.values()) > 48 * 1024
    assert sizes["shared.dyn"] >= 48 * 1024, "else the launch is refused past 48 KiB"


def test_a_tile_whose_merged_dynamic_memory_falls_under_48_kib_is_refused_at_build_time() -> None:
    spec, tiles = pw_dw(1, 112, 14, 14, 672, 5, 1), tc(48, 7, 7, 256, reuse=2)  # 40 of 63 KiB dynamic
    assert not tile_problems(spec, tiles, MAX_SMEM), "the estimate counts 48 KiB or more dynamic"
    with pytest.raises(FcmError, match="as TVM allocates it, .* dynamic bytes or more"):
        fcm_primfunc(spec, tiles, CUDA)
