"""The PW->DW->PW and PW->DW kernels over whole images (``FcmTiles.image``): their CUDA against
float64 on the CPU (every thread of a block at once, :func:`.cuda_emulator.run_blocks`) and with
nvcc, the tiles they take, and how the table reads them. The GPU check runs the same kernels there
(tests/gpu/check_fcm_kernels.py splits --image and --image-dw-runs)."""

from __future__ import annotations

import re
from dataclasses import replace

import numpy as np
import pytest
import tvm

from fcm_tvm.benchmarks.measured_table import tiles_from_text
from fcm_tvm.schedules import Depthwise, FcmSpec, FcmTiles, Pointwise, fcm_primfunc, tile_problems
from fcm_tvm.schedules.cuda_image import (
    SUM_THREADS,
    blocks,
    chunk,
    projects,
    register_bytes,
    shared_bytes,
)
from fcm_tvm.schedules.layout import STATIC_SMEM, ceil_div

from . import cuda_emulator
from .test_schedules import CUDA, assert_matches_reference, random_inputs
from .test_schedules_register_pw import KERNEL, ptxas_report
from .test_schedules_tensor_cores import case_id

MAX_SMEM = 227 * 1024


def block(
    n, c, size, mid, out, kernel, stride=1, residual=False, acts=("relu6", "relu6", "none"), dtype="float32"
):
    stages = (Pointwise(mid, acts[0]), Depthwise(kernel, stride, None, acts[1]), Pointwise(out, acts[2]))
    return FcmSpec(n, c, size, size, stages, residual, dtype)


def head(n, c, size, mid, kernel, stride=1, residual=False, acts=("silu", "silu"), dtype="float32"):
    stages = (Pointwise(mid, acts[0]), Depthwise(kernel, stride, None, acts[1]))
    return FcmSpec(n, c, size, size, stages, residual, dtype)


def im(spec: FcmSpec, threads: int, split: int, mid_per_thread: int, pixels: int, dw_runs=False) -> FcmTiles:
    out = spec.output
    dw = pixels if dw_runs else 1  # the DW a run of pixels a thread, or a pixel
    return FcmTiles(
        out.c, out.h, out.w, threads, split, output_cols=pixels, image=mid_per_thread, depthwise_cols=dw
    )


GATES = ("silu", "sigmoid", "relu")  # every activation the zoo has, across the cases
CASES = [  # small versions of the deep blocks it is for: 7x7 and 14x14, stride 1 and 2
    (spec := block(2, 32, 7, 64, 32, 5, residual=True), im(spec, 224, 2, 1, 7)),
    (spec := block(2, 8, 14, 32, 32, 3, 2, acts=("hardswish", "hardswish", "none")), im(spec, 224, 2, 2, 7)),
    (spec := block(1, 12, 14, 48, 24, 5, dtype="float16", acts=GATES), im(spec, 224, 1, 2, 7)),
    (spec := block(3, 32, 7, 32, 32, 3, residual=True, dtype="float16"), im(spec, 224, 1, 1, 7)),
    (spec := block(1, 8, 28, 32, 8, 3, residual=True), im(spec, 448, 2, 4, 7)),  # dynamic shared memory
    (spec := block(2, 32, 7, 64, 32, 5, residual=True), im(spec, 224, 2, 1, 7, dw_runs=True)),
    (spec := block(2, 8, 14, 32, 32, 3, 2, acts=GATES), im(spec, 224, 2, 2, 7, dw_runs=True)),
]
HEADS = [  # the squeeze-excitation blocks' PW->DW heads: no projection, no second kernel
    (spec := head(2, 16, 7, 64, 5), im(spec, 224, 2, 1, 7)),
    (
        spec := head(2, 8, 14, 64, 3, 2, acts=("hardswish", "hardswish"), dtype="float16"),
        im(spec, 224, 2, 4, 7),
    ),
    (spec := head(1, 32, 7, 32, 3, residual=True, acts=("relu", "none")), im(spec, 224, 1, 1, 7)),
    (spec := head(1, 8, 28, 64, 3), im(spec, 448, 1, 4, 7)),  # dynamic shared memory
    (spec := head(1, 8, 28, 32, 5), im(spec, 448, 2, 4, 7, dw_runs=True)),  # and the DW by runs
    (spec := head(2, 64, 7, 64, 5, residual=True), im(spec, 224, 1, 2, 7, dw_runs=True)),
    (spec := head(1, 8, 14, 32, 5, 2, dtype="float16"), im(spec, 224, 1, 1, 7, dw_runs=True)),
]


def cuda_source(spec: FcmSpec, tiles: FcmTiles) -> str:
    func = fcm_primfunc(spec, tiles, CUDA)
    return tvm.compile(tvm.IRModule({"main": func}), target=CUDA).mod.imports[0].inspect_source()


