"""Issue 5: the model zoo builds the published architectures, layer for layer, as valid ONNX.

The layer-table checks read the built ONNX graph (not the tables that built it) and compare it
with the papers' and torchvision's/timm's definitions.
"""

from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fcm_tvm.errors import FcmError
from fcm_tvm.models import build_model, count_parameters, list_models, model_info
from fcm_tvm.models.registry import markdown_table
from fcm_tvm.reference import float64_reference
from tests.conftest import relative_error

ort = pytest.importorskip("onnxruntime")

NAMES = [info.name for info in list_models()]
REQUIRED_CNNS = {
    "mobilenet_v1",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "mnasnet1_0",
    "proxylessnas_gpu",
    "convnext_tiny",
}
VISION_TRANSFORMERS = {"mobilevit_xxs", "mobilevit_xs", "mobilevit_s"}
SMALL = {"batch": 2, "resolution": 64}


@functools.cache
def small(name: str, **options) -> onnx.ModelProto:
    """Each model once per test session at 64x64, batch 2 (the size most tests use)."""
    return build_model(name, **SMALL, **options)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def random_input(rng: np.random.Generator, batch: int = 2, resolution: int = 64) -> np.ndarray:
    return rng.standard_normal((batch, 3, resolution, resolution)).astype(np.float32)


def weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


def attribute(node: onnx.NodeProto, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def depthwise_convs(model: onnx.ModelProto) -> list[tuple[int, int, int]]:
    """(channels, kernel, stride) of every depthwise conv (groups == channels > 1), in graph order."""
    found = []
    for node in model.graph.node:
        group = attribute(node, "group", 1)
        if node.op_type == "Conv" and group > 1:
            out_channels, in_per_group = weights(model)[node.input[1]].shape[:2]
            assert out_channels == group and in_per_group == 1, f"{node.name} is grouped, not depthwise"
            found.append((group, attribute(node, "kernel_shape")[0], attribute(node, "strides")[0]))
    return found


def dims(value: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in value.type.tensor_type.shape.dim]


def ops(model: onnx.ModelProto, op_type: str) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type == op_type]


def producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def squeeze_excite_widths(model: onnx.ModelProto) -> list[int]:
    """Bottleneck width of each squeeze-and-excitation: a Conv fed by a GlobalAveragePool."""
    made_by = producers(model)
    return [
        weights(model)[node.input[1]].shape[0]
        for node in ops(model, "Conv")
        if node.input[0] in made_by and made_by[node.input[0]].op_type == "GlobalAveragePool"
    ]


def residual_adds(model: onnx.ModelProto) -> int:
    """Adds of two activations (not of a bias or constant initializer)."""
    constants = {tensor.name for tensor in model.graph.initializer}
    return sum(1 for node in ops(model, "Add") if not constants & set(node.input))


def gemm_weights(model: onnx.ModelProto) -> list[tuple[int, ...]]:
    return [weights(model)[node.input[1]].shape for node in ops(model, "Gemm")]


# ---------------------------------------------------------------- the registry


def test_the_zoo_has_the_required_cnns_and_vision_transformers_with_depthwise_convs():
    assert set(NAMES) >= REQUIRED_CNNS | VISION_TRANSFORMERS
    for name in VISION_TRANSFORMERS:
        assert depthwise_convs(small(name)) and ops(small(name), "Softmax")


def test_every_model_says_where_its_published_figure_comes_from():
    for info in list_models():
        assert info.family and info.source and info.description and info.published_params > 1e6


def test_an_unknown_name_is_an_fcm_error_that_lists_the_known_ones():
    with pytest.raises(FcmError, match="unknown model 'mobilenet_v9'.*mobilenet_v2.*mobilevit_s"):
        build_model("mobilenet_v9")
    with pytest.raises(FcmError, match="known models"):
        model_info("resnet50")


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"batch": 0}, "batch"),
        ({"resolution": 16}, "resolution"),
        ({"resolution": 224.0}, "resolution"),
        ({"opset": 12}, "opset"),
        ({"opset": 19}, "opset"),
    ],
)
def test_bad_build_options_are_fcm_errors_naming_the_option(options, problem):
    with pytest.raises(FcmError, match=problem):
        build_model("mobilenet_v2", **options)


