"""Rewritten models compute what the ONNX models compute: fixed chains from real networks between
stock ops, and random chains (hypothesis), built for llvm, on fresh random inputs, against a
float64 reference and onnxruntime."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import tvm
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import fcm_tvm
from fcm_tvm.precision import with_precision
from fcm_tvm.reference import float64_reference
from fcm_tvm.relay_passes import SPEC_ATTR, FoldBatchNorm, FuseDepthwisePointwise, find_chains
from fcm_tvm.schedules.spec import Depthwise, FcmSpec, Pointwise
from tests.chain_graphs import ACTIVATION_OF, Conv, batchnorm_blocks_model, chain_model, random_inputs
from tests.conftest import relative_error

TOLERANCE = {"float32": 1e-4, "float16": 4e-3}


def fused(model: onnx.ModelProto, target) -> tuple[tvm.IRModule, list[str]]:
    """The model with BatchNorm folded and every supported chain fused; the kinds of chain fused."""
    mod = FuseDepthwisePointwise(target)(FoldBatchNorm()(from_onnx(model, keep_params_in_input=False)))
    kinds = []
    for _, func in mod.functions_items():
        if func.attrs is not None and SPEC_ATTR in func.attrs:
            record = json.loads(str(func.attrs[SPEC_ATTR]))
            kinds += [record["kind"]] * record["calls"]
    return mod, sorted(kinds)


def run(mod: tvm.IRModule, inputs: list[np.ndarray], target) -> np.ndarray:
    """Build ``mod`` for ``target`` and run it on this machine's CPU (llvm) or first GPU (cuda)."""
    target = tvm.target.Target(target)
    device = tvm.cuda(0) if target.kind.name == "cuda" else tvm.cpu()
    with target:
        vm = relax.VirtualMachine(tvm.compile(mod, target), device)
    return vm["main"](*[tvm.runtime.tensor(a, device) for a in inputs]).numpy()


def onnxruntime_output(model: onnx.ModelProto, inputs: list[np.ndarray]) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": inputs[0]})[0]


def assert_fused_model_matches(
    model: onnx.ModelProto, kinds: list[str], rng: np.random.Generator, dtype="float32", target="llvm"
):
    mod, fused_kinds = fused(model, target)
    assert fused_kinds == sorted(kinds)
    inputs = random_inputs(model, rng)
    actual = run(mod, inputs, target)
    assert relative_error(actual, float64_reference(model, inputs)[0]) < TOLERANCE[dtype]
    assert relative_error(actual, onnxruntime_output(model, inputs)) < TOLERANCE[dtype]


NETWORK_CHAINS = {
    "MobileNetV1 block: dw_pw, BN, ReLU": (
        [
            Conv("dw", bias=False, batchnorm=True, activation="relu"),
            Conv("pw", 16, bias=False, batchnorm=True),
        ],
        False,
        ["dw_pw"],
    ),
    "MobileNetV2 block: pw_dw_pw, BN, Clip(0, 6), residual": (
        [
            Conv("pw", 48, bias=False, batchnorm=True, activation="clip6"),
            Conv("dw", bias=False, batchnorm=True, activation="clip6"),
            Conv("pw", 8, bias=False, batchnorm=True),
        ],
        True,
        ["pw_dw_pw"],
    ),
    "MobileNetV3 block: HardSwish, 5x5 stride 2": (
        [
            Conv("pw", 24, activation="hardswish"),
            Conv("dw", kernel=5, stride=2, activation="hardswish"),
            Conv("pw", 8),
        ],
        False,
        ["pw_dw_pw"],
    ),
    "EfficientNet block: SiLU as x * Sigmoid(x), residual": (
        [Conv("pw", 32, activation="silu"), Conv("dw", activation="silu"), Conv("pw", 8)],
        True,
        ["pw_dw_pw"],
    ),
    "pw_dw: HardSigmoid * x, 7x7 with asymmetric padding": (
        [
            Conv("pw", 16, activation="hardsigmoid_mul"),
            Conv("dw", kernel=7, pads=(2, 3, 4, 1), activation="sigmoid"),
        ],
        False,
        ["pw_dw"],
    ),
    "dw_pw: x * Clip(x + 3, 0, 6) / 6, stride 2": (
        [Conv("dw", stride=2, activation="add_clip_mul_div"), Conv("pw", 12, activation="add_clip_mul_div")],
        False,
        ["dw_pw"],
    ),
    "two blocks: dw_pw then pw_dw_pw": (
        [
            Conv("dw", activation="relu"),
            Conv("pw", 16, activation="relu"),
            Conv("pw", 32, activation="relu"),
            Conv("dw", activation="relu"),
            Conv("pw", 8),
        ],
        False,
        ["dw_pw", "pw_dw_pw"],
    ),
}


@pytest.mark.parametrize("name", NETWORK_CHAINS)
def test_network_chains_between_stock_ops_match_the_onnx_model(name, rng):
    stages, residual, kinds = NETWORK_CHAINS[name]
    assert_fused_model_matches(chain_model(stages, residual=residual, stock_ops=True), kinds, rng)


def test_opset_10_clip_attributes_match_the_onnx_model(rng):
    stages = [Conv("pw", 16, activation="clip6_attr"), Conv("dw", activation="clip6_attr"), Conv("pw", 8)]
    assert_fused_model_matches(
        chain_model(stages, residual=True, stock_ops=True, opset=10), ["pw_dw_pw"], rng
    )


def test_float16_chain_matches_the_onnx_model(rng):
    stages = [Conv("pw", 32, activation="hardswish"), Conv("dw", activation="clip6"), Conv("pw", 8)]
    model = chain_model(stages, residual=True, stock_ops=True, dtype="float16")
    assert_fused_model_matches(model, ["pw_dw_pw"], rng, dtype="float16")


