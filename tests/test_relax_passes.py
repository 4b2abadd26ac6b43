"""The Relax passes on what TVM's ONNX importer really emits: what they match, what they reject,
what the rewrite leaves behind, and that the FCM kernel survives TVM's stock pipeline."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import tvm
from onnx import numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

import fcm_tvm
from fcm_tvm.compiler import module_cuda_source
from fcm_tvm.models import build_model
from fcm_tvm.precision import with_precision
from fcm_tvm.reference import float64_reference
from fcm_tvm.relay_passes import (
    SPEC_ATTR,
    FoldAndFuse,
    FoldBatchNorm,
    FuseDepthwisePointwise,
    FusePlanner,
    Unsupported,
    chain_spec,
    find_chains,
    spec_from_record,
)
from fcm_tvm.relay_passes.matcher import FunctionIndex, candidates
from fcm_tvm.schedules.spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from tests.chain_graphs import (
    ACTIVATION_OF,
    Conv,
    GraphBuilder,
    batchnorm_blocks_model,
    chain_model,
    random_inputs,
)
from tests.conftest import relative_error

SM90 = {"kind": "cuda", "arch": "sm_90"}


def imported(model: onnx.ModelProto, keep_params: bool = False) -> tvm.IRModule:
    return from_onnx(model, keep_params_in_input=keep_params)


def rejections(mod: tvm.IRModule) -> list[str]:
    """Why each structurally matched candidate of ``main`` is not an FCM."""
    index = FunctionIndex(mod, mod["main"])
    reasons = []
    for binding in index.bindings:
        for chain in candidates(index, binding.var):
            try:
                chain_spec(chain)
            except Unsupported as reason:
                reasons.append(str(reason))
    return reasons


def op_name(value: relax.Expr) -> str:
    op = getattr(value, "op", None)
    return op.name if isinstance(op, tvm.ir.Op) else type(value).__name__


def ops_in(func: relax.Function) -> list[str]:
    return [op_name(binding.value) for block in func.body.blocks for binding in block.bindings]


def callees(func: relax.Function) -> list[str]:
    """The PrimFuncs ``func`` calls through call_tir, in order."""
    return [
        binding.value.args[0].name_hint
        for block in func.body.blocks
        for binding in block.bindings
        if op_name(binding.value) == "relax.call_tir"
    ]


def fcm_kernels(mod: tvm.IRModule) -> dict[str, tvm.tirx.PrimFunc]:
    return {gv.name_hint: mod[gv] for gv in mod.get_global_vars() if gv.name_hint.startswith("fcm_")}


def run_llvm(mod: tvm.IRModule, inputs: list[np.ndarray]) -> np.ndarray:
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    return vm["main"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()


@dataclass(frozen=True)
class Decision:
    fuse: bool
    tiles: FcmTiles | None = None
    reason: str = "test"
    fallback: str | None = None


# ---- what is matched ----

CHAIN_KINDS = {
    "dw_pw": (
        [Conv("dw", activation="relu"), Conv("pw", 16, activation="relu")],
        (Depthwise(3, 1, activation="relu"), Pointwise(16, "relu")),
    ),
    "pw_dw": (
        [Conv("pw", 24, activation="clip6"), Conv("dw", kernel=5, stride=2, activation="clip6")],
        (Pointwise(24, "relu6"), Depthwise(5, 2, activation="relu6")),
    ),
    "pw_dw_pw": (
        [Conv("pw", 32, activation="clip6"), Conv("dw", kernel=7, activation="clip6"), Conv("pw", 8)],
        (Pointwise(32, "relu6"), Depthwise(7, 1, activation="relu6"), Pointwise(8, "none")),
    ),
}


@pytest.mark.parametrize("kind", CHAIN_KINDS)
def test_each_chain_kind_is_found_with_its_spec(kind):
    stages, expected = CHAIN_KINDS[kind]
    assert find_chains(imported(chain_model(stages))) == [FcmSpec(1, 8, 10, 10, expected)]


def test_residual_add_after_the_last_stage_joins_the_chain():
    stages = [Conv("pw", 32, activation="clip6"), Conv("dw", activation="clip6"), Conv("pw", 8)]
    found = find_chains(imported(chain_model(stages, residual=True)))
    assert [(spec.kind, spec.residual) for spec in found] == [("pw_dw_pw", True)]


@pytest.mark.parametrize("form", sorted(ACTIVATION_OF))
def test_every_exported_activation_form_is_recognised(form):
    opset = 10 if form == "clip6_attr" else 17  # Clip took min/max attributes before opset 11
    stages = [Conv("pw", 16, activation=form), Conv("dw", activation=form), Conv("pw", 8, activation=form)]
    (spec,) = find_chains(imported(chain_model(stages, opset=opset)))
    assert [stage.activation for stage in spec.stages] == [ACTIVATION_OF[form]] * 3


def test_stages_without_bias_get_zero_bias_and_still_match():
    stages = [Conv("dw", bias=False), Conv("pw", 16, bias=False, activation="relu")]
    assert find_chains(imported(chain_model(stages))) == [
        FcmSpec(1, 8, 10, 10, (Depthwise(3), Pointwise(16, "relu")))
    ]


def test_batchnorm_is_folded_so_that_chains_match():
    stages = [Conv("dw", batchnorm=True, activation="clip6"), Conv("pw", 16, bias=False, batchnorm=True)]
    mod = imported(chain_model(stages))
    assert "relax.nn.batch_norm" in ops_in(mod["main"])
    assert "relax.nn.batch_norm" not in ops_in(FoldBatchNorm()(mod)["main"])
    assert [spec.kind for spec in find_chains(mod)] == ["dw_pw"]


def test_relax_written_by_hand_with_relu6_and_silu_ops_matches():
    x = relax.Var("x", relax.TensorType((1, 8, 10, 10), "float32"))
    dw_weight = relax.const(np.ones((8, 1, 3, 3), "float32"))
    pw_weight = relax.const(np.ones((16, 8, 1, 1), "float32"))
    builder = relax.BlockBuilder()
    with builder.function("main", [x]):
        with builder.dataflow():
            y = builder.emit(relax.op.nn.conv2d(x, dw_weight, padding=1, groups=8))
            y = builder.emit(relax.op.nn.relu6(y))
            y = builder.emit(relax.op.nn.conv2d(y, pw_weight))
            out = builder.emit_output(relax.op.nn.silu(y))
        builder.emit_func_output(out)
    assert find_chains(builder.get()) == [
        FcmSpec(1, 8, 10, 10, (Depthwise(3, activation="relu6"), Pointwise(16, "silu")))
    ]


def test_depthwise_padding_and_stride_are_read_from_the_graph():
    stages = [Conv("dw", kernel=5, stride=2, pads=(1, 2, 2, 1)), Conv("pw", 8)]
    (spec,) = find_chains(imported(chain_model(stages, shape=(2, 8, 11, 13))))
    assert spec.stages[0] == Depthwise(5, 2, (1, 2, 2, 1))
    assert spec.batch == 2 and spec.output.as_tuple() == (2, 8, 5, 6)


def test_float16_chains_keep_their_dtype():
    stages = [Conv("dw", activation="relu"), Conv("pw", 16)]
    (spec,) = find_chains(imported(chain_model(stages, dtype="float16")))
    assert spec.dtype == "float16"


def as_float16(specs: list[FcmSpec]) -> list[FcmSpec]:
    return [replace(spec, dtype="float16") for spec in specs]


def test_float16_batchnorm_is_folded_with_its_cast_so_that_chains_match():
    """with_precision follows every BatchNorm by a Cast to float16 (TVM's legalized float16
    batch_norm returns float32); the Cast sits inside the chains until folding takes it away."""
    model = batchnorm_blocks_model()
    half = imported(with_precision(model, "fp16"))
    assert ops_in(half["main"]).count("relax.astype") == 6  # one per BatchNorm
    assert not {"relax.nn.batch_norm", "relax.astype"} & set(ops_in(FoldBatchNorm()(half)["main"]))
    expected = find_chains(imported(model))
    assert sorted(spec.kind for spec in expected) == ["dw_pw", "pw_dw_pw"]
    assert find_chains(half) == as_float16(expected)


def test_float16_batchnorm_computed_in_float32_is_folded_with_both_casts():
    """Float32 statistics on float16 data: the importer casts to float32 before the BatchNorm and
    back after it (then comes with_precision's Cast); the fold replaces all three."""
    model = with_precision(batchnorm_blocks_model(), "fp16")
    stats = {
        name for node in model.graph.node if node.op_type == "BatchNormalization" for name in node.input[1:]
    }
    for tensor in model.graph.initializer:
        if tensor.name in stats:
            tensor.CopyFrom(
                numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)
            )
    mod = imported(model)
    assert "float32" in mod["main"].script()
    assert ops_in(mod["main"]).count("relax.astype") == 6 * 3  # data in, out, and the Cast
    assert find_chains(mod) == as_float16(find_chains(imported(batchnorm_blocks_model())))
    fused = FoldAndFuse(FuseDepthwisePointwise("llvm"))(mod)
    assert ops_in(fused["main"]).count("relax.nn.batch_norm") == 1  # the dense conv's, with its casts
    assert ops_in(fused["main"]).count("relax.astype") == 3
    assert len(fcm_kernels(fused)) == 2


