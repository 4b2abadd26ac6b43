"""FuseGatedPointwise (up to pipeline.GATED_PW_MAX_BATCH; FCM_TVM_GATED_PW=1 or 0 overrides): a
float16 squeeze-excitation and the 1x1 convolution that alone reads its product become a gate call
and a gated PW call; BatchNorm is folded into exactly those convs; the rewritten model computes
what the ONNX model computes (llvm, float64 reference, fresh random inputs); and what does not fit
stays as it was."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import tvm
import tvm_ffi
from tvm.relax.frontend.onnx import from_onnx

import fcm_tvm
from fcm_tvm import pipeline
from fcm_tvm.errors import FcmError
from fcm_tvm.models import build_model
from fcm_tvm.models.graph import GraphBuilder
from fcm_tvm.pipeline import GATED_PW_ENV, GATED_TILES_ENV, gated_pw_max_batch, measured_gated_tiles
from fcm_tvm.precision import with_precision
from fcm_tvm.reference import float64_reference
from fcm_tvm.relay_passes import FuseGatedPointwise, FuseSqueezeExcite
from fcm_tvm.schedules.gated_pw_tc import GatedPointwise, GatedPwTiles, gated_pw_primfunc
from tests.conftest import relative_error
from tests.test_fuse_squeeze_excite import excite_records

SM90 = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})


def se_pw_model(
    residual: bool = True, precision: str = "fp16", product_output: bool = False
) -> onnx.ModelProto:
    """x (2, 32, 8, 8) -> squeeze-excitation -> 1x1 conv + BatchNorm [+ x]; ``product_output``:
    the model also returns the product."""
    b = GraphBuilder()
    x = b.input((2, 32, 8, 8), name="x")
    y = b.squeeze_excite(x, 8, act="silu", gate="sigmoid")
    z = b.conv(y, 32, 1, bn_eps=1e-5)
    model = b.finish(b.add(z, x) if residual else z, output_name="y")
    if product_output:
        project = [node for node in model.graph.node if node.op_type == "Conv"][-1]
        model.graph.output.append(
            onnx.helper.make_tensor_value_info(project.input[0], onnx.TensorProto.FLOAT, None)
        )
    return with_precision(model, precision)


def rewritten(model: onnx.ModelProto, target=SM90, max_batch: int | None = None) -> tvm.IRModule:
    mod = from_onnx(model, keep_params_in_input=False)
    return FuseSqueezeExcite(target)(FuseGatedPointwise(target, max_batch=max_batch)(mod))


@pytest.mark.parametrize(
    ("name", "blocks", "batch_norms"), [("efficientnet_b0", 16, 49), ("mobilenet_v3_large", 8, 46)]
)
def test_every_block_of_the_headline_se_models_becomes_a_gate_and_a_gated_pw(
    name, blocks, batch_norms
) -> None:
    mod = rewritten(with_precision(build_model(name), "fp16"))
    found = excite_records(mod)
    assert sum(r["calls"] for r in found if r["kind"] == "gated_pw") == blocks
    assert sum(r["calls"] for r in found if r["kind"] == "se") == blocks
    assert not any(r["kind"] == "se" and r["scales"] for r in found), "no product is written"
    text = mod.script()
    assert text.count("R.nn.batch_norm(") == batch_norms - blocks  # folded into the project convs only
    assert text.count("R.mean(") == 1  # the classifier's pool


@pytest.mark.parametrize("residual", [True, False])
def test_the_rewritten_model_matches_float64_on_llvm(residual, rng, monkeypatch) -> None:
    monkeypatch.setenv(GATED_PW_ENV, "1")
    model = se_pw_model(residual)
    x = rng.standard_normal((2, 32, 8, 8)).astype(np.float16)
    compiled = fcm_tvm.compile(model, "llvm")
    assert sorted(chain.kind for chain in compiled.fused) == ["gated_pw", "se"]
    assert relative_error(compiled.run(x)[0], float64_reference(model, [x])[0]) < 5e-3


def test_without_the_switch_the_pipeline_leaves_the_pw_to_stock(monkeypatch) -> None:
    monkeypatch.delenv(GATED_PW_ENV, raising=False)
    assert [chain.kind for chain in fcm_tvm.compile(se_pw_model(), "llvm").fused] == ["se"]


def test_a_batch_over_max_batch_keeps_its_product_and_its_batchnorm() -> None:
    kept = rewritten(se_pw_model(), max_batch=1)  # the model's batch is 2
    assert [(r["kind"], r["scales"]) for r in excite_records(kept)] == [("se", True)]
    assert kept.script().count("R.nn.batch_norm(") == 1
    assert [r["kind"] for r in excite_records(rewritten(se_pw_model(), max_batch=2))] == ["gated_pw", "se"]


@pytest.mark.parametrize(("setting", "max_batch"), [("1", None), ("0", 0), ("", 3)])
def test_the_switch_overrides_the_default_batch_limit(setting, max_batch, monkeypatch) -> None:
    monkeypatch.setattr(pipeline, "GATED_PW_MAX_BATCH", 3)
    monkeypatch.setenv(GATED_PW_ENV, setting)
    assert gated_pw_max_batch() == max_batch


def test_a_switch_that_is_neither_0_nor_1_is_an_error(monkeypatch) -> None:
    monkeypatch.setenv(GATED_PW_ENV, "yes")
    with pytest.raises(FcmError, match="FCM_TVM_GATED_PW='yes'"):
        gated_pw_max_batch()


def test_measured_tiles_replace_the_default_ones_of_their_kernel() -> None:
    spec, tiles = GatedPointwise(2, 32, 32, 8, 8, "none", True), GatedPwTiles(32, 32, 128, split=2, chunk=16)
    mod = from_onnx(se_pw_model(), keep_params_in_input=False)
    mod = FuseGatedPointwise(SM90, max_batch=None, measured_tiles={spec.key: tiles})(mod)
    [kernel] = [func for gvar, func in mod.functions_items() if gvar.name_hint.startswith("fcm_gated_pw")]
    assert tvm_ffi.structural_equal(kernel.body, gated_pw_primfunc(spec, tiles, SM90).body)
    assert not tvm_ffi.structural_equal(kernel.body, gated_pw_primfunc(spec, None, SM90).body)


def test_the_tiles_switch_reads_a_gpu_checks_json(tmp_path, monkeypatch) -> None:
    path = tmp_path / "gated_pw.json"
    path.write_text(
        '{"device": "H100", "rows": [{"key": "k", "tiles": "c32 p64 t128 s4 tc", '
        '"median_us": 9.5, "ok": true}]}'
    )
    monkeypatch.setenv(GATED_TILES_ENV, str(path))
    assert measured_gated_tiles() == {"k": GatedPwTiles(split=4)}
    monkeypatch.setenv(GATED_TILES_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(FcmError, match="FCM_TVM_GATED_TILES=.*missing.json: not a gated pointwise"):
        measured_gated_tiles()
    monkeypatch.delenv(GATED_TILES_ENV)
    assert measured_gated_tiles() == {}


def test_float32_and_a_product_read_elsewhere_stay_with_fuse_squeeze_excite() -> None:
    for model in (se_pw_model(precision="fp32"), se_pw_model(product_output=True)):
        found = excite_records(rewritten(model))
        assert [(r["kind"], r["scales"]) for r in found] == [("se", True)]
