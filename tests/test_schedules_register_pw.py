"""The PW->DW kernel with its PW weights in registers (``FcmTiles.register_pw``): its definition
against float64 on the CPU, its CUDA with nvcc, the tiles it takes, and how the table and planner
see it. The GPU check runs the scheduled kernels (tests/gpu/check_fcm_kernels.py splits
--register-pw)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import tvm

from fcm_tvm.benchmarks.measured_table import tiles_from_text
from fcm_tvm.errors import FcmError
from fcm_tvm.gpus import get_gpu
from fcm_tvm.planner.tiles import accumulators, fit_problems
from fcm_tvm.planner.tiles import shared_bytes as planned_shared_bytes
from fcm_tvm.schedules import Depthwise, FcmSpec, FcmTiles, Pointwise, fcm_primfunc, tile_problems
from fcm_tvm.schedules.cuda import allocated_shared
from fcm_tvm.schedules.cuda_pw_dw_regs import (
    REGISTER_CHANNELS,
    block_threads,
    padded_pixels,
    register_pw_definition,
    result_scope,
    shared_bytes,
)

from .test_schedules import CUDA, assert_matches_reference, random_inputs, run_llvm
from .test_schedules_tensor_cores import case_id

MAX_SMEM = 227 * 1024
KERNEL = r'extern "C" __global__ void (?:__launch_bounds__\((\d+)\) )?(\w+)\(([^)]*)\)\s*\{'


def rw(channel_tile: int, tile_h: int, tile_w: int, rows: int = 2, reuse: int = 1) -> FcmTiles:
    threads = block_threads(channel_tile)
    return FcmTiles(channel_tile, tile_h, tile_w, threads, patch_rows=rows, patch_reuse=reuse, register_pw=1)


BOTH = FcmTiles(16, 7, 14, 128, tensor_cores=1, register_pw=1)


def pw_dw(n, c, h, w, mid, kernel, stride, residual=False, acts=("relu6", "relu6"), dtype="float16"):
    stages = (Pointwise(mid, acts[0]), Depthwise(kernel, stride, None, acts[1]))
    return FcmSpec(n, c, h, w, stages, residual, dtype)


CASES = [  # the early heads it is for, and what the definition must get right
    (pw_dw(1, 16, 16, 16, 32, 3, 2), rw(16, 4, 8, rows=4, reuse=2)),  # stride 2, two turns a block
    (pw_dw(2, 24, 14, 14, 48, 5, 1, acts=("silu", "silu"), dtype="float32"), rw(8, 7, 14, reuse=3)),
    (pw_dw(1, 8, 12, 12, 8, 3, 1, residual=True, acts=("hardswish", "none")), rw(8, 4, 6, rows=1)),
    (pw_dw(1, 32, 28, 28, 64, 3, 1, acts=("relu", "relu")), rw(8, 14, 14, reuse=4)),  # 32 channels
    (pw_dw(1, 16, 15, 15, 16, 7, 2, acts=("sigmoid", "relu6")), rw(16, 4, 8, rows=4)),  # odd, 7x7
]


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_tiled_definition_matches_float64_on_the_cpu(case, rng: np.random.Generator) -> None:
    spec, tiles = case
    assert not tile_problems(spec, tiles, MAX_SMEM)
    inputs = random_inputs(spec, rng)
    assert_matches_reference(spec, run_llvm(spec, inputs, register_pw_definition(spec, tiles)), inputs)


def ptxas_report(nvcc: str, source: str, folder: Path) -> str:
    path = folder / "kernel.cu"
    path.write_text(source)
    command = [nvcc, "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-w", "-o", str(folder / "k.cubin"), str(path)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stderr


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_kernel_keeps_weights_and_sums_in_registers_and_compiles(case, nvcc: str, tmp_path: Path) -> None:
    spec, tiles = case
    func = fcm_primfunc(spec, tiles, CUDA)
    source = tvm.compile(tvm.IRModule({"main": func}), target=CUDA).mod.imports[0].inspect_source()
    kernels = re.findall(KERNEL, source)
    assert [(threads, name) for threads, name, _ in kernels] == [(str(tiles.threads), "fcm_pw_dw_kernel")]
    pointers = {p.split()[-1] for p in kernels[0][2].split(",")}
    assert pointers == {"x_ptr", "w0_ptr", "b0_ptr", "w1_ptr", "b1_ptr", "out_ptr"} | (
        {"residual_ptr"} if spec.residual else set()
    ), "no global buffer beyond the parameters: the intermediate stays on chip"
    local = dict(re.findall(r"(\w+)_local_ptr\[(\d+)\]", " ".join(re.findall(r"alignas.*;", source))))
    assert local["s0_w"] == str(REGISTER_CHANNELS * spec.in_channels), "a warp's channels' PW weights"
    assert local["s0_acc"] == str(REGISTER_CHANNELS * tiles.patch_rows), "one register tile of sums"
    assert "spill" not in ptxas_report(nvcc, source, tmp_path).replace("0 bytes spill", "")
    body = source[source.index("{", source.index(kernels[0][2]) + len(kernels[0][2])) :]
    assert body.count("__syncthreads()") == 2, "a barrier at each turn and before its DW, none a round"


def test_the_shared_memory_estimate_is_what_tvm_allocates() -> None:
    spec, tiles = CASES[0]
    sizes = allocated_shared(fcm_primfunc(spec, tiles, CUDA), CUDA)
    assert sum(sizes.values()) == shared_bytes(spec, tiles)
    assert padded_pixels(spec, tiles) % (32 * tiles.patch_rows) == 0  # whole rounds of a warp


@pytest.mark.parametrize(
    ("spec", "tiles", "problem"),
    [
        (pw_dw(1, 48, 14, 14, 96, 3, 1), rw(16, 7, 14), "48 input channels > 40"),
        (pw_dw(1, 16, 14, 14, 40, 3, 1), rw(16, 7, 14), "do not divide 40"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), rw(6, 7, 14), "(a multiple of 4)"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), rw(16, 7, 14, reuse=2), "2 channel tiles of 16"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), rw(16, 8, 14), "must divide the output 14x14"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), FcmTiles(16, 7, 14, 256, register_pw=1), "is 128"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), rw(16, 7, 14, rows=9), "patch_rows 9"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), FcmTiles(16, 7, 14, 128, output_rows=7, register_pw=1), "no other"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), BOTH, "choose one"),
        (pw_dw(1, 16, 112, 112, 96, 3, 1), rw(32, 56, 56), "bytes of shared memory >"),
        (FcmSpec(1, 16, 14, 14, (Depthwise(3), Pointwise(32))), rw(16, 7, 14), "PW->DW kernel, not dw_pw"),
    ],
)
def test_register_pw_tiles_name_what_does_not_fit(spec, tiles, problem: str) -> None:
    assert any(problem in found for found in tile_problems(spec, tiles, MAX_SMEM))
    with pytest.raises(FcmError, match=re.escape(problem)):
        fcm_primfunc(spec, tiles, CUDA)


def test_a_tile_whose_sums_tvm_cannot_keep_in_registers_is_refused_at_build_time() -> None:
    """A tile as wide as a 14-wide output with a 16-wide patch: TVM sized the sums of a thread over
    the whole patch (4 KiB of local memory a thread), which would run, slowly; the build says so."""
    spec, tiles = pw_dw(2, 32, 14, 14, 64, 3, 1), rw(8, 14, 14, reuse=4)
    assert not tile_problems(spec, tiles, MAX_SMEM)  # the estimate cannot see it
    with pytest.raises(FcmError, match=r"bytes a thread in local memory, more than its \d+ bytes"):
        fcm_primfunc(spec, tiles, CUDA)


def test_the_pw_result_sits_apart_from_the_patch_only_where_the_block_still_launches() -> None:
    """Apart (static shared memory), TVM's barriers leave the rounds alone; a block of more than
    48 KiB launches only with 48 KiB of it dynamic, so a smaller patch then shares the result's."""
    assert result_scope(pw_dw(32, 24, 56, 56, 144, 3, 1), rw(16, 14, 28, reuse=3)) == "shared"  # 40 KiB
    spec, tiles = pw_dw(32, 32, 56, 56, 128, 3, 1), rw(32, 14, 28)  # 32 KiB of patch, 32 of result
    assert shared_bytes(spec, tiles) > 48 * 1024 and result_scope(spec, tiles) == "shared.dyn"


def test_register_pw_tiles_are_labelled_and_read_back_from_labels() -> None:
    tiles = rw(16, 2, 56, rows=2, reuse=6)
    assert tiles.label == "c16 2x56 t128 s1 p2 r6 rw"
    assert tiles_from_text(tiles.label) == tiles


def test_the_planner_sizes_a_register_pw_tile_as_the_kernel_does() -> None:
    spec, tiles = CASES[3]
    h100 = get_gpu("h100")
    assert not fit_problems(spec, tiles, h100)
    assert planned_shared_bytes(spec, tiles, h100) == shared_bytes(spec, tiles)
    assert accumulators(spec, tiles) == max(REGISTER_CHANNELS * tiles.patch_rows, tiles.tile_h)
