"""The hand-written CUDA schedules, checked without a GPU.

* CUDA code generation for sm_90 for every supported variant and several tile choices: one
  kernel, its intermediates in ``__shared__`` memory and never in global memory, and the code
  compiles with ``nvcc -arch=sm_90 -cubin`` using no more shared memory than ``tile_problems``
  budgets for it.
* The numbers of the *scheduled* PrimFunc, run on the CPU: every thread loop made serial (the
  schedule's regions, predicates, tails and epilogue placement stay exactly as scheduled), then
  compared with the float64 reference. The GPU run itself is ``tests/gpu/check_fcm_kernels.py``.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm.script import from_source

from fcm_tvm.compiler import walk_modules
from fcm_tvm.errors import FcmError
from fcm_tvm.schedules import (
    Depthwise,
    FcmSpec,
    FcmTiles,
    Pointwise,
    default_tiles,
    fcm_primfunc,
    tile_problems,
)
from fcm_tvm.schedules.cuda import max_shared_memory
from fcm_tvm.schedules.tiles import plan_kernel

from .test_schedules import (
    ALL_VARIANTS,
    MOBILENET_V2_LIKE,
    assert_matches_reference,
    kernel_variants,
    random_inputs,
    spec_id,
)

CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
CUDA_FAST_MATH = {"__expf": "T.exp(", "__fdividef": "T.Div("}  # CUDA-only call: exact TVMScript
MAX_SMEM = max_shared_memory(CUDA)
TILE_CHOICES = (
    FcmTiles(8, 4, 8, 64),
    FcmTiles(16, 8, 4, 128),
    FcmTiles(4, 3, 5, 60),
    FcmTiles(32, 8, 8, 256),
    FcmTiles(6, 7, 7, 98),
)


def other_tiles(spec: FcmSpec, count: int = 2) -> list[FcmTiles]:
    """The first ``count`` of TILE_CHOICES that fit ``spec`` (other than its default)."""
    default = default_tiles(spec, MAX_SMEM)
    fitting = [t for t in TILE_CHOICES if t != default and not tile_problems(spec, t, MAX_SMEM)]
    return fitting[:count]


def cases() -> list[tuple[FcmSpec, FcmTiles | None]]:
    result: list[tuple[FcmSpec, FcmTiles | None]] = [
        (spec, None) for spec in ALL_VARIANTS + MOBILENET_V2_LIKE
    ]
    result += [(spec, tiles) for spec in kernel_variants() for tiles in other_tiles(spec)]
    result += [(spec, tiles) for spec in ALL_VARIANTS + MOBILENET_V2_LIKE for tiles in split_tiles(spec)]
    tiled = UNSTAGED + PATCH_ROWS + OUTPUT_ROWS + WEIGHT_LANES + DEPTHWISE_COLS + OUTPUT_COLS
    return result + tiled + FAST_MATH


F16 = "float16"

# float16 SiLU and sigmoid, on CUDA's fast exp and division (the emulation takes the exact ones).
FAST_MATH: list[tuple[FcmSpec, FcmTiles | None]] = [
    (FcmSpec(1, 24, 14, 14, (Pointwise(48, "silu"), Depthwise(3, 1, None, "sigmoid")), dtype=F16), None),
    (FcmSpec(2, 32, 14, 14, (Depthwise(3, 2, None, "silu"), Pointwise(24, "silu")), dtype=F16), None),
]


# Inputs too wide to stage in shared memory: the 1x1 sums read global memory, padding inlined.
UNSTAGED = [
    (
        FcmSpec(1, 320, 15, 16, (Pointwise(24, "relu6"), Depthwise(3, 2, (0, 1, 1, 0), "relu"))),
        FcmTiles(8, 8, 8, 64),
    ),
    (
        FcmSpec(1, 320, 16, 16, (Pointwise(24, "silu"), Depthwise(5, 1, None, "hardswish"), Pointwise(16))),
        FcmTiles(16, 8, 8, 128, 2),
    ),
    (  # with 2 patch rows per thread
        FcmSpec(1, 320, 16, 16, (Pointwise(24, "silu"), Depthwise(5, 1, None, "hardswish"), Pointwise(16))),
        FcmTiles(16, 8, 8, 128, 2, 2),
    ),
    (  # with the patch's weights in vectors of 2
        FcmSpec(1, 320, 16, 16, (Pointwise(24, "silu"), Depthwise(5, 1, None, "hardswish"), Pointwise(16))),
        FcmTiles(16, 8, 8, 128, 2, patch_lanes=2),
    ),
]


# Register tiles of several rows in the 1x1 patch: whole blocks of rows and a last block that
# overhangs the patch (11 rows in blocks of 4, 9 in blocks of 4), float16 (an unstaged case is in UNSTAGED);
# and the patch's sum unrolled, by a divisor of its channels (8 of 48) and by one that is not (5).
PATCH_ROWS = [
    (
        FcmSpec(2, 48, 7, 7, (Pointwise(96, "silu"), Depthwise(5, 1, None, "silu"))),
        FcmTiles(32, 7, 7, 196, 1, 4),
    ),
    (
        FcmSpec(2, 48, 7, 7, (Pointwise(96, "silu"), Depthwise(5, 1, None, "silu"))),
        FcmTiles(32, 7, 7, 196, 1, 4, 8),
    ),
    (
        FcmSpec(1, 40, 14, 14, (Pointwise(120, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(40))),
        FcmTiles(40, 7, 7, 196, 2, 1, 5),
    ),
    (
        FcmSpec(1, 24, 28, 28, (Pointwise(72, "relu6"), Depthwise(3, 2, None, "relu6"))),
        FcmTiles(24, 4, 4, 128, 1, 3),
    ),
    (
        FcmSpec(
            1,
            40,
            14,
            14,
            (Pointwise(120, "hardswish"), Depthwise(3, 1, None, "hardswish"), Pointwise(40)),
            True,
        ),
        FcmTiles(40, 7, 7, 196, 2, 4),
    ),
    (
        FcmSpec(1, 32, 14, 14, (Pointwise(64, "relu6"), Depthwise(3, 1, None, "relu6")), dtype="float16"),
        FcmTiles(32, 7, 7, 196, 1, 3),
    ),
]


# Several output rows per thread in the last stage's register tile: each kind, split and not,
# with 1x1 patch rows beside them, float16, and a tile whose rows overhang the output (14 of 8+8).
OUTPUT_ROWS = [
    (
        FcmSpec(2, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
        FcmTiles(24, 8, 8, 128, 2, output_rows=2),
    ),
    (
        FcmSpec(1, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
        FcmTiles(24, 8, 8, 64, 1, 2, 4, output_rows=4),
    ),
    (
        FcmSpec(2, 48, 16, 16, (Depthwise(3, 2, None, "relu"), Pointwise(24))),
        FcmTiles(24, 8, 8, 128, output_rows=2),
    ),
    (
        FcmSpec(1, 32, 14, 14, (Pointwise(64, "silu"), Depthwise(5, 1, None, "silu"))),
        FcmTiles(32, 7, 7, 112, output_rows=7),
    ),
    (
        FcmSpec(1, 32, 14, 14, (Depthwise(3, 1, None, "relu6"), Pointwise(32)), dtype="float16"),
        FcmTiles(32, 8, 8, 128, 2, output_rows=4),
    ),
]


# Weights loaded in vectors: the last PW stage's in both kinds that have one, split and not, with
# output and patch rows beside them, 2 lanes, float16; the 1x1 patch's (unstaged: UNSTAGED).
WEIGHT_LANES = [
    (
        FcmSpec(2, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
        FcmTiles(24, 8, 8, 128, 2, weight_lanes=4),
    ),
    (
        FcmSpec(1, 32, 14, 14, (Pointwise(96, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(32)), True),
        FcmTiles(32, 8, 8, 64, 1, 2, output_rows=2, weight_lanes=4),
    ),
    (
        FcmSpec(2, 48, 16, 16, (Depthwise(3, 2, None, "relu"), Pointwise(24))),
        FcmTiles(24, 8, 8, 128, output_rows=2, weight_lanes=2),
    ),
    (
        FcmSpec(1, 48, 14, 14, (Depthwise(5, 1, None, "relu6"), Pointwise(32))),
        FcmTiles(32, 8, 8, 64, 3, weight_lanes=4),
    ),
    (
        FcmSpec(1, 32, 14, 14, (Depthwise(3, 1, None, "relu6"), Pointwise(32)), dtype="float16"),
        FcmTiles(32, 8, 8, 64, 2, weight_lanes=4),
    ),
    (  # the 1x1 patch's weights too: with 2 patch rows, unrolled, and both stages in vectors
        FcmSpec(1, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
        FcmTiles(24, 8, 8, 128, 2, 2, 4, output_rows=2, weight_lanes=2, patch_lanes=2),
    ),
    (
        FcmSpec(2, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
        FcmTiles(24, 8, 8, 128, 2, patch_lanes=4),
    ),
    (
        FcmSpec(1, 24, 16, 16, (Pointwise(96, "silu"), Depthwise(5, 2, None, "silu"))),
        FcmTiles(48, 4, 4, 128, patch_lanes=4),
    ),
    (
        FcmSpec(1, 32, 14, 14, (Pointwise(64, "relu6"), Depthwise(3, 1, None, "relu6")), dtype="float16"),
        FcmTiles(32, 7, 7, 98, patch_lanes=4),
    ),
]


# Chains with a shared depthwise stage feeding a last PW, on which the register-tile knobs below
# are tried: both kinds, split and not, stride 2 and 5x5, float16 with a tile overhanging the
# output (14 of 8 + 8).
SHARED_DEPTHWISE = [
    FcmSpec(2, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
    FcmSpec(1, 48, 16, 16, (Depthwise(5, 2, None, "relu"), Pointwise(24))),
    FcmSpec(1, 32, 14, 14, (Depthwise(3, 1, None, "relu6"), Pointwise(32)), dtype="float16"),
    FcmSpec(1, 32, 14, 14, (Pointwise(96, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(32)), True),
]

# Per chain of SHARED_DEPTHWISE: several depthwise columns per thread (the last with vector loads
# beside), and several output columns per thread, their depthwise results loaded in vectors (2
# and 4 lanes, with weights in vectors, with output rows and depthwise columns beside them).
COLUMN_TILES = [
    (FcmTiles(24, 8, 8, 128, 2, depthwise_cols=2), FcmTiles(24, 8, 8, 128, 2, output_cols=2)),
    (
        FcmTiles(24, 8, 8, 128, output_rows=2, depthwise_cols=4),
        FcmTiles(24, 8, 8, 32, output_cols=4, weight_lanes=4),
    ),
    (FcmTiles(32, 8, 8, 64, 2, depthwise_cols=2), FcmTiles(32, 8, 8, 64, 2, output_cols=2)),
    (
        FcmTiles(32, 8, 8, 64, 1, 2, output_rows=2, weight_lanes=4, patch_lanes=2, depthwise_cols=4),
        FcmTiles(32, 8, 8, 64, 1, 2, output_rows=2, weight_lanes=2, depthwise_cols=2, output_cols=4),
    ),
]
DEPTHWISE_COLS = [(spec, tiles) for spec, (tiles, _) in zip(SHARED_DEPTHWISE, COLUMN_TILES)]
OUTPUT_COLS = [(spec, tiles) for spec, (_, tiles) in zip(SHARED_DEPTHWISE, COLUMN_TILES)]


def split_tiles(spec: FcmSpec) -> list[FcmTiles]:
    """The default tile with its reduction split over 2 and over the most blocks that fit
    (one chunk per block); none for PW->DW, which has no reduction to split."""
    default = default_tiles(spec, MAX_SMEM)
    options = [replace(default, split=split) for split in (2, 3, 4, 8, 16, 32, 64)]
    fitting = [tiles for tiles in options if not tile_problems(spec, tiles, MAX_SMEM)]
    return list(dict.fromkeys(fitting[:1] + fitting[-1:]))


CASE_TAGS = {  # a tile knob above 1, as it shows in a case's id
    "split": "split",
    "patch_rows": "rows",
    "patch_unroll": "unroll",
    "output_rows": "orows",
    "weight_lanes": "lanes",
    "patch_lanes": "patchlanes",
    "depthwise_cols": "dwcols",
    "output_cols": "ocols",
}


def case_id(case: tuple[FcmSpec, FcmTiles | None]) -> str:
    spec, tiles = case
    if tiles is None:
        return f"{spec_id(spec)}-default"
    tag = f"t{tiles.channel_tile}x{tiles.tile_h}x{tiles.tile_w}@{tiles.threads}"
    tag += "".join(
        f"-{name}{getattr(tiles, knob)}" for knob, name in CASE_TAGS.items() if getattr(tiles, knob) > 1
    )
    return f"{spec_id(spec)}-{tag}"


CASES = cases()


def cuda_source(spec: FcmSpec, tiles: FcmTiles | None) -> str:
    func = fcm_primfunc(spec, tiles, CUDA)
    lib = tvm.compile(tvm.IRModule({func.attrs["global_symbol"]: func}), target=CUDA)
    (device_module,) = lib.mod.imports
    return device_module.inspect_source()


def emulate_on_cpu(func: tvm.tirx.PrimFunc) -> tvm.runtime.Module:
    """Build a CUDA-scheduled PrimFunc for the CPU with its thread loops serial.

    Serial thread loops keep the schedule's semantics: each "thread" computes the shared tiles
    of the whole block before reading its part of them, which is what the barriers guarantee on
    the GPU. Shared buffers become ordinary buffers; registers stay per-iteration locals. CUDA's
    fast-math functions (float16 kernels' sigmoid) become their exact twins.
    """
    source = tvm.IRModule({"main": func}).script()
    for cuda_only, exact in CUDA_FAST_MATH.items():
        source = source.replace(f'T.call_pure_extern("float32", "{cuda_only}", ', exact)
    source = re.sub(
        r'T\.thread_binding\((\d+), thread="[^"]+"(?:, annotations=\{[^}]*\})?\)', r"T.serial(\1)", source
    )
    source = re.sub(r', scope="shared(?:\.dyn)?"', "", source)
    source = source.replace('"tirx.is_scheduled": True, ', "")
    assert "thread_binding" not in source and 'scope="shared' not in source
    return tvm.compile(from_source(source), target="llvm")


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_every_thread_loop_spans_the_kernels_thread_count(case) -> None:
    """A loop bound to fewer lanes than the kernel launches is not guarded by TVM: the surplus
    threads would run it with out-of-range indices (the serial CPU emulation cannot see this)."""
    spec, tiles = case
    script = fcm_primfunc(spec, tiles, CUDA).script()
    extents = {int(n) for n in re.findall(r'T\.thread_binding\((\d+), thread="threadIdx\.x"', script)}
    launched = re.search(r"__launch_bounds__\((\d+)\)", cuda_source(spec, tiles))
    assert len(extents) == 1, f"threadIdx.x loops of different extents: {sorted(extents)}"
    assert launched is None or int(launched.group(1)) == extents.pop()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_scheduled_kernel_matches_float64_reference_on_cpu(case, rng: np.random.Generator) -> None:
    spec, tiles = case
    lib = emulate_on_cpu(fcm_primfunc(spec, tiles, CUDA))
    inputs = random_inputs(spec, rng)
    device = tvm.cpu()
    out = tvm.runtime.tensor(np.full(spec.output.as_tuple(), np.nan, spec.dtype), device)
    lib["main"](*[tvm.runtime.tensor(a, device) for a in inputs], out)
    assert_matches_reference(spec, out.numpy(), inputs)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_cuda_kernel_keeps_intermediates_on_chip_and_compiles(case, nvcc: str, tmp_path: Path) -> None:
    spec, tiles = case
    source = cuda_source(spec, tiles)
    kernels = re.findall(
        r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)\s*\{', source
    )
    plan = plan_kernel(spec, tiles or default_tiles(spec, MAX_SMEM), MAX_SMEM)
    name = f"fcm_{spec.kind}_kernel"
    if plan.tiles.split == 1:
        assert [name for name, _ in kernels] == [name], "exactly one kernel"
    else:
        assert [name for name, _ in kernels] == [name, f"{name}_1"], "the slices' kernel, then their sum"
    pointers = [p.split()[-1] for p in kernels[0][1].split(",") if "*" in p]
    beyond = [p for p in pointers if not re.fullmatch(r"(x|w\d|b\d|residual|s\d_out)_ptr", p)]
    workspace = [] if plan.tiles.split == 1 else [f"s{len(spec.stages) - 1}_acc_rf_ptr"]
    assert beyond == workspace, "no global buffer beyond the parameters (and a split's partial sums)"
    assert "__shared__" in source
    cubin_smem = compile_cubin(nvcc, source, tmp_path)
    if plan.scope == "shared":
        assert 0 < cubin_smem <= plan.shared_bytes, (
            f"{cubin_smem} bytes of shared memory, {plan.shared_bytes} budgeted"
        )


def compile_cubin(nvcc: str, source: str, folder: Path) -> int:
    """Compile with nvcc for sm_90; the static shared memory ptxas reports."""
    path = folder / "kernel.cu"
    path.write_text(source)
    result = subprocess.run(
        [nvcc, "-arch=sm_90", "-cubin", "-Xptxas", "-v", "-w", "-o", str(folder / "kernel.cubin"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (folder / "kernel.cubin").stat().st_size > 0
    found = re.search(r"(\d+) bytes smem", result.stderr)
    return int(found.group(1)) if found else 0


def test_tiles_whose_shared_memory_tvm_allocates_beyond_the_gpu_are_an_fcm_error() -> None:
    """The plan bounds this tile at 210 KB, under the H100's 227 KB; TVM allocates 538 KB, which
    failed at launch in the batch-32 sweep. The build now says so, and the pass leaves the chain
    unfused."""
    spec = FcmSpec(32, 16, 112, 112, (Pointwise(64, "relu"), Depthwise(3, 2, (1, 1, 1, 1), "relu")))
    tiles = FcmTiles(16, 16, 32, 512)
    assert not tile_problems(spec, tiles, MAX_SMEM)
    with pytest.raises(FcmError, match=r"TVM allocates 537664 bytes of shared memory per block, more than"):
        fcm_primfunc(spec, tiles, CUDA)


def test_a_patch_sum_unrolled_by_four_loads_four_channels_per_loop_step() -> None:
    spec = FcmSpec(1, 48, 7, 7, (Pointwise(96, "silu"), Depthwise(5, 1, None, "silu")))
    rolled = cuda_source(spec, FcmTiles(32, 7, 7, 196))
    unrolled = cuda_source(spec, FcmTiles(32, 7, 7, 196, patch_unroll=4))
    assert re.search(r"for \(int \w+ = 0; \w+ < 48; \+\+\w+\)", rolled)
    assert re.search(r"for \(int \w+ = 0; \w+ < 12; \+\+\w+\)", unrolled)


@pytest.mark.parametrize(
    ("dtype", "lanes", "vector"),
    [("float32", 4, "float4"), ("float32", 2, "float2"), ("float16", 4, "half4")],
)
def test_weights_in_vectors_are_read_from_shared_memory_a_vector_per_load(dtype, lanes, vector) -> None:
    """A thread's 12 weights of a step: 12 scalar loads, or 12 / lanes vector loads."""
    spec = FcmSpec(
        1, 24, 14, 14, (Pointwise(72, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), dtype=dtype
    )
    scalar = cuda_source(spec, FcmTiles(24, 8, 8, 128))
    vectors = cuda_source(spec, FcmTiles(24, 8, 8, 128, weight_lanes=lanes))
    vector_load = rf"\*\({vector}\*\)\(\w+_local_ptr \+ \d+\) = \*\({vector}\*\)\(\w+_shared"
    assert not re.search(vector_load, scalar)
    assert len(re.findall(vector_load, vectors)) >= 12 // lanes


@pytest.mark.parametrize(
    ("dtype", "cols", "vector"),
    [("float32", 4, "float4"), ("float32", 2, "float2"), ("float16", 2, "half2")],
)
def test_output_columns_read_their_depthwise_results_a_vector_per_load(dtype, cols, vector) -> None:
    """A thread's results of one step (one channel, its rows and ``cols`` columns): a vector per row."""
    spec = FcmSpec(1, 48, 16, 16, (Depthwise(3, 1, None, "relu"), Pointwise(24)), dtype=dtype)
    scalar = cuda_source(spec, FcmTiles(24, 8, 8, 64))
    vectors = cuda_source(spec, FcmTiles(24, 8, 8, 64, output_cols=cols))
    vector_load = rf"\*\({vector}\*\)\(\w+_local_ptr( \+ \d+)?\) = \*\({vector}\*\)\(\w+_shared"
    assert not re.search(vector_load, scalar)
    assert re.search(vector_load, vectors)


def test_depthwise_columns_share_each_weight_load_in_the_unrolled_taps() -> None:
    """One thread's 4 columns of a 3x3 window: the taps loop outside, so each weight is read once
    per tap for the 4 sums (9 distinct weight loads per step, not 36)."""
    spec = FcmSpec(1, 48, 16, 16, (Depthwise(3, 1, None, "relu"), Pointwise(24)))
    source = cuda_source(spec, FcmTiles(24, 8, 8, 128, output_rows=2, depthwise_cols=4))
    sums = re.findall(r"(s0_acc_local_ptr\[\d\]) = \(\1 \+ \(\w+\[[^]]+\] \* (\w+\[[^]]+\])\)\)", source)
    columns_per_weight = Counter(weight for _, weight in sums)
    assert len(sums) >= 12 and set(columns_per_weight.values()) == {4}


def test_large_tiles_use_dynamic_shared_memory(nvcc: str, tmp_path: Path) -> None:
    spec = FcmSpec(1, 96, 28, 28, (Pointwise(576, "relu6"), Depthwise(3, 1, None, "relu6")))
    tiles = FcmTiles(64, 8, 8, 256)
    assert plan_kernel(spec, tiles, MAX_SMEM).scope == "shared.dyn"
    source = cuda_source(spec, tiles)
    assert "extern __shared__" in source
    compile_cubin(nvcc, source, tmp_path)


def test_fp16_kernel_stores_half_and_accumulates_in_float() -> None:
    spec = FcmSpec(1, 16, 14, 14, (Depthwise(3, 1, None, "relu6"), Pointwise(32, "none")), dtype="float16")
    source = cuda_source(spec, None)
    assert re.search(r"__shared__ alignas\(\d+\) half ", source), "fp16 intermediates in shared memory"
    assert re.search(r"\bfloat s1_acc_local\w*\[", source), "fp32 accumulators"


def test_float16_sigmoids_take_the_special_function_unit_and_float32_ones_stay_exact() -> None:
    def silu(dtype: str) -> FcmSpec:
        return FcmSpec(1, 24, 14, 14, (Pointwise(48, "silu"), Depthwise(3, 1, None, "silu")), dtype=dtype)

    fast, exact = cuda_source(silu("float16"), None), cuda_source(silu("float32"), None)
    assert "__expf(" in fast and "__fdividef(" in fast and not re.search(r"\bexpf\(", fast)
    assert "__expf(" not in exact and re.search(r"\bexpf\(", exact)


def test_every_depthwise_variant_of_a_kind_gets_the_same_rule() -> None:
    """The rule is picked by kind alone: stride, kernel and padding change only the tile geometry."""
    for kernel, stride in ((3, 1), (7, 2)):
        spec = FcmSpec(1, 8, 16, 16, (Depthwise(kernel, stride, None, "relu"), Pointwise(16)))
        assert "s0_pad_shared" in cuda_source(spec, None)


@pytest.mark.parametrize("split", [1, 4])
def test_stock_relax_cuda_pipeline_keeps_the_kernel_whole(split: int) -> None:
    """FuseOps must not fuse the scheduled kernel with a neighbour, nor dlight reschedule it;
    a split's workspace is allocated by the host code."""
    from tvm import relax

    spec = FcmSpec(1, 16, 14, 14, (Depthwise(3, 1, None, "relu6"), Pointwise(32)))
    tiles = FcmTiles(16, 7, 7, 49, split)
    builder = relax.BlockBuilder()
    params = [
        relax.Var(f"p{i}", relax.TensorType(shape, spec.dtype)) for i, shape in enumerate(spec.param_shapes())
    ]
    with builder.function("main", params):
        with builder.dataflow():
            kernel = builder.add_func(fcm_primfunc(spec, tiles, CUDA), "fcm_dw_pw")
            out_type = relax.TensorType(spec.output.as_tuple(), spec.dtype)
            fused = builder.emit(relax.call_tir(kernel, params, out_type))
            doubled = builder.emit_output(relax.op.add(fused, fused))
        builder.emit_func_output(doubled)
    executable = tvm.compile(builder.get(), target=CUDA)
    (source,) = [m.inspect_source() for m in walk_modules(executable.mod) if m.kind == "cuda"]
    assert "fcm_dw_pw_kernel(" in source and "__shared__" in source
    body = re.search(r"fcm_dw_pw_kernel\([^)]*\)\s*\{", source).end()
    fcm_kernel = source[body:].split('extern "C"', 1)[0]
    assert "s0_out_shared" in fcm_kernel, "the kernel body is the hand schedule, not a fused rewrite"
    host = next(m for m in walk_modules(executable.mod) if m.kind == "llvm").inspect_source("ll")
    assert ("TVMBackendAllocWorkspace" in host) == (split > 1)


def test_wide_inputs_are_read_from_global_memory_and_the_rest_staged() -> None:
    for spec, tiles in UNSTAGED:
        assert not plan_kernel(spec, tiles, MAX_SMEM).staged_input, spec_id(spec)
    assert all(
        plan_kernel(spec, tiles or default_tiles(spec, MAX_SMEM), MAX_SMEM).staged_input
        for spec, tiles in CASES
        if spec.kind != "dw_pw" and (spec, tiles) not in UNSTAGED
    )


def test_a_staged_pw_dw_kernel_reads_its_input_only_to_copy_it_to_shared_memory() -> None:
    spec = FcmSpec(1, 112, 14, 14, (Pointwise(672, "hardswish"), Depthwise(3, 1, None, "hardswish")))
    source = cuda_source(spec, FcmTiles(32, 7, 7, 196))
    lines = source.splitlines()
    reads = [number for number, line in enumerate(lines) if "x_ptr[" in line]
    first_barrier = next(number for number, line in enumerate(lines) if "__syncthreads()" in line)
    assert reads and max(reads) < first_barrier, "the input is read by the copy before the first barrier"