@pytest.mark.skipif(cuda_emulator.missing() is not None, reason=str(cuda_emulator.missing()))
@pytest.mark.parametrize("case", CASES + HEADS, ids=case_id)
def test_the_generated_cuda_matches_float64_on_the_cpu(case, rng: np.random.Generator, tmp_path) -> None:
    spec, tiles = case
    assert not tile_problems(spec, tiles, MAX_SMEM)
    inputs = random_inputs(spec, rng)
    names = ["x", "w0", "b0", "w1", "b1", "w2", "b2"][: 1 + 2 * len(spec.stages)]
    names += ["residual"] if spec.residual else []
    out = spec.output
    buffers = dict(zip(names, inputs)) | {
        "out": np.full(out.as_tuple(), np.nan, spec.dtype),
        "w0_rows": inputs[1].reshape(-1),
    }
    launches = [(blocks(spec, tiles), tiles.threads)]
    if projects(spec):  # the slices, and the kernel that adds them up
        buffers["w2_rows"] = inputs[5].reshape(-1)
        buffers["slices"] = np.full((tiles.split, out.n, out.c, out.h * out.w), np.nan, np.float32)
        launches.append((ceil_div(out.numel, SUM_THREADS), SUM_THREADS))
    cuda_emulator.run_blocks(cuda_source(spec, tiles), tmp_path, buffers, launches)
    assert not projects(spec) or not np.isnan(buffers["slices"]).any(), "every slice of every output written"
    assert not np.isnan(buffers["out"]).any(), "every output element written"
    assert_matches_reference(spec, buffers["out"], inputs)


@pytest.mark.parametrize("case", CASES + HEADS, ids=case_id)
def test_the_kernel_compiles_without_spilling_and_keeps_its_shared_bound(case, nvcc: str, tmp_path) -> None:
    spec, tiles = case
    source = cuda_source(spec, tiles)
    kernels = re.findall(KERNEL, source)
    expected = [(str(tiles.threads), f"fcm_{spec.kind}_kernel")]
    if projects(spec):  # the sums of the slices, then a kernel that adds them up
        expected.append((str(SUM_THREADS), "fcm_pw_dw_pw_kernel_1"))
    assert [(threads, name) for threads, name, _ in kernels] == expected
    report = ptxas_report(nvcc, source, tmp_path)
    assert "spill" not in report.replace("0 bytes spill", "")
    smem = [int(n) for n in re.findall(r"(\d+) bytes smem", report)]
    dynamic = shared_bytes(spec, tiles) > STATIC_SMEM  # sized at launch, not in the cubin
    assert ("extern __shared__" in source) == dynamic
    assert smem == ([] if dynamic else [shared_bytes(spec, tiles)])
    assert register_bytes(spec, tiles) <= 4 * 160


def test_the_deep_blocks_it_is_for_fit_and_the_table_reads_their_tiles_back() -> None:
    mnasnet = block(32, 192, 7, 1152, 192, 5, residual=True, acts=("relu", "relu", "none"))
    tiles = im(mnasnet, 224, 6, 2, 7)
    assert not tile_problems(mnasnet, tiles, MAX_SMEM)
    assert chunk(mnasnet, tiles) == 64 and blocks(mnasnet, tiles) == 192
    assert tiles.label == "c192 7x7 t224 s6 x7 im2"
    assert tiles_from_text(tiles.label) == tiles
    strided = block(32, 96, 14, 576, 192, 5, 2)
    assert not tile_problems(strided, im(strided, 224, 6, 4, 7), MAX_SMEM)


FITS = block(1, 16, 7, 64, 32, 3)
BIG = block(1, 8, 28, 32, 8, 3)  # a chunk of 16 channels: 98 KiB of expansion and DW result


@pytest.mark.parametrize(
    ("spec", "tiles", "problem"),
    [
        (FITS, FcmTiles(32, 7, 4, 224, output_cols=7, image=1), "the whole output"),
        (FITS, im(FITS, 224, 1, 1, 4), "do not divide the image"),
        (FITS, im(FITS, 96, 1, 1, 7), "a multiple of the 7"),
        (FITS, im(FITS, 224, 3, 1, 7), "do not divide 64 / split 3"),
        (FITS, replace(im(FITS, 224, 1, 1, 7), depthwise_cols=2), "its run of 7 pixels"),
        (BIG, im(BIG, 448, 1, 4, 7, dw_runs=True), "DW by runs keeps to 49152 bytes"),
        (block(1, 16, 7, 64, 20, 3), im(block(1, 16, 7, 64, 20, 3), 224, 1, 1, 7), "do not divide 20"),
        (FITS, im(FITS, 224, 1, 1, 7), ""),
    ],
    ids=["tile", "pixels", "threads", "split", "dw-outputs", "dw-runs-dynamic", "outputs", "fits"],
)
def test_tiles_that_do_not_fit_are_refused_with_the_reason(
    spec: FcmSpec, tiles: FcmTiles, problem: str
) -> None:
    found = tile_problems(spec, tiles, MAX_SMEM)
    if problem:
        assert any(problem in reason for reason in found), found
    else:
        assert not found