def test_float16_mobilenet_v2_fuses_the_chains_of_float32():
    model = build_model("mobilenet_v2")
    fused = {p: fcm_tvm.compile(with_precision(model, p), "h100", fuse="all").fused for p in ("fp32", "fp16")}
    assert len(fused["fp32"]) >= 10
    assert [chain.spec["dtype"] for chain in fused["fp16"]] == ["float16"] * len(fused["fp32"])
    without_dtype = {
        p: [(chain.function, {k: v for k, v in chain.spec.items() if k != "dtype"}) for chain in chains]
        for p, chains in fused.items()
    }
    assert without_dtype["fp16"] == without_dtype["fp32"]


def test_clip_bounds_of_shape_one_are_recognised():
    """ONNX says Clip bounds are scalars, but exporters (and onnxruntime) accept shape [1] too."""
    stages = [Conv("pw", 16, activation="clip6"), Conv("dw", activation="clip6"), Conv("pw", 8)]
    model = chain_model(stages)
    bounds = {name for node in model.graph.node if node.op_type == "Clip" for name in node.input[1:]}
    for tensor in model.graph.initializer:
        if tensor.name in bounds:
            tensor.dims.append(1)
    assert [spec.kind for spec in find_chains(imported(model))] == ["pw_dw_pw"]