# ---------------------------------------------------------------- every model


@pytest.mark.parametrize("name", NAMES)
def test_model_is_valid_onnx_with_the_published_parameter_count(name):
    model = small(name)
    onnx.checker.check_model(model, full_check=True)
    published = model_info(name).published_params
    assert abs(count_parameters(model) - published) <= 0.01 * published


@pytest.mark.parametrize("name", NAMES)
def test_input_is_nchw_float32_and_output_is_batch_by_1000_at_two_sizes(name):
    for batch, resolution in [(SMALL["batch"], SMALL["resolution"]), (1, 224)]:
        model = small(name) if resolution == SMALL["resolution"] else build_model(name)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        (graph_input,) = inferred.graph.input
        (graph_output,) = inferred.graph.output
        assert graph_input.name == "input" and graph_output.name == "logits"
        assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert dims(graph_input) == [batch, 3, resolution, resolution]
        assert dims(graph_output) == [batch, 1000]


@pytest.mark.parametrize("name", NAMES)
def test_tvm_relax_imports_the_model(name):
    from tvm.relax.frontend.onnx import from_onnx

    module = from_onnx(small(name))
    assert [int(d) for d in module["main"].ret_ty.shape] == [SMALL["batch"], 1000]


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_runs_it_with_order_one_logits_that_depend_on_the_image(name, rng):
    logits = run(small(name), random_input(rng))
    assert logits.shape == (2, 1000) and np.isfinite(logits).all()
    assert 0.05 < logits.std() < 20, "activations exploded or vanished through the network"
    assert np.std(logits[0] - logits[1]) > 0.01 * logits.std(), "the logits ignore the image"


# ---------------------------------------------------------------- BatchNorm folding, opsets, seeds


@pytest.mark.parametrize("name", ["mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "mobilevit_xxs"])
def test_folded_batchnorm_computes_what_explicit_batchnorm_computes(name, rng):
    explicit, folded = small(name), small(name, fold_bn=True)
    assert ops(explicit, "BatchNormalization") and not ops(folded, "BatchNormalization")
    x = random_input(rng)
    expected = float64_reference(explicit, [x])[0]
    assert relative_error(run(folded, x), expected) < 1e-4
    assert relative_error(run(explicit, x), expected) < 1e-4
    # each folded BatchNorm trades its scale and shift (2C parameters) for a conv bias (C)
    folded_channels = sum(weights(explicit)[n.input[1]].size for n in ops(explicit, "BatchNormalization"))
    assert count_parameters(explicit) - count_parameters(folded) == folded_channels


@pytest.mark.parametrize("opset", [13, 14, 15, 16, 17, 18])
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "mobilevit_xxs"])
def test_every_opset_from_13_to_18_writes_the_same_function(name, opset, rng):
    # 96x96 makes MobileViT resize its 3x3 map to 4x4 and back; below 14 hardswish is
    # x * HardSigmoid(x), below 17 LayerNorm is decomposed into ReduceMean and friends
    model = build_model(name, batch=1, resolution=96, opset=opset)
    onnx.checker.check_model(model, full_check=True)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    x = random_input(rng, batch=1, resolution=96)
    reference = run(build_model(name, batch=1, resolution=96, opset=17), x)
    assert relative_error(run(model, x), reference) < 1e-5


def test_the_same_seed_builds_the_same_model_and_another_seed_other_weights():
    first = build_model("mobilenet_v3_small", resolution=32)
    assert first.SerializeToString() == build_model("mobilenet_v3_small", resolution=32).SerializeToString()
    other = build_model("mobilenet_v3_small", resolution=32, seed=1)
    assert [n.op_type for n in other.graph.node] == [n.op_type for n in first.graph.node]
    assert not np.array_equal(first.graph.initializer[0].raw_data, other.graph.initializer[0].raw_data)


