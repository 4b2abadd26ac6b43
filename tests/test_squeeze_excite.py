"""The squeeze-excitation kernel (the means, fc1, activation, fc2, gate and the product in one call):
its definition against float64 on the CPU, its CUDA with nvcc (the means' kernel and one more, or
two with the hidden vector apart), its tiles, and the errors it raises. The GPU run is
tests/gpu/check_squeeze_excite.py."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tvm

from fcm_tvm.errors import FcmError
from fcm_tvm.reference import excite_gate_reference, excite_reference
from fcm_tvm.schedules.squeeze_excite import (
    SeTiles,
    SqueezeExcite,
    default_tiles,
    definition,
    excite_primfunc,
    row_threads,
    tile_problems,
)
from tests.gpu.check_squeeze_excite import random_inputs

from .test_schedules import CUDA
from .test_schedules_cuda import compile_cubin

LLVM = tvm.target.Target("llvm")
TOLERANCE = {"float32": 1e-5, "float16": 1e-2}  # max |error| / max |reference|

CASES = [  # (spec, tiles or None for the defaults)
    (SqueezeExcite(1, 1152, 7, 7, 48, "silu", "sigmoid", "float16"), None),  # EfficientNet-B0's last
    (SqueezeExcite(1, 72, 28, 28, 24, "relu", "hardsigmoid", "float16"), None),  # MobileNetV3's first
    (SqueezeExcite(2, 40, 9, 7, 10, "silu", "hardsigmoid", "float32"), None),  # batch 2, odd image
    (SqueezeExcite(1, 32, 64, 64, 8, "relu", "sigmoid", "float32"), None),  # pixel tiles of one channel
    (SqueezeExcite(1, 16, 56, 56, 4, "silu", "sigmoid", "float16"), None),  # 8 halves per access
    (SqueezeExcite(2, 8, 112, 112, 2, "silu", "sigmoid", "float16"), None),  # a block sums each image
    (SqueezeExcite(3, 24, 6, 6, 6, "silu", "sigmoid", "float32"), SeTiles(8, 12, 64)),  # both cut
    (SqueezeExcite(1, 50, 5, 5, 33, "relu", "sigmoid", "float16"), SeTiles(10, 25, 96)),  # 3 warps
    (
        SqueezeExcite(1, 960, 7, 7, 240, "relu", "hardsigmoid", "float16"),
        SeTiles(40, 49, 256, 1),
    ),  # 2 kernels
    (SqueezeExcite(2, 48, 6, 6, 12, "silu", "sigmoid", "float32"), SeTiles(16, 18, 128, hidden_kernel=1)),
    (SqueezeExcite(1, 1152, 7, 7, 48, "silu", "sigmoid", "float16"), SeTiles(36, 49, 256, unroll=1)),
    (SqueezeExcite(1, 480, 7, 7, 120, "relu", "sigmoid", "float32"), SeTiles(40, 49, 256, 1, unroll=1)),
    (SqueezeExcite(2, 1152, 7, 7, 48, "silu", "sigmoid", "float16", scales=False), None),  # gates only
    (
        SqueezeExcite(1, 960, 7, 7, 240, "relu", "hardsigmoid", "float16", scales=False),
        SeTiles(32, 49, 256, 1),
    ),
    (SqueezeExcite(3, 40, 9, 7, 10, "silu", "sigmoid", "float32", scales=False), SeTiles(8, 63, 64)),
]


def case_id(case) -> str:
    se, tiles = case
    return f"{se.key.replace(' ', '_')}@{(tiles or default_tiles(se)).label.replace(' ', '_')}"


def run_on_cpu(se: SqueezeExcite, tiles: SeTiles | None, inputs: list[np.ndarray]) -> np.ndarray:
    lib = tvm.compile(tvm.IRModule({"main": excite_primfunc(se, tiles, LLVM)}), target=LLVM)
    out = tvm.runtime.tensor(np.full(se.output_shape, np.nan, se.output_dtype), tvm.cpu())
    lib["main"](*[tvm.runtime.tensor(a, tvm.cpu()) for a in inputs], out)
    return out.numpy()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_definition_matches_float64_on_the_cpu(case, rng: np.random.Generator) -> None:
    se, tiles = case  # tiles shape only the CUDA schedule (its GPU run: tests/gpu/check_squeeze_excite.py)
    inputs = random_inputs(se, rng)
    actual = run_on_cpu(se, tiles, inputs).astype(np.float64)
    reference = excite_reference if se.scales else excite_gate_reference
    expected = reference(*inputs, se.activation, se.gate)
    assert np.isfinite(actual).all()
    assert np.max(np.abs(actual - expected)) / np.max(np.abs(expected)) < TOLERANCE[se.dtype]


def test_the_gates_differ_where_they_should(rng: np.random.Generator) -> None:
    """Sigmoid and HardSigmoid give different products: the gate is not silently the same."""
    sigmoid = SqueezeExcite(1, 16, 4, 4, 4, "relu", "sigmoid", "float32")
    hard = SqueezeExcite(1, 16, 4, 4, 4, "relu", "hardsigmoid", "float32")
    inputs = random_inputs(sigmoid, rng)
    assert np.max(np.abs(run_on_cpu(sigmoid, None, inputs) - run_on_cpu(hard, None, inputs))) > 1e-3


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_cuda_kernel_is_two_launches_or_three_and_compiles(case, nvcc: str, tmp_path: Path) -> None:
    se, tiles = case
    func = excite_primfunc(se, tiles, CUDA)
    assert func.attrs["tirx.is_scheduled"]
    source = tvm.compile(tvm.IRModule({"main": func}), target=CUDA).mod.imports[0].inspect_source()
    kernels = re.findall(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+)\([^)]*\)\s*\{', source)
    tiles = tiles or default_tiles(se)
    names = ["fcm_se_kernel", *(f"fcm_se_kernel_{i}" for i in range(1, 2 + tiles.hidden_kernel))]
    assert kernels == [(str(tiles.threads), name) for name in names]
    assert "__shfl_down_sync" in source  # the means and the channel sums are warp reductions
    compile_cubin(nvcc, source, tmp_path)


@pytest.mark.parametrize(
    "se",
    [
        SqueezeExcite(1, 1152, 7, 7, 48),
        SqueezeExcite(1, 32, 112, 112, 8),
        SqueezeExcite(32, 480, 14, 14, 20),
        SqueezeExcite(1, 7, 3, 3, 2),
    ],
    ids=lambda se: se.key.replace(" ", "_"),
)
def test_default_tiles_divide_the_tensor_and_give_a_block_at_most_2048_elements(se) -> None:
    tiles = default_tiles(se)
    assert tile_problems(se, tiles) == []
    assert tiles.channel_tile * tiles.pixel_tile <= 2048
    assert tiles.channel_tile == 1 or tiles.pixel_tile == se.pixels  # a channel is cut only alone


def test_tiles_that_do_not_divide_are_an_fcm_error_naming_each_problem() -> None:
    se = SqueezeExcite(1, 40, 7, 7, 10)
    with pytest.raises(
        FcmError, match="channel tile 16 does not divide 40.*pixel tile 10 does not divide 49"
    ):
        excite_primfunc(se, SeTiles(16, 10, 256), CUDA)
    with pytest.raises(FcmError, match="100 threads are not whole warps"):
        excite_primfunc(se, SeTiles(8, 49, 100), CUDA)


def test_an_unknown_activation_gate_or_dtype_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="activation 'gelu'.*gate 'tanh'.*dtype bfloat16"):
        SqueezeExcite(1, 8, 4, 4, 2, "gelu", "tanh", "bfloat16")


def test_a_target_without_the_kernel_is_an_fcm_error() -> None:
    with pytest.raises(FcmError, match="no squeeze-excitation kernel for target kind 'vulkan'"):
        excite_primfunc(SqueezeExcite(1, 8, 4, 4, 2), None, tvm.target.Target("vulkan"))


def test_the_definition_takes_x_w1_b1_w2_b2_and_writes_out() -> None:
    se = SqueezeExcite(2, 24, 5, 5, 6)
    func = definition(se)
    assert [tuple(int(d) for d in param.shape) for param in func.params] == [
        *se.param_shapes(),
        se.output_shape,
    ]
    assert [param.name for param in func.params] == ["x", "w1", "b1", "w2", "b2", "out"]


@pytest.mark.parametrize(
    ("runs", "threads", "expected"),
    [(49, 256, 32), (98, 256, 32), (196, 256, 64), (392, 256, 128), (1568, 256, 256), (1568, 64, 64)],
)
def test_an_image_is_summed_by_a_warp_doubled_until_a_thread_makes_at_most_4_loads(
    runs, threads, expected
) -> None:
    assert row_threads(runs, threads) == expected