@pytest.mark.parametrize("fuse", ["none", "all"])
def test_float16_batchnorm_blocks_match_float64(fuse, rng):
    """with_precision's float16 network: BatchNorm (and its Cast) folded into the fused chains, the
    dense conv's BatchNorm left to stock TVM; every output element near the float64 reference."""
    model = with_precision(batchnorm_blocks_model(), "fp16")
    compiled = fcm_tvm.compile(model, "llvm", fuse=fuse)
    kinds = sorted(kind for chain in compiled.fused for kind in [chain.kind] * chain.spec["calls"])
    assert kinds == ([] if fuse == "none" else ["dw_pw", "pw_dw_pw"])
    assert all(chain.spec["dtype"] == "float16" for chain in compiled.fused)
    for _ in range(2):  # fresh inputs each time
        inputs = random_inputs(model, rng)
        (actual,) = compiled.run(*inputs)
        expected = float64_reference(model, inputs)[0]
        assert actual.dtype == np.float16
        assert relative_error(actual, expected) < 1e-2
        np.testing.assert_allclose(actual, expected, rtol=1e-2, atol=1e-2 * np.abs(expected).max())


# ---- random chains ----

FORMS = sorted(set(ACTIVATION_OF) - {"clip6_attr"})  # opset 17: Clip takes its bounds as inputs


def canonical(stage: Depthwise | Pointwise) -> Depthwise | Pointwise:
    """``stage`` with "same" padding written as None, as the pass writes it."""
    if isinstance(stage, Depthwise) and stage.padding == Depthwise(stage.kernel).pads:
        return Depthwise(stage.kernel, stage.stride, None, stage.activation)
    return stage


@st.composite
def random_chains(draw) -> tuple[list[Conv], FcmSpec]:
    """A supported chain as ONNX stages, and the FcmSpec the pass must find for it."""
    kind = draw(st.sampled_from(["dw_pw", "pw_dw", "pw_dw_pw"]))
    batch, channels = draw(st.integers(1, 2)), draw(st.integers(2, 12))
    height, width = draw(st.integers(3, 12)), draw(st.integers(3, 12))
    convs, stages = [], []
    for op in kind.split("_"):
        form, bias, batchnorm = draw(st.sampled_from(FORMS)), draw(st.booleans()), draw(st.booleans())
        if op == "pw":
            out = draw(st.integers(2, 16))
            convs.append(Conv("pw", out, activation=form, bias=bias, batchnorm=batchnorm))
            stages.append(Pointwise(out, ACTIVATION_OF[form]))
        else:
            kernel, stride = draw(st.sampled_from([3, 5, 7])), draw(st.sampled_from([1, 2]))
            pads = draw(st.tuples(*[st.integers(0, kernel - 1)] * 4))
            convs.append(Conv("dw", kernel=kernel, stride=stride, pads=pads, activation=form, bias=bias))
            stages.append(canonical(Depthwise(kernel, stride, pads, ACTIVATION_OF[form])))
    try:
        spec = FcmSpec(batch, channels, height, width, tuple(stages))
    except ValueError:  # an empty output: not a model anyone exports
        assume(False)
    if spec.output.as_tuple() == spec.input.as_tuple() and draw(st.booleans()):
        spec = FcmSpec(batch, channels, height, width, tuple(stages), residual=True)
    return convs, spec


@given(chain=random_chains(), seed=st.integers(0, 2**31))
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_random_chains_are_found_and_compute_the_onnx_model(chain, seed):
    convs, spec = chain
    shape = spec.input.as_tuple()
    model = chain_model(convs, shape, residual=spec.residual, stock_ops=True, seed=seed)
    assert find_chains(from_onnx(model, keep_params_in_input=False)) == [spec]
    assert_fused_model_matches(model, [spec.kind], np.random.default_rng(seed))


# ---- the same on a GPU, with the hand-scheduled CUDA kernels (skipped without one) ----


@pytest.fixture(scope="module")
def local_cuda_target() -> tvm.target.Target:
    from fcm_tvm.target import resolve_target

    return resolve_target("cuda").tvm_target


@pytest.mark.gpu
@pytest.mark.parametrize("name", NETWORK_CHAINS)
def test_network_chains_on_gpu_match_the_onnx_model(name, rng, local_cuda_target):
    stages, residual, kinds = NETWORK_CHAINS[name]
    model = chain_model(stages, residual=residual, stock_ops=True)
    assert_fused_model_matches(model, kinds, rng, target=local_cuda_target)


@pytest.mark.gpu
def test_float16_chain_on_gpu_matches_the_onnx_model(rng, local_cuda_target):
    stages = [Conv("pw", 32, activation="hardswish"), Conv("dw", activation="clip6"), Conv("pw", 8)]
    model = chain_model(stages, residual=True, stock_ops=True, dtype="float16")
    assert_fused_model_matches(model, ["pw_dw_pw"], rng, dtype="float16", target=local_cuda_target)


@pytest.mark.gpu
@given(chain=random_chains(), seed=st.integers(0, 2**31))
@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
def test_random_chains_on_gpu_compute_the_onnx_model(chain, seed):
    from fcm_tvm.target import resolve_target

    convs, spec = chain
    model = chain_model(convs, spec.input.as_tuple(), residual=spec.residual, stock_ops=True, seed=seed)
    target = resolve_target("cuda").tvm_target
    assert_fused_model_matches(model, [spec.kind], np.random.default_rng(seed), target=target)