def test_weights_do_not_depend_on_resolution_or_batch():
    a, b = build_model("mnasnet1_0", resolution=32), build_model("mnasnet1_0", batch=3, resolution=64)
    conv_weights = [n.input[1] for n in ops(a, "Conv")]
    assert all(np.array_equal(weights(a)[w], weights(b)[w]) for w in conv_weights)


# ---------------------------------------------------------------- layer tables, read back from the graph


def test_mobilenet_v1_is_a_stem_and_13_separable_layers():
    model = small("mobilenet_v1")
    assert depthwise_convs(model) == [
        (32, 3, 1), (64, 3, 2), (128, 3, 1), (128, 3, 2), (256, 3, 1), (256, 3, 2),
        (512, 3, 1), (512, 3, 1), (512, 3, 1), (512, 3, 1), (512, 3, 1), (512, 3, 2), (1024, 3, 1),
    ]  # fmt: skip
    assert len(ops(model, "Conv")) == 1 + 2 * 13 and len(ops(model, "Clip")) == 27  # ReLU6 everywhere
    assert gemm_weights(model) == [(1000, 1024)]


def test_mobilenet_v2_has_17_inverted_residuals_in_7_stages():
    model = small("mobilenet_v2")
    dw = depthwise_convs(model)
    assert len(dw) == 17 and {k for _, k, _ in dw} == {3}
    assert [s for *_, s in dw] == [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 1, 2, 1, 1, 1]
    # expansion 6 after the first block: DW width is 6x the block input
    assert [c for c, *_ in dw] == [
        32, 96, 144, 144, 192, 192, 192, 384, 384, 384, 384, 576, 576, 576, 960, 960, 960
    ]  # fmt: skip
    assert residual_adds(model) == 10  # every stride-1 block that keeps its width
    assert gemm_weights(model) == [(1000, 1280)]


@pytest.mark.parametrize(
    ("name", "kernels", "strides", "se_widths", "hardswish", "gemms"),
    [
        (
            "mobilenet_v3_large",
            [3, 3, 3, 5, 5, 5, 3, 3, 3, 3, 3, 3, 5, 5, 5],
            [1, 2, 1, 2, 1, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1],
            [24, 32, 32, 120, 168, 168, 240, 240],
            1 + 9 * 2 + 1 + 1,  # stem, expand+DW of the 9 HS bottlenecks, last conv, classifier
            [(1280, 960), (1000, 1280)],
        ),
        (
            "mobilenet_v3_small",
            [3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 5],
            [2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1],
            [8, 24, 64, 64, 32, 40, 72, 144, 144],
            1 + 8 * 2 + 1 + 1,
            [(1024, 576), (1000, 1024)],
        ),
    ],
)
def test_mobilenet_v3_bottlenecks_activations_and_squeeze_excitation(
    name, kernels, strides, se_widths, hardswish, gemms
):
    model = small(name)
    assert [k for _, k, _ in depthwise_convs(model)] == kernels
    assert [s for *_, s in depthwise_convs(model)] == strides
    assert squeeze_excite_widths(model) == se_widths  # make_divisible(expanded / 4, 8)
    assert len(ops(model, "HardSigmoid")) == len(se_widths)  # every SE gate is a hardsigmoid
    assert len(ops(model, "HardSwish")) == hardswish
    assert gemm_weights(model) == gemms


def test_efficientnet_b0_has_16_mbconvs_with_silu_and_squeeze_excitation():
    model = small("efficientnet_b0")
    dw = depthwise_convs(model)
    assert [k for _, k, _ in dw] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [s for *_, s in dw] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    # SE squeezes to a quarter of the block's *input* channels
    assert squeeze_excite_widths(model) == [8, 4, 6, 6, 10, 10, 20, 20, 20, 28, 28, 28, 48, 48, 48, 48]
    sigmoid_of = {n.output[0]: n.input[0] for n in ops(model, "Sigmoid")}
    silu = [n for n in ops(model, "Mul") if sigmoid_of.get(n.input[1]) == n.input[0]]  # x * sigmoid(x)
    gates = [n for n in ops(model, "Mul") if n.input[1] in sigmoid_of and n not in silu]
    assert len(silu) == 1 + 15 + 16 + 16 + 1  # stem, 15 expansions, 16 DW, 16 SE bottlenecks, head
    assert len(gates) == 16  # x * sigmoid(SE(x)) in every block
    assert gemm_weights(model) == [(1000, 1280)]