def test_with_precision_keeps_scalars_scalar():
    model = chain_model([Conv("pw", 16, activation="clip6"), Conv("dw", activation="clip6")])
    for precision in ("fp16", "fp64"):
        cast = with_precision(model, precision)
        assert [list(t.dims) for t in cast.graph.initializer] == [
            list(t.dims) for t in model.graph.initializer
        ]


# ---- what is rejected, and why ----

REJECTED = {
    "grouped convolution": ([Conv("dw", groups=2), Conv("pw", 8)], "grouped 3x3"),
    "dilation 2": ([Conv("dw", dilation=2, pads=(2, 2, 2, 2)), Conv("pw", 8)], "dilation (2, 2)"),
    "channel multiplier 2": ([Conv("dw", multiplier=2), Conv("pw", 8)], "channel multiplier 2"),
    "1x1 with stride 2": ([Conv("dw"), Conv("pw", 8, stride=2)], "1x1 convolution with stride (2, 2)"),
    "9x9 depthwise": ([Conv("dw", kernel=9), Conv("pw", 8)], "depthwise kernel 9x9"),
}


@pytest.mark.parametrize("case", REJECTED)
def test_unsupported_convolutions_are_not_matched(case):
    stages, reason = REJECTED[case]
    mod = imported(chain_model(stages))
    assert find_chains(mod) == []
    assert any(reason in found for found in rejections(mod)), rejections(mod)


