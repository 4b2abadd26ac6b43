"""FCM kernels on the CPU: the TE compute against an independent float64 numpy reference.

``fcm_primfunc(spec, None, llvm)`` is the plain TE compute; every variant is built with
``tvm.compile``, run on fresh random inputs and compared element by element with a reference
written from the ONNX definitions (zero padding, sliding window, 1x1 as a matrix product).
"""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from fcm_tvm.errors import FcmError
from fcm_tvm.reference import NUMPY_ACTIVATIONS
from fcm_tvm.schedules import (
    Depthwise,
    FcmSpec,
    FcmTiles,
    Pointwise,
    default_tiles,
    fcm_compute,
    fcm_primfunc,
    tile_problems,
)
from fcm_tvm.schedules.layout import MAX_PATCH_ACCUMULATORS, computed_patch, output_layout, patch_layout
from fcm_tvm.schedules.spec import ACTIVATIONS
from fcm_tvm.schedules.tiles import plan_kernel

from .conftest import relative_error

LLVM = tvm.target.Target("llvm")
CUDA = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
TOLERANCE = {"float32": 1e-5, "float16": 2e-3}

# -- the reference ----------------------------------------------------------------------------


def depthwise_reference(x: np.ndarray, weight: np.ndarray, stage: Depthwise) -> np.ndarray:
    top, left, bottom, right = stage.pads
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    k, s = stage.kernel, stage.stride
    out_h = (padded.shape[2] - k) // s + 1
    out_w = (padded.shape[3] - k) // s + 1
    out = np.zeros(x.shape[:2] + (out_h, out_w))
    for ky in range(k):
        for kx in range(k):
            window = padded[:, :, ky : ky + s * (out_h - 1) + 1 : s, kx : kx + s * (out_w - 1) + 1 : s]
            out += window * weight[None, :, 0, ky, kx, None, None]
    return out