def test_mnasnet1_0_is_a_sepconv_and_six_stacks_without_squeeze_excitation():
    model = small("mnasnet1_0")
    dw = depthwise_convs(model)
    assert [k for _, k, _ in dw] == [3, 3, 3, 3, 5, 5, 5, 5, 5, 5, 3, 3, 5, 5, 5, 5, 3]
    assert [s for *_, s in dw] == [1, 2, 1, 1, 2, 1, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert [c for c, *_ in dw][:5] == [32, 48, 72, 72, 72]  # SepConv, then expansion 3 on 16 and 24
    assert not squeeze_excite_widths(model) and not ops(model, "Sigmoid")


def test_proxylessnas_gpu_keeps_the_searched_layers_and_skips_the_zero_ones():
    model = small("proxylessnas_gpu")
    dw = depthwise_convs(model)
    assert [k for _, k, _ in dw] == [3, 5, 7, 3, 7, 5, 5, 3, 5, 7, 7, 7, 5, 7]
    assert [s for *_, s in dw] == [1, 2, 2, 1, 2, 1, 1, 1, 1, 2, 1, 1, 1, 1]
    assert [c for c, *_ in dw][:4] == [40, 72, 96, 168]  # MBConv1, then MBConv3 on 24 and 32
    assert residual_adds(model) == 7
    assert gemm_weights(model) == [(1000, 1728)]


def test_convnext_tiny_is_3_3_9_3_blocks_of_7x7_depthwise_layernorm_and_gelu():
    model = small("convnext_tiny")
    dw = depthwise_convs(model)
    assert [c for c, *_ in dw] == [96] * 3 + [192] * 3 + [384] * 9 + [768] * 3
    assert {(k, s) for _, k, s in dw} == {(7, 1)}
    assert len(ops(model, "Erf")) == 18  # one exact GELU per block
    assert len(ops(model, "LayerNormalization")) == 1 + 18 + 3 + 1  # stem, blocks, downsamples, head
    shapes = [(attribute(n, "kernel_shape")[0], attribute(n, "strides")[0]) for n in ops(model, "Conv")]
    assert shapes.count((2, 2)) == 3 and shapes.count((4, 4)) == 1  # downsampling, patchify stem
    assert residual_adds(model) == 18


@pytest.mark.parametrize(
    ("name", "mv2_widths", "transformer_dims"),
    [
        ("mobilevit_xxs", [32, 32, 48, 48, 48, 96, 128], [64] * 2 + [80] * 4 + [96] * 3),
        ("mobilevit_xs", [64, 128, 192, 192, 192, 256, 320], [96] * 2 + [120] * 4 + [144] * 3),
        ("mobilevit_s", [64, 128, 256, 256, 256, 384, 512], [144] * 2 + [192] * 4 + [240] * 3),
    ],
)
def test_mobilevit_is_mv2_blocks_then_transformers_over_patches(name, mv2_widths, transformer_dims):
    model = small(name)
    dw = depthwise_convs(model)
    assert [c for c, *_ in dw] == mv2_widths and [s for *_, s in dw] == [1, 2, 1, 1, 2, 2, 2]
    assert len(ops(model, "Softmax")) == 9  # 2 + 4 + 3 transformer layers
    qkv = [w.shape for w in weights(model).values() if w.ndim == 2 and w.shape[1] == 3 * w.shape[0]]
    assert [d for d, _ in qkv] == transformer_dims
    # each MobileViT block fuses its input with the transformer's output: 3x3 conv over a concat
    assert len(ops(model, "Concat")) == 3


# ---------------------------------------------------------------- docs


def test_docs_table_is_the_generated_one():
    from pathlib import Path

    docs = Path(__file__).resolve().parent.parent / "docs" / "models.md"
    assert markdown_table() in docs.read_text(), "regenerate it with: python -m fcm_tvm.models"
