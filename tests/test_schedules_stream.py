"""The DW->PW and PW->DW kernels streamed through registers and warp shuffles (``FcmTiles.stream``):
where each lane's DW taps come from, their CUDA against float64 (run on the CPU by :mod:`.cuda_emulator`) and
with nvcc, the tiles it takes, and how the table and planner see it. The GPU check runs the same
kernels there (tests/gpu/check_fcm_kernels.py splits --stream)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tvm

from fcm_tvm.benchmarks.measured_table import tiles_from_text
from fcm_tvm.errors import FcmError
from fcm_tvm.gpus import get_gpu
from fcm_tvm.planner.tiles import accumulators, fit_problems
from fcm_tvm.planner.tiles import shared_bytes as planned_shared_bytes
from fcm_tvm.schedules import Depthwise, FcmSpec, FcmTiles, Pointwise, fcm_primfunc, tile_problems
from fcm_tvm.schedules.cuda import allocated
from fcm_tvm.schedules.stream import register_bytes
from fcm_tvm.schedules.warp_lanes import WARP, LaneLayout, lane_layout, strip_grid, tap_source

from . import cuda_emulator
from .test_schedules import CUDA, assert_matches_reference, random_inputs
from .test_schedules_register_pw import KERNEL, ptxas_report, pw_dw
from .test_schedules_tensor_cores import case_id

MAX_SMEM = 227 * 1024


def st(channels: int, warps: int, tile_h: int, tile_w: int, cols: int = 1, lane_rows: int = 1) -> FcmTiles:
    threads = WARP * warps
    return FcmTiles(
        channels * warps, tile_h, tile_w, threads, output_cols=cols, stream=channels, lane_rows=lane_rows
    )


CASES = [  # the early heads it is for, and every window shape, stride and column count
    (pw_dw(2, 16, 16, 16, 32, 3, 2), st(4, 2, 4, 8)),
    (pw_dw(1, 24, 14, 14, 48, 5, 1, acts=("silu", "silu"), dtype="float32"), st(2, 3, 7, 14, cols=2)),
    (pw_dw(1, 8, 12, 12, 8, 3, 1, residual=True, acts=("hardswish", "none")), st(4, 2, 4, 12, cols=4)),
    (pw_dw(1, 16, 15, 15, 16, 7, 2, acts=("sigmoid", "relu6")), st(4, 1, 4, 8)),  # odd input, 7x7
    (pw_dw(1, 40, 28, 28, 120, 5, 2, acts=("hardswish", "hardswish")), st(2, 2, 2, 14)),
    (pw_dw(1, 32, 28, 28, 64, 3, 2), st(4, 2, 2, 14, lane_rows=2)),  # a 14-wide output: two rows a warp
    (pw_dw(1, 16, 14, 14, 32, 3, 1, dtype="float32"), st(4, 1, 2, 14, lane_rows=2)),
]


def dw_pw(n, c, h, w, out, kernel, stride, residual=False, acts=("relu6", "none"), dtype="float16"):
    stages = (Depthwise(kernel, stride, None, acts[0]), Pointwise(out, acts[1]))
    return FcmSpec(n, c, h, w, stages, residual, dtype)


DW_PW_CASES = [  # the first blocks' DW->PW (32 -> 16 at 112x112) and the other shapes
    (dw_pw(1, 32, 16, 16, 16, 3, 1), st(8, 2, 4, 16)),
    (dw_pw(2, 24, 14, 14, 40, 5, 2, acts=("silu", "none"), dtype="float32"), st(4, 2, 7, 7)),
    (dw_pw(1, 16, 12, 12, 16, 3, 1, residual=True, acts=("hardswish", "relu")), st(4, 2, 4, 12, cols=2)),
    (dw_pw(1, 8, 10, 10, 16, 7, 1, acts=("sigmoid", "relu6")), st(8, 2, 2, 10, cols=2)),
    (dw_pw(2, 48, 14, 14, 24, 3, 1), st(8, 1, 2, 14, lane_rows=2)),
]
WINDOWS = [Depthwise(k, s, pads) for k in (3, 5, 7) for s in (1, 2) for pads in (None, (0, 0, k - 1, k - 1))]


@pytest.mark.parametrize("dw", WINDOWS, ids=lambda dw: f"k{dw.kernel}s{dw.stride}p{dw.pads[1]}")
@pytest.mark.parametrize("cols", [1, 2, 4])
@pytest.mark.parametrize("segment", [WARP, WARP // 2])
def test_every_tap_of_a_written_column_comes_from_a_lane_of_its_segment_holding_that_input_column(
    dw: Depthwise, cols: int, segment: int
) -> None:
    lanes = lane_layout(dw, cols, segment)
    assert lanes.writing_lanes >= segment // 4, "a segment still writes a quarter of its lanes' columns"
    for lane in range(lanes.left, segment - lanes.right):  # the lanes that write
        first_output = (lane - lanes.left) * cols
        for u in range(cols):
            for kx in range(dw.kernel):
                offset, column = tap_source(dw, cols, u, kx)
                source = lane + offset
                assert 0 <= source < segment
                assert 0 <= column < lanes.columns
                held = dw.stride * (first_output + offset * cols) + column  # relative to the segment
                assert held == dw.stride * (first_output + u) + kx - dw.pads[1]


def test_edge_lanes_only_lend_columns_where_a_window_reaches_past_the_lane() -> None:
    assert lane_layout(Depthwise(3, 2), 1) == LaneLayout(columns=2, left=1, right=0)
    assert (lane_layout(Depthwise(3, 1), 1).left, lane_layout(Depthwise(3, 1), 1).right) == (1, 1)
    assert lane_layout(Depthwise(3, 1), 4).writing_lanes == 30  # 120 columns a warp
    assert lane_layout(Depthwise(7, 2), 1).writing_lanes == 29
    assert lane_layout(Depthwise(3, 1, (0, 0, 2, 2)), 1).left == 0  # no left padding: no left lane


def cuda_source(spec: FcmSpec, tiles: FcmTiles) -> str:
    func = fcm_primfunc(spec, tiles, CUDA)
    return tvm.compile(tvm.IRModule({"main": func}), target=CUDA).mod.imports[0].inspect_source()


@pytest.mark.skipif(cuda_emulator.missing() is not None, reason=str(cuda_emulator.missing()))
@pytest.mark.parametrize("case", CASES + DW_PW_CASES, ids=case_id)
def test_the_generated_cuda_matches_float64_lane_by_lane_on_the_cpu(
    case, rng: np.random.Generator, tmp_path
) -> None:
    spec, tiles = case
    inputs = random_inputs(spec, rng)
    names = ["x", "w0", "b0", "w1", "b1"] + (["residual"] if spec.residual else [])
    buffers = dict(zip(names, inputs)) | {"out": np.full(spec.output.as_tuple(), np.nan, spec.dtype)}
    blocks, warps = strip_grid(spec, tiles)
    cuda_emulator.run(cuda_source(spec, tiles), tmp_path, buffers, blocks, warps)
    assert not np.isnan(buffers["out"]).any(), "every output element written"
    assert_matches_reference(spec, buffers["out"], inputs)


@pytest.mark.parametrize("case", CASES + DW_PW_CASES, ids=case_id)
def test_the_kernel_keeps_everything_in_registers_and_compiles(case, nvcc: str, tmp_path) -> None:
    spec, tiles = case
    assert not tile_problems(spec, tiles, MAX_SMEM)
    source = cuda_source(spec, tiles)
    kernels = re.findall(KERNEL, source)
    assert [(threads, name) for threads, name, _ in kernels] == [
        (str(tiles.threads), f"fcm_{spec.kind}_kernel")
    ]
    body = source[source.index(kernels[0][2]) :]
    assert "__shared__" not in body and "__syncthreads" not in body
    (window,) = (stage for stage in spec.stages if isinstance(stage, Depthwise))
    assert "__shfl_" in body or lane_layout(window, tiles.output_cols).writing_lanes == WARP
    sizes = allocated(fcm_primfunc(spec, tiles, CUDA), CUDA)
    assert set(sizes) == {"local"} and sizes["local"] <= register_bytes(spec, tiles)
    assert "spill" not in ptxas_report(nvcc, source, tmp_path).replace("0 bytes spill", "")


@pytest.mark.parametrize(
    ("spec", "tiles", "problem"),
    [
        (pw_dw(1, 48, 14, 14, 96, 3, 1), st(4, 2, 7, 14), "4 channels x 48 inputs > 128"),
        (pw_dw(1, 16, 14, 14, 40, 3, 1), st(4, 4, 7, 14), "multiple of 4 dividing 40"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), FcmTiles(16, 7, 14, 256, stream=4), "a warp per 4 of the 16"),
        (pw_dw(1, 16, 56, 56, 48, 3, 1), st(4, 2, 7, 56), "tile width 56"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), st(4, 2, 8, 14), "must divide the output 14x14"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), st(4, 2, 7, 12, cols=3), "output_cols 3"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), FcmTiles(8, 7, 14, 64, output_rows=7, stream=4), "no other"),
        (pw_dw(1, 16, 14, 14, 48, 3, 1), FcmTiles(8, 7, 14, 64, register_pw=1, stream=4), "choose one"),
        (pw_dw(1, 64, 28, 28, 128, 3, 1), st(2, 1, 14, 28, cols=2), "792 bytes of registers a thread > 640"),
        (
            FcmSpec(1, 16, 14, 14, (Pointwise(32), Depthwise(3), Pointwise(16))),
            st(4, 2, 7, 14),
            "stream kernels only for dw_pw and pw_dw, not pw_dw_pw",
        ),
        (dw_pw(1, 16, 14, 14, 48, 3, 1), st(16, 1, 7, 14, cols=2), "bytes of registers a thread > 640"),
    ],
)
def test_stream_tiles_name_what_does_not_fit(spec, tiles, problem: str) -> None:
    assert any(problem in found for found in tile_problems(spec, tiles, MAX_SMEM))
    with pytest.raises(FcmError, match=re.escape(problem)):
        fcm_primfunc(spec, tiles, CUDA)


def test_stream_tiles_are_labelled_and_read_back_from_labels() -> None:
    tiles = st(4, 2, 4, 56, cols=2)
    assert tiles.label == "c8 4x56 t64 s1 x2 st4"
    assert tiles_from_text(tiles.label) == tiles


def test_the_planner_sizes_a_stream_tile_as_the_kernel_does() -> None:
    spec, tiles = CASES[0]
    h100 = get_gpu("h100")
    assert not fit_problems(spec, tiles, h100)
    assert planned_shared_bytes(spec, tiles, h100) == 0
    assert accumulators(spec, tiles) == tiles.stream * tiles.tile_h * tiles.output_cols