def pointwise_reference(x: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return np.einsum("nchw,oc->nohw", x, weight[:, :, 0, 0])


def fcm_reference(spec: FcmSpec, inputs: list[np.ndarray]) -> np.ndarray:
    """The FCM in float64 from its definition (inputs in ``spec.param_shapes()`` order)."""
    values = [np.asarray(a, dtype=np.float64) for a in inputs]
    current = values[0]
    for index, stage in enumerate(spec.stages):
        weight, bias = values[1 + 2 * index], values[2 + 2 * index]
        if isinstance(stage, Depthwise):
            current = depthwise_reference(current, weight, stage)
        else:
            current = pointwise_reference(current, weight)
        current = NUMPY_ACTIVATIONS[stage.activation](current + bias[None, :, None, None])
    if spec.residual:
        current = current + values[-1]
    return current


def random_inputs(spec: FcmSpec, rng: np.random.Generator) -> list[np.ndarray]:
    """Inputs in ``param_shapes`` order; weights scaled by fan-in so that float16 stays in range."""

    def normal(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(spec.dtype)

    arrays = [normal(spec.input.as_tuple(), 1.0)]
    for weight_shape, after in zip(spec.weight_shapes(), spec.shapes[1:]):
        fan_in = weight_shape[1] * weight_shape[2] * weight_shape[3]
        arrays += [normal(weight_shape, fan_in**-0.5), normal((after.c,), 0.2)]
    if spec.residual:
        arrays.append(normal(spec.output.as_tuple(), 1.0))
    return arrays


def assert_matches_reference(spec: FcmSpec, actual: np.ndarray, inputs: list[np.ndarray]) -> None:
    expected = fcm_reference(spec, inputs)
    tolerance = TOLERANCE[spec.dtype]
    error = relative_error(actual, expected)
    assert error < tolerance, f"relative error {error:.2e} >= {tolerance:.0e}"
    worst = np.abs(actual.astype(np.float64) - expected).max() / max(np.abs(expected).max(), 1e-30)
    assert worst < 10 * tolerance, f"worst element off by {worst:.2e} of the largest output"


def run_llvm(spec: FcmSpec, inputs: list[np.ndarray], func: tvm.tirx.PrimFunc | None = None) -> np.ndarray:
    """``func`` (the TE FCM of ``spec`` unless given, e.g. a kernel's tiled definition) on the CPU,
    its output poisoned with NaN first."""
    func = func if func is not None else fcm_primfunc(spec, None, LLVM)
    lib = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    device = tvm.cpu()
    args = [tvm.runtime.tensor(a, device) for a in inputs]
    out = tvm.runtime.tensor(np.full(spec.output.as_tuple(), np.nan, spec.dtype), device)
    lib["main"](*args, out)
    return out.numpy()


# -- the variants -----------------------------------------------------------------------------

PADDINGS = (None, (0, 0, 0, 0), (1, 0, 2, 1), (0, 2, 1, 0))
SIZES = ((7, 7), (13, 13), (9, 11))


def chain(kind: str, dw: Depthwise, c: int, activation: str) -> tuple:
    """Stages of ``kind`` around ``dw`` for ``c`` input channels."""
    if kind == "dw_pw":
        return (dw, Pointwise(c + 5, activation))
    if kind == "pw_dw":
        return (Pointwise(2 * c, activation), dw)
    return (Pointwise(3 * c, activation), dw, Pointwise(c + 3, "none"))


def kernel_variants() -> list[FcmSpec]:
    """Each kind x kernel x stride, cycling padding, size, batch, activation and dtype."""
    specs = []
    for i, (kind, kernel, stride) in enumerate(
        (kind, kernel, stride)
        for kind in ("dw_pw", "pw_dw", "pw_dw_pw")
        for kernel in (3, 5, 7)
        for stride in (1, 2)
    ):
        padding = PADDINGS[i % len(PADDINGS)]
        if padding is not None and max(padding) >= kernel:
            padding = None
        dw = Depthwise(kernel, stride, padding, ACTIVATIONS[(i + 1) % len(ACTIVATIONS)])
        h, w = SIZES[i % len(SIZES)]
        c = 6 + i % 5
        specs.append(
            FcmSpec(
                1 + 2 * (i % 2),
                c,
                h,
                w,
                chain(kind, dw, c, ACTIVATIONS[i % len(ACTIVATIONS)]),
                dtype=("float32", "float16")[i % 2],
            )
        )
    return specs


def activation_variants() -> list[FcmSpec]:
    specs = []
    for kind in ("dw_pw", "pw_dw", "pw_dw_pw"):
        for activation in ACTIVATIONS:
            dw = Depthwise(3, 1, None, activation)
            specs.append(FcmSpec(1, 5, 7, 7, chain(kind, dw, 5, activation)))
    return specs


def residual_variants() -> list[FcmSpec]:
    specs = []
    for dtype in ("float32", "float16"):
        specs.append(FcmSpec(2, 8, 9, 9, (Depthwise(5, 1, None, "relu"), Pointwise(8, "none")), True, dtype))
        specs.append(
            FcmSpec(
                3,
                8,
                13,
                13,
                (Pointwise(24, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(8)),
                True,
                dtype,
            )
        )
    return specs


def spec_id(spec: FcmSpec) -> str:
    dw = next(s for s in spec.stages if isinstance(s, Depthwise))
    acts = "-".join(s.activation for s in spec.stages)
    res = "+res" if spec.residual else ""
    n, c, h, w = spec.input.as_tuple()
    pads = "".join(map(str, dw.pads))
    return f"{spec.kind}-k{dw.kernel}s{dw.stride}p{pads}-{n}x{c}x{h}x{w}-{acts}{res}-{spec.dtype}"


ALL_VARIANTS = kernel_variants() + activation_variants() + residual_variants()

# -- tests ------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ALL_VARIANTS, ids=spec_id)
def test_llvm_kernel_matches_float64_reference(spec: FcmSpec, rng: np.random.Generator) -> None:
    inputs = random_inputs(spec, rng)
    assert_matches_reference(spec, run_llvm(spec, inputs), inputs)


def test_batch_64_matches_reference(rng: np.random.Generator) -> None:
    spec = FcmSpec(64, 4, 5, 5, (Pointwise(8, "relu6"), Depthwise(3, 2, None, "relu6"), Pointwise(4)))
    inputs = random_inputs(spec, rng)
    assert_matches_reference(spec, run_llvm(spec, inputs), inputs)


def test_reference_depthwise_is_a_sliding_window() -> None:
    """The reference itself, on a case small enough to check by hand."""
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    weight = np.ones((1, 1, 3, 3))
    out = depthwise_reference(x, weight, Depthwise(3, 2, (1, 1, 0, 0)))
    # windows centred on (0,0), (0,2), (2,0), (2,2) with one row/column of zeros above/left
    assert out.tolist() == [[[[10, 24], [51, 90]]]]


def test_compute_inputs_follow_param_shapes() -> None:
    spec = FcmSpec(
        2, 8, 9, 9, (Pointwise(16, "relu"), Depthwise(3, 1), Pointwise(8)), residual=True, dtype="float16"
    )
    inputs, output = fcm_compute(spec)
    assert [tuple(int(d) for d in t.shape) for t in inputs] == spec.param_shapes()
    assert all(t.dtype == "float16" for t in [*inputs, output])
    assert tuple(int(d) for d in output.shape) == spec.output.as_tuple()


def test_primfunc_parameters_are_x_weights_biases_residual_out() -> None:
    spec = FcmSpec(1, 8, 9, 9, (Depthwise(3, 1), Pointwise(8)), residual=True)
    func = fcm_primfunc(spec, None, LLVM)
    shapes = [tuple(int(d) for d in param.shape) for param in func.params]
    assert shapes == [*spec.param_shapes(), spec.output.as_tuple()]
    assert [param.name for param in func.params][:-1] == ["x", "w0", "b0", "w1", "b1", "residual"]
    assert func.attrs["global_symbol"] == "fcm_dw_pw"


def test_cuda_primfunc_is_marked_scheduled() -> None:
    spec = FcmSpec(1, 8, 9, 9, (Depthwise(3, 1), Pointwise(8)))
    func = fcm_primfunc(spec, None, CUDA)
    assert bool(func.attrs["tirx.is_scheduled"])
    assert int(func.attrs["op_pattern"]) == 8  # opaque: relax FuseOps leaves it alone
    assert "tirx.is_scheduled" not in (fcm_primfunc(spec, None, LLVM).attrs or {})


def test_unsupported_target_is_an_fcm_error() -> None:
    spec = FcmSpec(1, 8, 9, 9, (Depthwise(3, 1), Pointwise(8)))
    with pytest.raises(FcmError, match="rocm"):
        fcm_primfunc(spec, None, tvm.target.Target("rocm"))


def test_tiles_that_do_not_fit_are_an_fcm_error_naming_the_problem() -> None:
    spec = FcmSpec(1, 8, 9, 9, (Depthwise(3, 1), Pointwise(8)))
    with pytest.raises(FcmError, match="threads per block"):
        fcm_primfunc(spec, FcmTiles(64, 8, 8, 2048), CUDA)


# -- tiles ------------------------------------------------------------------------------------

MOBILENET_V2_LIKE = [
    FcmSpec(1, 32, 112, 112, (Depthwise(3, 1, None, "relu6"), Pointwise(16))),
    FcmSpec(1, 16, 112, 112, (Pointwise(96, "relu6"), Depthwise(3, 2, (0, 0, 1, 1), "relu6"), Pointwise(24))),
    FcmSpec(8, 24, 56, 56, (Pointwise(144, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True),
    FcmSpec(1, 64, 14, 14, (Pointwise(384, "relu6"), Depthwise(3, 1, None, "relu6")), dtype="float16"),
    FcmSpec(1, 160, 7, 7, (Pointwise(960, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(320))),
    FcmSpec(1, 576, 14, 14, (Depthwise(5, 2, None, "hardswish"), Pointwise(96))),
]


@pytest.mark.parametrize("spec", MOBILENET_V2_LIKE, ids=spec_id)
def test_default_tiles_fit_in_static_shared_memory(spec: FcmSpec) -> None:
    tiles = default_tiles(spec)
    assert tile_problems(spec, tiles, 48 * 1024) == []


@pytest.mark.parametrize(
    ("tiles", "smem", "problem"),
    [
        (FcmTiles(32, 8, 8, 2048), 48 * 1024, "2048 threads per block > 1024"),
        (FcmTiles(32, 8, 8, 96), 48 * 1024, "do not factor over the output tile"),
        (FcmTiles(64, 8, 8, 32), 48 * 1024, "outputs per thread"),
        (FcmTiles(32, 8, 8, 256), 1024, "bytes of shared memory per block, more than 1024"),
        (FcmTiles(0, 8, 8, 256), 48 * 1024, "must be >= 1"),
        (FcmTiles(32, 8, 8, 256, split=5), 48 * 1024, "split 5 does not divide the 64 channels"),
        (FcmTiles(32, 8, 8, 64, patch_rows=16), 48 * 1024, "cannot cover the 16 channels of the 1x1 patch"),
        (FcmTiles(32, 8, 8, 256, patch_unroll=0), 48 * 1024, "must be >= 1"),
        (FcmTiles(32, 8, 8, 256, output_rows=3), 48 * 1024, "3 output rows per thread do not divide"),
        (FcmTiles(24, 8, 8, 512, output_rows=4), 48 * 1024, "b | tile_h / 4"),
        (FcmTiles(32, 8, 8, 256, weight_lanes=3), 48 * 1024, "weight_lanes must be one of (1, 2, 4)"),
        (FcmTiles(24, 8, 8, 256, weight_lanes=4), 48 * 1024, "6 output channels per thread are not"),
        (FcmTiles(24, 8, 8, 512, weight_lanes=2), 48 * 1024, "3 output channels per thread are not"),
        (
            FcmTiles(32, 8, 8, 256, depthwise_cols=3),
            48 * 1024,
            "3 depthwise columns per thread do not divide",
        ),
        (FcmTiles(32, 8, 8, 256, output_cols=3), 48 * 1024, "output_cols must be one of (1, 2, 4), got 3"),
        (FcmTiles(32, 7, 7, 196, output_cols=2), 48 * 1024, "2 output columns per thread do not divide"),
    ],
)
def test_tile_problems_name_what_does_not_fit(tiles: FcmTiles, smem: int, problem: str) -> None:
    spec = FcmSpec(1, 32, 28, 28, (Pointwise(64, "relu6"), Depthwise(3, 1), Pointwise(32)))
    problems = tile_problems(spec, tiles, smem)
    assert any(problem in p for p in problems), problems


def test_output_columns_need_a_last_pw_stage_and_whole_vectors_of_the_output_width() -> None:
    pw_dw = FcmSpec(1, 24, 28, 28, (Pointwise(96, "relu6"), Depthwise(3, 1, None, "relu6")))
    assert tile_problems(pw_dw, FcmTiles(32, 8, 8, 128, output_cols=2), 232448) == [
        "output_cols must be 1: a pw_dw kernel has no last PW stage"
    ]
    dw_pw = FcmSpec(1, 32, 6, 6, (Depthwise(3, 1), Pointwise(32)))  # an 8-wide tile clipped to 6
    assert tile_problems(dw_pw, FcmTiles(32, 8, 8, 64, output_cols=4), 232448) == [
        "4 output columns per thread do not divide the 6-wide tile"
    ]
    assert not tile_problems(dw_pw, FcmTiles(32, 8, 8, 64, output_cols=2), 232448)
    assert output_layout(FcmTiles(24, 8, 8, 128, output_cols=4)).reg_x == 4
    assert output_layout(FcmTiles(24, 8, 8, 128)).reg_x == 1


def test_patch_weights_load_in_vectors_only_where_the_vectors_are_whole() -> None:
    pw_dw = FcmSpec(32, 24, 56, 56, (Pointwise(144, "relu6"), Depthwise(3, 1, None, "relu6")))
    assert tile_problems(pw_dw, FcmTiles(48, 8, 8, 256, patch_lanes=4), 232448) == [
        "the transposed patch weights' rows (54 channels) are not vectors of 4"
    ]
    assert tile_problems(pw_dw, FcmTiles(48, 8, 8, 256, patch_lanes=3), 232448) == [
        "patch_lanes must be one of (1, 2, 4), got 3"
    ]
    assert not tile_problems(pw_dw, FcmTiles(48, 8, 8, 128, patch_lanes=4), 232448)


def test_a_patch_with_vector_weights_gives_each_thread_whole_vectors_of_channels() -> None:
    assert patch_layout(12, 10, 10, 128).reg_c == 2
    assert patch_layout(12, 10, 10, 128, lanes=4).reg_c == 4


@pytest.mark.parametrize(
    ("tiles", "problem"),
    [
        (
            FcmTiles(16, 8, 8, 256, split=2),
            "a pw_dw FCM has no channel reduction to split (split must be 1, got 2)",
        ),
        (
            FcmTiles(16, 8, 8, 256, weight_lanes=2),
            "weight_lanes must be 1: a pw_dw kernel has no last PW stage",
        ),
    ],
)
def test_pw_dw_has_no_reduction_to_split_and_no_last_pw(tiles: FcmTiles, problem: str) -> None:
    spec = FcmSpec(1, 32, 28, 28, (Pointwise(64, "relu6"), Depthwise(3, 1)))
    assert tile_problems(spec, tiles, 48 * 1024) == [problem]


def test_a_dw_pw_kernel_has_no_1x1_patch_to_tile_unroll_or_load_in_vectors() -> None:
    spec = FcmSpec(1, 32, 28, 28, (Depthwise(3, 1), Pointwise(64)))
    tiles = FcmTiles(16, 8, 8, 256, patch_rows=2, patch_unroll=4, patch_lanes=2)
    assert tile_problems(spec, tiles, 48 * 1024) == [
        "patch_rows must be 1: the kernel has no 1x1 patch",
        "patch_unroll must be 1: the kernel has no 1x1 patch",
        "patch_lanes must be 1: the kernel has no 1x1 patch",
    ]


def test_patch_rows_cut_the_loads_per_multiply_add_of_the_1x1_patch() -> None:
    """11 rows of 11 pixels, 32 channels, 196 threads: one row per thread idles the fewest threads
    (16 groups of 2 channels); four rows per thread take the layout with the fewest warp-wide loads
    per input channel (4 groups of 8 channels over 3 blocks of 4 rows, the last overhanging)."""
    one = patch_layout(32, 11, 11, 196)
    four = patch_layout(32, 11, 11, 196, reg_y=4)
    assert (one.channel_groups, one.rows, one.reg_c, one.reg_y) == (16, 1, 2, 1)
    assert (four.channel_groups, four.rows, four.reg_c, four.reg_y) == (4, 3, 8, 4)
    assert four.accumulators <= MAX_PATCH_ACCUMULATORS


def test_output_rows_trade_threads_over_pixels_for_pixels_per_thread() -> None:
    """24 channels of 8x8 pixels on 128 threads: by default a thread keeps 12 channels of one
    pixel (13 shared loads per 12 multiply-adds of a last PW stage); with 2 rows, 6 channels of
    2 pixels (8 loads), with 4 rows, 3 channels of 4 pixels (7 loads)."""
    one, two, four = (output_layout(FcmTiles(24, 8, 8, 128, output_rows=r)) for r in (1, 2, 4))
    assert (one.reg_c, one.reg_y, one.reg_x) == (12, 1, 1)
    assert (two.reg_c, two.reg_y, two.reg_x) == (6, 2, 1)
    assert (four.reg_c, four.reg_y, four.reg_x) == (3, 4, 1)
    assert one.threads == two.threads == four.threads == 128


def test_a_patch_in_blocks_of_rows_is_allocated_whole_blocks_within_the_tensor() -> None:
    deep = FcmSpec(1, 192, 7, 7, (Pointwise(1152), Depthwise(5, 1)))  # padded patch: 11 x 11
    assert computed_patch(deep, FcmTiles(32, 7, 7, 196, patch_rows=4)) == (11, 11)  # 12 clipped to 11
    wide = FcmSpec(1, 24, 28, 28, (Pointwise(72), Depthwise(3, 1)))
    assert computed_patch(wide, FcmTiles(24, 7, 7, 196, patch_rows=4)) == (12, 9)  # 9 rows in blocks of 4


def test_a_split_chunks_only_its_own_slice_of_the_reduction() -> None:
    spec = FcmSpec(1, 96, 14, 14, (Pointwise(576, "relu6"), Depthwise(3, 1), Pointwise(96)))
    assert plan_kernel(spec, FcmTiles(32, 7, 7, 196, split=72), 48 * 1024).chunk == 8
    assert plan_kernel(spec, FcmTiles(32, 7, 7, 196, split=1), 48 * 1024).chunk == 16


def test_a_bigger_budget_admits_bigger_tiles() -> None:
    spec = FcmSpec(1, 96, 28, 28, (Pointwise(576, "relu6"), Depthwise(3, 1)))
    tiles = FcmTiles(64, 8, 8, 256)
    assert tile_problems(spec, tiles, 48 * 1024)
    assert tile_problems(spec, tiles, 227 * 1024) == []
