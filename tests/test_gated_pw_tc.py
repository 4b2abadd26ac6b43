"""The gated pointwise kernel (``act(W . (x * gate) + b) [+ residual]`` on tensor cores, fp16): its
definition against float64 on the CPU, its CUDA with nvcc, every project PW of the zoo's
squeeze-excitation models, and the tiles it refuses. WMMA does not run on a CPU: the GPU run is
tests/gpu/check_gated_pw.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tvm

from fcm_tvm.errors import FcmError
from fcm_tvm.reference import gated_pw_reference
from fcm_tvm.schedules.gated_pw_tc import (
    GatedPointwise,
    GatedPwTiles,
    default_tiles,
    fastest_tiles,
    gated_pw_primfunc,
    shared_bytes,
    tile_problems,
)
from models.registry import build_model
from tests.gpu.check_gated_pw import project_pws, random_inputs, tile_choices

from .test_schedules import CUDA, LLVM
from .test_schedules_cuda import compile_cubin

KERNEL = r'extern "C" __global__ void (?:__launch_bounds__\((\d+)\) )?(\w+)\(([^)]*)\)\s*\{'

CASES = [  # (spec, tiles or None for the defaults)
    (GatedPointwise(2, 64, 32, 7, 7, "none", True), None),  # a tile across two images, a residual
    (GatedPointwise(1, 32, 16, 14, 14), GatedPwTiles(16, 64, 64)),  # 4 pixel tiles, the last padded
    (GatedPointwise(2, 72, 40, 6, 6, "relu"), None),  # 72 -> 80 input, 40 -> 48 output channels
    (GatedPointwise(1, 144, 24, 8, 8, "none", True), GatedPwTiles(32, 32, 128)),  # chunks of 16
    (GatedPointwise(1, 96, 64, 5, 5, "silu"), GatedPwTiles(64, 32, 256)),  # 8 warps, 4 x 2
    (GatedPointwise(1, 256, 32, 7, 7, "none", True), GatedPwTiles(32, 64, 128, split=4)),  # 4 slices
    (GatedPointwise(1, 1152, 192, 7, 7, "none", True), None),  # batch 1's deepest: split by default
    (GatedPointwise(2, 256, 64, 7, 7), GatedPwTiles(32, 64, 128, split=2, chunk=64)),  # 64 a step
]


def case_id(case) -> str:
    spec, tiles = case
    return f"{spec.key.replace(' ', '_')}@{(tiles or default_tiles(spec)).label.replace(' ', '_')}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_tiled_definition_matches_float64_on_the_cpu(case, rng: np.random.Generator) -> None:
    spec, tiles = case
    lib = tvm.compile(tvm.IRModule({"main": gated_pw_primfunc(spec, tiles, LLVM)}), target=LLVM)
    inputs = random_inputs(spec, rng)
    out = tvm.runtime.tensor(np.full(spec.output_shape, np.nan, "float16"), tvm.cpu())
    lib["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in inputs], out)
    residual = inputs[4] if spec.residual else None
    expected = gated_pw_reference(*inputs[:4], residual, spec.activation)
    actual = out.numpy().astype(np.float64)
    assert np.isfinite(actual).all()
    assert np.max(np.abs(actual - expected)) / np.max(np.abs(expected)) < 2e-3


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_kernel_multiplies_on_tensor_cores_and_compiles(case, nvcc: str, tmp_path: Path) -> None:
    spec, tiles = case
    tiles = tiles or default_tiles(spec)
    source = tvm.compile(tvm.IRModule({"main": gated_pw_primfunc(spec, tiles, CUDA)}), target=CUDA)
    source = source.mod.imports[0].inspect_source()
    kernels = re.findall(KERNEL, source)
    names = ["fcm_gated_pw_kernel", *(["fcm_gated_pw_kernel_1"] if tiles.split > 1 else [])]
    assert [(threads, name) for threads, name, _ in kernels] == [(str(tiles.threads), name) for name in names]
    pointers = {p.split()[-1] for p in kernels[0][2].split(",")}
    # the scaled input stays on chip: the GEMM kernel writes the output (bias, residual applied),
    # or the slices' partial sums for the second kernel to finish
    finished = {"b_ptr", "out_ptr"} | residual_ptr(spec)
    assert pointers == {"x_ptr", "gate_ptr", "w_ptr"} | ({"acc_ptr"} if tiles.split > 1 else finished)
    assert "nvcuda::wmma::mma_sync" in source
    static_smem = compile_cubin(nvcc, source, tmp_path)  # the float32 accumulators; the rest is dynamic
    assert (static_smem > 0) == (tiles.split == 1) and static_smem <= shared_bytes(spec, tiles)


def residual_ptr(spec: GatedPointwise) -> set[str]:
    return {"residual_ptr"} if spec.residual else set()


def test_every_project_pw_of_the_squeeze_excitation_models_gets_tiles_that_build() -> None:
    specs = [
        spec
        for model in ("efficientnet_b0", "mobilenet_v3_large")
        for spec in project_pws(build_model(model, batch=32))
    ]
    assert len(specs) == 18 and sum(spec.residual for spec in specs) == 8
    for spec in specs:
        func = gated_pw_primfunc(spec, None, CUDA)
        assert func.attrs["tirx.is_scheduled"]


def test_batch_1s_deep_pws_split_their_input_channels_to_fill_the_gpu() -> None:
    assert default_tiles(GatedPointwise(1, 1152, 192, 7, 7), sm_count=132).split == 18  # 6 -> 108 blocks
    assert default_tiles(GatedPointwise(1, 480, 80, 14, 14), sm_count=132).split == 5  # 20 -> 100
    assert default_tiles(GatedPointwise(1, 672, 112, 14, 14), sm_count=132).split == 7  # 28 -> 196
    assert default_tiles(GatedPointwise(32, 1152, 192, 7, 7), sm_count=132).split == 1  # 150 blocks


def test_the_gpu_sweep_times_the_defaults_and_only_tiles_that_fit() -> None:
    spec, smem = GatedPointwise(32, 1152, 192, 7, 7, "none", True), 227 * 1024
    choices = tile_choices(spec, "sweep", smem)
    assert choices[0] == default_tiles(spec) and len(set(choices)) == len(choices)
    assert not any(tile_problems(spec, tiles, smem) for tiles in choices)
    assert {t.split for t in choices} == {1, 2, 3, 4, 6}  # up to 8 blocks an SM: 150 -> 900
    assert {t.chunk for t in choices} == {0, 64, 96, 128}  # 160 does not divide 1152
    assert {(t.split, t.chunk) for t in choices} >= {(4, 96), (6, 64), (3, 128)}  # split and chunk together
    every_split = tile_choices(GatedPointwise(1, 1152, 192, 7, 7), "splits", smem)
    assert [t.split for t in every_split] == [1, 2, 3, 4, 6, 9, 12, 18]


@pytest.mark.parametrize(
    ("tiles", "problem"),
    [
        (GatedPwTiles(24, 64, 128), "channel tile 24 is not whole fragments"),
        (GatedPwTiles(32, 40, 128), "pixel tile 40 is not whole fragments"),
        (GatedPwTiles(32, 64, 100), "100 threads are not whole warps"),
        (GatedPwTiles(16, 16, 128), "4 warps do not tile the (1, 1) fragments"),
        (GatedPwTiles(256, 256, 1024), "of static shared memory"),
        (GatedPwTiles(32, 64, 128, split=3), "split 3 does not divide 64 channels in chunks of 32"),
        (GatedPwTiles(32, 64, 128, chunk=24), "chunk 24 is not whole fragments of 16"),
        (GatedPwTiles(32, 64, 128, chunk=128), "split 1 does not divide 64 channels in chunks of 128"),
    ],
)
def test_tiles_that_do_not_fit_are_an_fcm_error_naming_the_problem(tiles, problem: str) -> None:
    with pytest.raises(FcmError, match=re.escape(problem)):
        gated_pw_primfunc(GatedPointwise(1, 64, 256, 16, 16), tiles, CUDA)


def test_a_bad_spec_or_target_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="activation 'gelu'"):
        GatedPointwise(1, 16, 16, 4, 4, "gelu")
    with pytest.raises(FcmError, match="no gated pointwise kernel for target kind 'vulkan'"):
        gated_pw_primfunc(GatedPointwise(1, 16, 16, 4, 4), None, tvm.target.Target("vulkan"))


@pytest.mark.parametrize(
    "tiles", [GatedPwTiles(), GatedPwTiles(64, 128, 256, split=3, chunk=96), GatedPwTiles(16, 64, 128, 18)]
)
def test_a_label_names_its_tiles_back(tiles: GatedPwTiles) -> None:
    assert GatedPwTiles.from_label(tiles.label) == tiles


@pytest.mark.parametrize("label", ["c32 p64 t128 s1", "c32 p64 x128 s1 tc", "c32 p64 t1.5 tc"])
def test_a_label_that_names_no_tiles_is_refused(label: str) -> None:
    with pytest.raises(ValueError, match="not a gated pointwise tile label"):
        GatedPwTiles.from_label(label)


def test_the_fastest_correct_row_of_each_kernel_gives_its_tiles() -> None:
    rows = [
        {"key": "a", "tiles": "c32 p64 t128 s1 tc", "median_us": 30.0, "ok": True},
        {"key": "a", "tiles": "c32 p64 t128 s4 tc", "median_us": 20.0, "ok": True},
        {"key": "a", "tiles": "c32 p64 t128 s6 tc", "median_us": 10.0, "ok": False},  # wrong: never taken
        {"key": "b", "tiles": "c16 p64 t128 s1 k96 tc", "median_us": 5.0, "ok": True},
    ]
    assert fastest_tiles(rows) == {"a": GatedPwTiles(split=4), "b": GatedPwTiles(16, chunk=96)}