def two_consumer_model() -> onnx.ModelProto:
    """x -> DW -> PW -> out, where the DW output is also read by a second branch."""
    builder = GraphBuilder()
    y, _ = builder.conv("x", 8, Conv("dw", activation="relu"))
    z, _ = builder.conv(y, 8, Conv("pw", 8))
    side = builder.node("Sigmoid", [y])
    return builder.model({"x": (1, 8, 10, 10)}, [builder.node("Add", [z, side])], 17)


def test_intermediate_read_by_another_op_is_not_fused_away():
    assert find_chains(imported(two_consumer_model())) == []


def test_intermediate_that_is_also_a_graph_output_is_not_fused_away():
    builder = GraphBuilder()
    y, _ = builder.conv("x", 8, Conv("dw", activation="relu"))
    z, _ = builder.conv(y, 8, Conv("pw", 8))
    assert find_chains(imported(builder.model({"x": (1, 8, 10, 10)}, [z, y], 17))) == []


def test_broadcast_add_after_the_chain_is_not_a_residual():
    stages = [Conv("dw"), Conv("pw", 8)]
    builder = GraphBuilder()
    y, _ = builder.conv("x", 8, stages[0])
    z, _ = builder.conv(y, 8, stages[1])
    out = builder.node("Add", [z, builder.random((1, 8, 1, 1), "r")])  # a broadcast add, not a residual
    (spec,) = find_chains(imported(builder.model({"x": (1, 8, 10, 10)}, [out], 17)))
    assert not spec.residual


# ---- the rewrite ----


def test_rewrite_calls_one_kernel_that_records_its_spec():
    stages = [Conv("pw", 32, activation="clip6"), Conv("dw", activation="clip6"), Conv("pw", 8)]
    mod = imported(chain_model(stages, residual=True, stock_ops=True))
    fused = FuseDepthwisePointwise("llvm")(mod)
    (name, kernel), *_ = fcm_kernels(fused).items()
    assert name == "fcm_pw_dw_pw_0" and len(fcm_kernels(fused)) == 1
    record = json.loads(str(kernel.attrs[SPEC_ATTR]))
    assert spec_from_record(record) == find_chains(mod)[0]
    assert record["calls"] == 1 and record["tiles"] is None
    assert int(kernel.attrs["op_pattern"]) == 8  # opaque: FuseOps must not merge it
    assert callees(fused["main"]) == [name]  # both Clips were in the chain
    assert sorted(gv.name_hint for gv in fused.get_global_vars()) == [name, "main"]  # their PrimFuncs too
    assert ops_in(fused["main"]).count("relax.nn.conv2d") == 1  # only the stock 3x3 convolution is left


def test_identical_chains_share_one_kernel():
    builder = GraphBuilder()
    x, channels = "x", 8
    for stage in [Conv("dw", activation="relu"), Conv("pw", 8), Conv("dense"), Conv("dw", activation="relu")]:
        x, channels = builder.conv(x, channels, stage)
    x, _ = builder.conv(x, channels, Conv("pw", 8))
    fused = FuseDepthwisePointwise("llvm")(imported(builder.model({"x": (1, 8, 10, 10)}, [x], 17)))
    (kernel,) = fcm_kernels(fused).values()
    assert json.loads(str(kernel.attrs[SPEC_ATTR]))["calls"] == 2
    assert callees(fused["main"]) == ["fcm_dw_pw_0", "fcm_dw_pw_0"]


def test_decide_sees_the_longest_chain_first_and_may_pick_a_shorter_one():
    stages = [Conv("pw", 32, activation="relu"), Conv("dw", activation="relu"), Conv("pw", 8)]
    mod = imported(chain_model(stages))
    seen = []

    def decide(spec: FcmSpec) -> Decision:
        seen.append(spec.kind)
        return Decision(spec.kind == "dw_pw", FcmTiles(16, 4, 4, 64), "only dw_pw")

    fused = FuseDepthwisePointwise("llvm", decide)(mod)
    assert seen[:2] == ["pw_dw_pw", "dw_pw"]
    (kernel,) = fcm_kernels(fused).values()
    record = json.loads(str(kernel.attrs[SPEC_ATTR]))
    assert record["kind"] == "dw_pw" and record["reason"] == "only dw_pw"
    assert FcmTiles(**record["tiles"]) == FcmTiles(16, 4, 4, 64)
    assert ops_in(fused["main"]).count("relax.nn.conv2d") == 1  # the first PW stays stock


