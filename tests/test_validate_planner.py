"""The planner's validation against measurement: errors, medians and the decision rule, on small inputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from fcm_tvm.benchmarks import validate_planner as vp
from fcm_tvm.benchmarks.chains import LayerCase

CASE = "tiny_net_b1_fp32"


def ledger(dram: float, read: float, l2: float, time_us: float = 10.0) -> dict[str, float]:
    return {"dram": dram, "dram_read": read, "dram_write": dram - read, "l2": l2, "time_us": time_us}


PREDICTIONS = [
    vp.ChainPrediction("8x4x4 dw3s1+pw8", "c8 4x4 t128", True, ledger(120, 100, 300), ledger(200, 100, 400)),
    vp.ChainPrediction("8x4x4 pw16+dw3s1", "c8 4x4 t128", False, ledger(90, 80, 100), ledger(150, 80, 200)),
]


def predict(label: str) -> list[vp.ChainPrediction]:
    assert label == CASE
    return PREDICTIONS


def measured(chain: int, variant: str, dram: float, l2: float) -> dict:
    shape = PREDICTIONS[chain].shape
    return {"case": CASE, "chain": chain, "variant": variant, "shape": shape, "bytes": dram, "l2_bytes": l2}


def layer_row(chain: int, fcm_us, stock_us, fused: bool, **extra) -> dict:
    row = {"model": "tiny_net", "batch": 1, "precision": "fp32", "chain": chain, "shape": "s"}
    return {**row, "fcm_us": fcm_us, "stock_us": stock_us, "fused_by_planner": fused, **extra}


# -- arithmetic ------------------------------------------------------------------------------


def test_a_case_label_gives_back_its_layer_case():
    case = LayerCase("efficientnet_b0", 32, "fp16")
    assert vp.parse_case(case.label) == case
    with pytest.raises(ValueError, match="not a case label"):
        vp.parse_case("mobilenet_v2_fp32")


def test_the_relative_error_is_signed_and_unknown_without_a_measurement():
    assert vp.relative_error(150, 100) == pytest.approx(0.5)
    assert vp.relative_error(50, 100) == pytest.approx(-0.5)
    assert vp.relative_error(50, 0) is None and vp.relative_error(None, 100) is None


def test_the_median_error_is_of_absolute_values_and_skips_unknowns():
    assert vp.median_abs_error([0.1, -0.5, 0.3, None]) == pytest.approx(0.3)
    assert vp.median_abs_error([-0.2, 0.4]) == pytest.approx(0.3)  # even count: mean of the middle two
    assert vp.median_abs_error([None]) is None


# -- the decision rule -----------------------------------------------------------------------


def test_a_choice_within_five_percent_of_the_best_is_right():
    assert vp.choice_verdict({"fuse": 104.9, "keep": 100.0}, "fuse")["right"]
    assert not vp.choice_verdict({"fuse": 105.1, "keep": 100.0}, "fuse")["right"]
    verdict = vp.choice_verdict({"fuse": 50.0, "keep": 100.0}, "keep")
    assert verdict["best"] == "fuse" and verdict["vs_best"] == pytest.approx(2.0) and not verdict["right"]


def test_a_chosen_option_that_was_not_measured_is_wrong_and_no_measurement_is_unknown():
    assert vp.choice_verdict({"fuse": None, "keep": 100.0}, "fuse")["right"] is False
    assert vp.choice_verdict({"fuse": None, "keep": 100.0}, "keep")["right"]
    assert vp.choice_verdict({"fuse": None, "keep": None}, "keep")["right"] is None


def test_not_fusing_costs_the_tuned_stock_time_when_there_is_one():
    untuned = vp.decision_row(layer_row(0, 80.0, 100.0, fused=False))
    tuned = vp.decision_row(layer_row(0, 80.0, 100.0, fused=False, stock_tuned_us=70.0))
    assert untuned["keep_source"] == "stock_us" and not untuned["right"] and untuned["best"] == "fuse"
    assert tuned["keep_source"] == "stock_tuned_us" and tuned["keep_us"] == 70.0 and tuned["right"]


def test_cudnn_is_context_and_never_makes_a_choice_wrong():
    row = vp.decision_row(layer_row(0, 80.0, 100.0, fused=True, cudnn_us=10.0))
    assert row["right"] and row["best"] == "fuse"
    assert row["best_with_cudnn"] == "cudnn" and not row["right_with_cudnn"]


def test_the_decision_summary_counts_right_choices_against_the_target():
    rows = vp.decision_rows(
        [
            layer_row(0, 10.0, 100.0, fused=True),  # right
            layer_row(1, 100.0, 10.0, fused=False),  # right
            layer_row(0, 10.0, 100.0, fused=False),  # wrong: fusing was 10x faster
            layer_row(1, None, None, fused=False),  # not measured: not judged
        ],
        predict,
    )
    summary = vp.decision_summary(rows)
    assert (summary["chains"], summary["right"]) == (3, 2)
    assert summary["right_fraction"] == pytest.approx(2 / 3) and not summary["target_met"]
    assert summary["wrong"] == [f"{CASE}#0"]
    assert summary["stale"] == [f"{CASE}#0"]  # the planner (PREDICTIONS) fuses chain 0 now
    assert summary["measured_over_predicted_time"]["keep"] == pytest.approx(10.0)  # of 10, 1 and 10


# -- bytes -----------------------------------------------------------------------------------


def test_each_variant_is_compared_with_its_own_ledger():
    rows = vp.byte_rows([measured(0, "fcm", 100, 600), measured(0, "stock", 100, 400)], predict)
    fcm, stock = rows
    assert fcm["predicted_dram"] == 120 and fcm["dram_error"] == pytest.approx(0.2)
    assert fcm["dram_read_error"] == pytest.approx(0.0) and fcm["l2_error"] == pytest.approx(-0.5)
    assert fcm["tiles"] == "c8 4x4 t128" and stock["tiles"] is None
    assert stock["dram_error"] == pytest.approx(1.0) and stock["l2_error"] == pytest.approx(0.0)


def test_stock_with_its_batchnorm_kernels_and_the_folded_stock_get_their_own_ledgers():
    with_unfolded = [replace(PREDICTIONS[0], stock_unfolded=ledger(300, 100, 900))]
    rows = vp.byte_rows(
        [measured(0, "stock", 300, 900), measured(0, "stock_folded", 200, 400)], lambda label: with_unfolded
    )
    assert [row["predicted_dram"] for row in rows] == [300, 200]


def test_an_fcm_measured_with_recorded_tiles_is_priced_with_those_tiles():
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.schedules.spec import Depthwise, FcmSpec, Pointwise

    spec = FcmSpec(1, 8, 14, 14, (Depthwise(3), Pointwise(16)))
    one = ledger(1, 1, 1)
    chain = vp.ChainPrediction("8x14x14 dw3s1+pw16", "c16 7x7 t196 s1", True, one, one, spec)
    entry = {"case": CASE, "chain": 0, "variant": "fcm", "shape": chain.shape, "bytes": 1.0, "l2_bytes": 1.0}
    tiles = {"channel_tile": 8, "tile_h": 14, "tile_w": 14, "threads": 196, "split": 1}
    (row,) = vp.byte_rows([{**entry, "tiles": tiles}], lambda label: [chain], get_gpu("h100"))
    assert row["tiles"] == "c8 14x14 t196 s1"
    assert row["predicted_dram"] > 1, "priced by the cost model, not the planner's cached ledger"
    (row,) = vp.byte_rows([entry], lambda label: [chain], get_gpu("h100"))
    assert (row["tiles"], row["predicted_dram"]) == ("c16 7x7 t196 s1", 1)


def test_a_measurement_of_another_chain_than_the_zoo_gives_is_an_error():
    with pytest.raises(ValueError, match="the zoo gives"):
        vp.byte_rows([{**measured(0, "fcm", 1, 1), "shape": "other"}], predict)
    with pytest.raises(ValueError, match="not chain 5"):
        vp.byte_rows([{**measured(0, "fcm", 1, 1), "chain": 5}], predict)


def test_the_byte_summary_gives_medians_per_variant_and_the_target():
    rows = vp.byte_rows(
        [
            measured(0, "fcm", 100, 300),  # +20%
            measured(0, "stock", 100, 400),  # +100%
            measured(1, "fcm", 100, 100),  # -10%
            measured(1, "stock", 150, 200),  # 0%
        ],
        predict,
    )
    summary = vp.byte_summary(rows)
    errors = summary["dram_median_abs_error"]
    assert errors["fcm"] == pytest.approx(0.15) and errors["stock"] == pytest.approx(0.5)
    assert errors["all"] == pytest.approx(0.15)  # |errors| 0, 0.1, 0.2, 1.0
    assert summary["dram_target_met"] and summary["dram_within_target"] == pytest.approx(0.5)
    assert summary["chains"] == 2 and summary["rows"] == 4


def test_main_writes_the_json_and_the_markdown(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(vp, "cached_predictor", lambda gpu: predict)
    bytes_file, layers_file = tmp_path / "bytes.json", tmp_path / "layers.json"
    bytes_file.write_text(json.dumps([measured(0, "fcm", 100, 300), measured(0, "stock", 100, 400)]))
    layers_file.write_text(json.dumps({"context": {}, "rows": [layer_row(0, 10.0, 100.0, fused=True)]}))
    out = tmp_path / "out"
    assert vp.main(["--bytes", str(bytes_file), "--layers", str(layers_file), "--out", str(out)]) == 0
    data = json.loads((out / "planner_validation.json").read_text())
    assert data["summary"]["decisions"]["right"] == 1 and len(data["bytes"]) == 2
    text = (out / "planner_validation.md").read_text()
    assert "median |error| 60%" in text and "1 of 1 within 5%" in text


def test_main_pools_several_measurement_files(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(vp, "cached_predictor", lambda gpu: predict)
    files = {name: tmp_path / f"{name}.json" for name in ("b0", "b1", "l0", "l1")}
    files["b0"].write_text(json.dumps([measured(0, "fcm", 100, 300)]))
    files["b1"].write_text(json.dumps([measured(1, "stock", 150, 200)]))
    for name, chain in (("l0", 0), ("l1", 1)):
        files[name].write_text(json.dumps({"rows": [layer_row(chain, 10.0, 100.0, fused=True)]}))
    out = tmp_path / "out"
    argv = ["--bytes", str(files["b0"]), str(files["b1"]), "--layers", str(files["l0"]), str(files["l1"])]
    assert vp.main([*argv, "--out", str(out)]) == 0
    data = json.loads((out / "planner_validation.json").read_text())
    assert len(data["bytes"]) == 2 and data["summary"]["decisions"]["chains"] == 2


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results"


@pytest.mark.parametrize(
    ("byte_files", "layer_files"),
    [
        (
            ["dram_bytes_b1_fp32.json"],
            ["layers_b1_tuned_mobilenet_v2.json", "layers_b1_tuned_efficientnet_b0.json"],
        ),
        (
            ["dram_bytes_b32_fp32.json"],
            ["layers_b32_tuned_mobilenet_v2.json", "layers_b32_tuned_efficientnet_b0.json"],
        ),
    ],
    ids=["batch1", "batch32"],
)
def test_the_cost_model_meets_issue_4_targets_on_the_h100_measurements(byte_files, layer_files):
    """MobileNetV2 and EfficientNet-B0 on the H100 (ncu bytes, per-chain times in docs/results):
    DRAM bytes within 20% (median) and >= 90% of the decisions within 5% of the measured best."""
    from fcm_tvm.gpus import get_gpu

    gpu = get_gpu("h100")
    measured = [entry for name in byte_files for entry in json.loads((RESULTS / name).read_text())]
    rows = [row for name in layer_files for row in json.loads((RESULTS / name).read_text())["rows"]]
    summary = vp.validate(measured, rows, vp.cached_predictor(gpu), gpu)["summary"]
    assert summary["bytes"]["dram_median_abs_error"]["all"] < vp.DRAM_ERROR_TARGET
    assert summary["decisions"]["right_fraction"] >= vp.DECISION_TARGET