@pytest.mark.parametrize("residual", [False, True])
def test_a_declined_block_whose_head_is_the_better_fallback_gets_its_head_fused_not_its_tail(residual):
    """Both parts would be accepted; the whole block's decision says the PW->DW head saves more,
    so no chain through its last PW is asked about: not the tail (tried first, at the same last
    binding) and, for a residual block, neither the block nor its tail read without the add (at
    the last PW's own binding, whose decision knows nothing of the head)."""
    stages = [Conv("pw", 32, activation="relu"), Conv("dw", activation="relu"), Conv("pw", 8)]
    mod = imported(chain_model(stages, residual=residual))
    seen = []

    def decide(spec: FcmSpec) -> Decision:
        seen.append((spec.kind, spec.residual))
        if spec.kind == "pw_dw_pw":
            head = "head" if spec.residual == residual else None  # the block as it is in the graph
            return Decision(False, reason="its head is the faster fallback", fallback=head)
        return Decision(True, FcmTiles(16, 4, 4, 64))

    fused = FuseDepthwisePointwise("llvm", decide)(mod)
    assert seen == [("pw_dw_pw", residual), ("pw_dw", False)]
    (kernel,) = fcm_kernels(fused).values()
    assert json.loads(str(kernel.attrs[SPEC_ATTR]))["kind"] == "pw_dw"
    assert ops_in(fused["main"]).count("relax.nn.conv2d") == 1  # the last PW stays stock


def test_with_batchnorms_a_residual_block_whose_head_is_the_better_fallback_still_gets_its_head(rng):
    """FoldAndFuse rewrites twice: the folded graph, then the graph folded only where the first
    rewrite fused. There the last PW, next to its unfolded BatchNorm, reads as a bare conv, so the
    block is no longer residual, a chain whose decision (here: no fallback) knows nothing of the
    head. The second rewrite replays the first one's decisions and fuses the head again."""
    builder = GraphBuilder("float32", 0)
    x, channels = "x", 8
    for conv in [
        Conv("pw", 32, bias=False, batchnorm=True, activation="relu"),
        Conv("dw", bias=False, batchnorm=True, activation="relu"),
        Conv("pw", 8, bias=False, batchnorm=True),
    ]:
        x, channels = builder.conv(x, channels, conv)
    model = builder.model({"x": (1, 8, 10, 10)}, [builder.node("Add", [x, "x"])], 17)

    def decide(spec: FcmSpec) -> Decision:
        if spec.kind == "pw_dw_pw":
            return Decision(False, fallback="head" if spec.residual else None)
        return Decision(True, FcmTiles(16, 4, 4, 64))

    fused = FoldAndFuse(FuseDepthwisePointwise("llvm", decide))(imported(model))
    (kernel,) = fcm_kernels(fused).values()
    assert json.loads(str(kernel.attrs[SPEC_ATTR]))["kind"] == "pw_dw"
    assert ops_in(fused["main"]).count("relax.nn.conv2d") == 1  # the last PW, stock
    assert ops_in(fused["main"]).count("relax.nn.batch_norm") == 1  # with its own BatchNorm
    inputs = random_inputs(model, rng)
    assert relative_error(run_llvm(fused, inputs), float64_reference(model, inputs)[0]) < 1e-5


def test_decide_saying_no_leaves_the_module_unchanged():
    stages = [Conv("pw", 32, activation="relu"), Conv("dw", activation="relu"), Conv("pw", 8)]
    mod = imported(chain_model(stages, residual=True))
    unchanged = FuseDepthwisePointwise("llvm", lambda spec: Decision(False))(mod)
    tvm.ir.assert_structural_equal(unchanged, mod)


def test_planner_without_a_gpu_fuses_nothing():
    mod = imported(chain_model([Conv("dw"), Conv("pw", 8)]))
    tvm.ir.assert_structural_equal(FusePlanner("llvm", None)(mod), mod)


def test_planner_decides_with_the_gpu_and_the_baseline_it_was_given(monkeypatch):
    asked = []

    def plan_chain(spec, gpu, tuned, cuda_graph):
        asked.append((spec.kind, gpu.key, tuned, cuda_graph))
        return Decision(True, FcmTiles(8, 8, 8, 64), "cheaper fused")

    monkeypatch.setitem(sys.modules, "fcm_tvm.planner", types.SimpleNamespace(plan_chain=plan_chain))
    mod = imported(chain_model([Conv("dw"), Conv("pw", 8)]))
    fused = FusePlanner("llvm", "h100")(mod)
    FusePlanner("llvm", "a100", tuned=True)(mod)
    FusePlanner("llvm", "a100", cuda_graph=True)(mod)
    assert asked == [
        ("dw_pw", "h100", False, False),
        ("dw_pw", "a100", True, False),
        ("dw_pw", "a100", False, True),
    ]
    record = json.loads(str(fcm_kernels(fused)["fcm_dw_pw_0"].attrs[SPEC_ATTR]))
    assert record["reason"] == "cheaper fused" and record["tiles"]["threads"] == 64


def test_weights_as_function_parameters_pass_through_to_the_kernel(rng):
    model = chain_model([Conv("dw", activation="relu"), Conv("pw", 16)])
    mod = imported(model, keep_params=True)
    fused = FuseDepthwisePointwise("llvm")(mod)
    assert len(fcm_kernels(fused)) == 1
    mod_params = fused["main"].attrs["params"]
    (x,) = random_inputs(model, rng)
    actual = run_llvm(fused, [x, *(p.numpy() for p in mod_params)])
    assert relative_error(actual, float64_reference(model, [x])[0]) < 1e-5


def bind_weights(mod: tvm.IRModule) -> tvm.IRModule:
    """What a caller that imported with keep_params_in_input=True must do before FoldBatchNorm."""
    detached, params = relax.frontend.detach_params(mod)
    main = detached["main"]
    weights = main.params[int(main.attrs["num_input"]) :]
    return relax.transform.BindParams("main", dict(zip(weights, params["main"])))(detached)


def test_batchnorm_needs_constant_weights():
    mod = imported(chain_model([Conv("dw", batchnorm=True), Conv("pw", 16)]), keep_params=True)
    assert "relax.nn.batch_norm" in ops_in(FoldBatchNorm()(mod)["main"])  # parameters: left alone
    assert find_chains(mod) == []
    assert [spec.kind for spec in find_chains(bind_weights(mod))] == ["dw_pw"]


# ---- BatchNorm folding numerics ----


def batchnorm_model() -> onnx.ModelProto:
    """Conv+BN in the shapes BN follows in practice: with and without bias, DW, dense, grouped."""
    builder = GraphBuilder(seed=1)
    x, channels = "x", 8
    for conv in [
        Conv("dense", 16, batchnorm=True, activation="relu"),
        Conv("dw", bias=False, batchnorm=True),
        Conv("pw", 16, groups=2, batchnorm=True, activation="relu"),
        Conv("pw", 8, bias=True, batchnorm=True),
    ]:
        x, channels = builder.conv(x, channels, conv)
    return builder.model({"x": (2, 8, 9, 9)}, [x], 17)


def test_batchnorm_folding_matches_onnxruntime_and_float64(rng):
    model = batchnorm_model()
    folded = FoldBatchNorm()(imported(model))
    assert "relax.nn.batch_norm" not in ops_in(folded["main"])
    inputs = random_inputs(model, rng)
    actual = run_llvm(folded, inputs)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert relative_error(actual, session.run(None, {"x": inputs[0]})[0]) < 1e-5
    assert relative_error(actual, float64_reference(model, inputs)[0]) < 1e-5


def test_batchnorm_after_a_conv_read_elsewhere_is_not_folded():
    builder = GraphBuilder()
    y = builder.node(
        "Conv", ["x", builder.random((8, 1, 3, 3), "w")], kernel_shape=[3, 3], pads=[1] * 4, group=8
    )
    bn = builder.batchnorm(y, 8)
    model = builder.model({"x": (1, 8, 6, 6)}, [builder.node("Add", [bn, y])], 17)
    mod = imported(model)
    tvm.ir.assert_structural_equal(FoldBatchNorm()(mod), mod)


# ---- the FCM kernel survives the stock pipeline ----


def cuda_source(executable) -> str:
    source = module_cuda_source(executable.mod)
    assert source is not None, "no CUDA module"
    return source


def kernel_definition(source: str, name: str) -> str:
    """The CUDA source of kernel ``name``: from its definition (after the declaration) to the next."""
    start = source.rindex(f"{name}_kernel(")
    end = source.find('extern "C" __global__', start)
    return source[start : end if end >= 0 else len(source)]


@pytest.fixture(scope="module")
def cuda_build():
    """A chain between stock ops (FuseOps would like to merge them), built for sm_90."""
    stages = [Conv("pw", 32, activation="clip6"), Conv("dw", activation="clip6"), Conv("pw", 8)]
    mod = imported(chain_model(stages, residual=True, stock_ops=True))
    target = tvm.target.Target(SM90)
    fused = FuseDepthwisePointwise(target)(FoldBatchNorm()(mod))
    (name, kernel), *_ = fcm_kernels(fused).items()
    with target:
        executable = tvm.compile(fused, target=target)
    return name, kernel, cuda_source(executable)


def test_fcm_kernel_reaches_cuda_source_as_scheduled(cuda_build):
    name, kernel, source = cuda_build
    assert bool(kernel.attrs["tirx.is_scheduled"])  # dlight and MetaSchedule leave it alone
    assert f"{name}_kernel(" in source
    body = kernel_definition(source, name)
    shared = re.findall(r'(\w+) = T\.sblock_alloc_buffer\([^\n]*scope="shared"', kernel.script())
    assert shared and any(re.search(rf"__shared__[^;]*\b{buffer}_ptr\b", body) for buffer in shared)
    # not merged with the stock ops around it: the kernel takes exactly the FCM's parameters
    signature = body[: body.index(")")]
    assert signature.count("__restrict__") == len(kernel.params)


def test_cuda_source_with_the_fcm_kernel_compiles_with_nvcc(cuda_build, nvcc: str, tmp_path: Path):
    _, _, source = cuda_build
    (tmp_path / "fcm.cu").write_text(source)
    result = subprocess.run(
        [nvcc, "--cubin", "-arch=sm_90", "-o", str(tmp_path / "fcm.cubin"), str(tmp_path / "fcm.cu")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_batchnorm_is_folded_only_into_the_convs_a_chain_absorbs(rng):
    """Every conv left to stock TVM keeps its BatchNorm, so its kernel is stock TVM's own."""
    builder = GraphBuilder("float32", 0)
    x, channels = builder.conv("x", 8, Conv("dense", batchnorm=True, activation="relu"))
    x, channels = builder.conv(x, channels, Conv("dw", batchnorm=True, activation="clip6"))
    x, channels = builder.conv(x, channels, Conv("pw", 16, batchnorm=True))
    model = builder.model({"x": (1, 8, 10, 10)}, [x], 17)
    mod = imported(model)
    fused = FoldAndFuse(FuseDepthwisePointwise("llvm"))(mod)
    assert ops_in(mod["main"]).count("relax.nn.batch_norm") == 3
    assert ops_in(fused["main"]).count("relax.nn.batch_norm") == 1  # the dense conv's
    assert len(fcm_kernels(fused)) == 1
    inputs = random_inputs(model, rng)
    assert relative_error(run_llvm(fused, inputs), float64_reference(model, inputs)[0]) < 1e-5
