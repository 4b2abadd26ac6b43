"""The table of measured chains: how it is written from benchmark rows, and what ships for the H100."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fcm_tvm.benchmarks.chains import fallback_chains
from fcm_tvm.benchmarks.measured_table import (
    Entry,
    best_per_chain,
    gpu_times,
    graph_kernels,
    graph_times,
    layer_entries,
    main,
    spec_from_row,
    tiles_from_text,
    wall_times,
    with_times,
    without_fcm_of,
)
from fcm_tvm.gpus import get_gpu
from fcm_tvm.planner.layers import model_chains
from fcm_tvm.planner.measured import from_row, measured, table_rows
from fcm_tvm.schedules import Depthwise, FcmSpec, FcmTiles, Pointwise, fcm_primfunc, tile_problems

from .test_schedules import CUDA

REPO = Path(__file__).resolve().parents[1]
SPEC = FcmSpec(1, 24, 56, 56, (Pointwise(144, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(24)), True)


def test_a_kernel_check_row_gives_back_its_spec_with_the_padding_spelt_out():
    row = {
        "input": [1, 24, 56, 56],
        "stages": [
            {"type": "pw", "out_channels": 144, "activation": "relu6"},
            {"type": "dw", "kernel": 3, "stride": 1, "pads": [1, 1, 1, 1], "activation": "relu6"},
            {"type": "pw", "out_channels": 24, "activation": "none"},
        ],
        "residual": True,
        "dtype": "float32",
    }
    assert spec_from_row(row).key == SPEC.key
    assert SPEC.key == "1x24x56x56 pw144:relu6 dw3s1p1111:relu6 pw24:none +res float32"


@pytest.mark.parametrize(
    "tiles",
    [
        FcmTiles(24, 8, 8, 256, 4),
        FcmTiles(24, 7, 7, 196, 1, 4),
        FcmTiles(24, 7, 7, 196, 1, 4, 8),
        FcmTiles(24, 8, 8, 128, 2, output_rows=4),
        FcmTiles(24, 8, 8, 128, 2, output_rows=2, weight_lanes=4),
        FcmTiles(24, 8, 8, 128, 2, patch_rows=2, patch_lanes=2, depthwise_cols=4),
        FcmTiles(24, 8, 8, 64, 2, output_rows=2, weight_lanes=4, depthwise_cols=2, output_cols=4),
    ],
)
def test_tiles_round_trip_through_their_label(tiles: FcmTiles):
    assert tiles_from_text(tiles.label) == tiles
    assert tiles_from_text("default") is None


def test_labels_of_tiles_measured_before_the_patch_knobs_stay_as_they_were():
    assert FcmTiles(24, 8, 8, 256, 4).label == "c24 8x8 t256 s4"
    assert FcmTiles(24, 8, 8, 256, 1, 2, 8).label == "c24 8x8 t256 s1 p2 u8"
    assert FcmTiles(24, 8, 8, 256, 1, 2, 8, 4).label == "c24 8x8 t256 s1 p2 u8 o4"


def test_the_fastest_fcm_and_the_measured_stock_time_are_kept_per_chain():
    slow, fast = FcmTiles(24, 8, 8, 256, 1), FcmTiles(24, 8, 8, 256, 8)
    rows = best_per_chain(
        [Entry(SPEC.key, SPEC.kind, slow, 51.5, 30.4), Entry(SPEC.key, SPEC.kind, fast, 18.3, None)]
    )
    assert rows == [{"key": SPEC.key, "fcm_us": 18.3, "stock_us": 30.4, "tiles": vars(fast)}]


def test_a_tuned_stock_time_is_kept_only_where_one_was_measured():
    tiles = FcmTiles(24, 8, 8, 256, 8)
    rows = best_per_chain(
        [Entry(SPEC.key, SPEC.kind, tiles, 18.3, 30.4), Entry(SPEC.key, SPEC.kind, tiles, 19.0, 31.0, 12.5)]
    )
    assert rows[0]["stock_tuned_us"] == 12.5 and rows[0]["fcm_us"] == 18.3
    assert "stock_tuned_us" not in best_per_chain([Entry(SPEC.key, SPEC.kind, tiles, 18.3, 30.4)])[0]
    row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": tiles.label, "fcm_us": 18.3, "stock_tuned_us": 12.5}
    assert layer_entries([row])[0].stock_tuned_us == 12.5
    assert without_fcm_of({SPEC.kind}, layer_entries([row]))[0].fcm_us == float("inf")  # stock stands


def test_the_h100_table_covers_every_mobilenet_v2_chain_at_batch_1_with_both_times():
    h100 = get_gpu("h100")
    for _, spec in model_chains("mobilenet_v2"):
        known = measured(spec, h100)
        assert known is not None and known.fcm_s > 0 and known.stock_s > 0
    assert table_rows("orin") == {}  # never measured: the model decides there


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_the_shipped_table_is_what_its_script_builds_from_the_committed_results(gpu, tmp_path):
    """So that every planner decision traces back to raw results in docs/results."""
    built = tmp_path / f"{gpu}.json"
    environment = {
        **os.environ,
        "OUTPUT": str(built),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    script = REPO / "tests" / "gpu" / f"{gpu}_table.sh"
    subprocess.run(["bash", str(script)], cwd=REPO, env=environment, check=True, capture_output=True)
    shipped = json.loads((REPO / "fcm_tvm" / "data" / "measured" / f"{gpu}.json").read_text())
    assert json.loads(built.read_text()) == shipped


def test_layer_rows_are_keyed_by_their_chain_key():
    row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": "c24 8x8 t256 s4", "fcm_us": 18.3, "stock_us": 30.4}
    assert layer_entries([row]) == [Entry(SPEC.key, SPEC.kind, FcmTiles(24, 8, 8, 256, 4), 18.3, 30.4)]


def test_a_pw_dw_pw_chain_falls_back_to_its_tail_then_its_head():
    tail, head = fallback_chains(SPEC)
    assert tail.key == "1x144x56x56 dw3s1p1111:relu6 pw24:none float32"
    assert head.key == "1x24x56x56 pw144:relu6 dw3s1p1111:relu6 float32"
    assert fallback_chains(tail) == fallback_chains(head) == []


def test_old_results_keep_their_stock_times_but_not_the_fcm_times_of_changed_kernels():
    dw_pw = "1x32x112x112 dw3s1p1111:relu6 pw16:none float32"
    tiles = FcmTiles(16, 8, 8, 256, 1)
    old = [
        Entry(SPEC.key, "pw_dw_pw", tiles, 51.5, 30.4),
        Entry(SPEC.key, "pw_dw_pw", tiles, 18.3, None),
        Entry(dw_pw, "dw_pw", tiles, 7.3, 23.0),
    ]
    kept = without_fcm_of({"pw_dw_pw"}, old)
    assert kept == [
        Entry(SPEC.key, "pw_dw_pw", tiles, float("inf"), 30.4),
        Entry(dw_pw, "dw_pw", tiles, 7.3, 23.0),
    ]


def test_the_latest_run_gives_a_chain_its_stock_time_old_results_first(tmp_path):
    """A block and its sub-chains timed in one run are priced from that run: the fallback's
    remaining PW is the difference of their stock times, which two runs' noise would skew."""

    def layers_file(name: str, stock_us: float) -> str:
        row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": "c24 8x8 t256 s4", "fcm_us": 18.3}
        (tmp_path / name).write_text(json.dumps({"rows": [{**row, "stock_us": stock_us}]}))
        return str(tmp_path / name)

    table = tmp_path / "table.json"
    early, late, old = (
        layers_file("early.json", 30.0),
        layers_file("late.json", 33.0),
        layers_file("old.json", 25.0),
    )
    main(["--gpu", "h100", "--layers", early, late, "--old-layers", old, "-o", str(table)])
    assert json.loads(table.read_text())["chains"][0]["stock_us"] == 33.0


def profiled(variant: str, gpu_us: float, tiles: FcmTiles | None = None) -> dict:
    """One workload of ``layers --profile-run`` as ``ncu_bytes`` writes it."""
    return {"key": SPEC.key, "variant": variant, "gpu_us": gpu_us, "tiles": tiles and vars(tiles)}


def test_gpu_times_join_the_row_of_their_chain_and_the_fcm_time_keeps_the_tiles_it_was_timed_with():
    tiles, other = FcmTiles(24, 8, 8, 256, 8), FcmTiles(24, 8, 8, 256, 1)
    times = gpu_times([profiled("fcm", 9.5, tiles), profiled("stock", 14.0), profiled("stock_tuned", 12.0)])
    (row,) = with_times(best_per_chain([Entry(SPEC.key, SPEC.kind, tiles, 18.3, 30.4)]), times, "gpu_us")
    assert row["gpu_us"] == {"fcm": 9.5, "stock": 14.0, "stock_tuned": 12.0}
    (row,) = with_times(best_per_chain([Entry(SPEC.key, SPEC.kind, other, 18.3, 30.4)]), times, "gpu_us")
    assert row["gpu_us"] == {"fcm": 9.5, "stock": 14.0, "stock_tuned": 12.0, "fcm_tiles": vars(tiles)}
    profiled_kernel = from_row(row, "gpu")
    assert profiled_kernel.tiles == tiles and from_row(row).tiles == other  # wall clock: the best
    older = {knob: n for knob, n in vars(tiles).items() if knob != "depthwise_cols"}  # profiled before it
    (row,) = with_times(
        best_per_chain([Entry(SPEC.key, SPEC.kind, tiles, 18.3, 30.4)]),
        gpu_times([{**profiled("fcm", 9.5), "tiles": older}]),
        "gpu_us",
    )
    assert row["gpu_us"] == {"fcm": 9.5}  # the same kernel: no tiles of its own


def test_of_several_profiled_fcms_the_fastest_counts_and_of_the_stock_chain_the_last():
    first, later = FcmTiles(24, 8, 8, 128, 1), FcmTiles(24, 8, 8, 64, 1, output_rows=2, patch_lanes=4)
    times = gpu_times(
        [
            profiled("fcm", 99.6, first),
            profiled("stock", 120.0),
            profiled("fcm", 105.0, later),
            profiled("stock", 118.0),
        ]
    )
    assert times[SPEC.key] == {"fcm": 99.6, "fcm_tiles": vars(first), "stock": 118.0}
    assert gpu_times([profiled("fcm", 105.0, later), profiled("fcm", 99.6, first)]) == {
        SPEC.key: {"fcm": 99.6, "fcm_tiles": vars(first)}
    }


def test_a_profile_without_chain_keys_is_refused():
    with pytest.raises(ValueError, match="without chain keys"):
        gpu_times([{"variant": "stock", "gpu_us": 1.0, "chain": 0}])


def test_graph_clock_layer_rows_give_each_chain_its_graph_times():
    tiles = FcmTiles(24, 8, 8, 256, 8)
    row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": tiles.label, "fcm_us": 18.3, "stock_us": 30.4}
    timed = {**row, "fcm_graph_us": 9.0, "stock_graph_us": 8.0}
    times = graph_times([row, timed])
    assert times == {SPEC.key: {"fcm": 9.0, "stock": 8.0, "fcm_tiles": vars(tiles)}}
    (chain,) = with_times(best_per_chain(layer_entries([timed])), times, "graph_us")
    assert chain["graph_us"] == {"fcm": 9.0, "stock": 8.0}


def test_an_fcm_only_graph_run_keeps_the_earlier_stock_graph_times_and_the_faster_fcm():
    """``layers --variants fcm`` re-times new FCM kernels without the stock builds."""
    old, new = FcmTiles(24, 8, 8, 256, 8), FcmTiles(16, 8, 16, 128, 1, weight_lanes=4)
    row = {"key": SPEC.key, "kind": SPEC.kind, "fcm_us": 18.3, "stock_us": 30.4}
    earlier = {**row, "tiles": old.label, "fcm_graph_us": 9.0, "stock_graph_us": 8.0}
    fcm_only = {"key": SPEC.key, "kind": SPEC.kind, "tiles": new.label, "fcm_us": 7.1, "fcm_graph_us": 6.5}
    assert graph_times([earlier, fcm_only])[SPEC.key] == {"fcm": 6.5, "stock": 8.0, "fcm_tiles": vars(new)}
    slower = {**fcm_only, "fcm_graph_us": 9.5}
    assert graph_times([earlier, slower])[SPEC.key] == {"fcm": 9.0, "stock": 8.0, "fcm_tiles": vars(old)}
    (chain,) = best_per_chain(layer_entries([earlier, fcm_only]))
    assert chain["stock_us"] == 30.4 and chain["fcm_us"] == 7.1  # the later run timed no stock


def test_a_clock_kernel_slower_than_the_rows_best_brings_its_wall_time_unless_the_best_was_timed_there():
    """A sweep on wall clock found a faster kernel than the one a graph run timed: the graph's
    kernel brings its own wall-clock time, for the planner to scale the faster one's by."""
    old, new = FcmTiles(24, 8, 8, 256, 8), FcmTiles(8, 4, 56, 64, output_cols=2, stream=4)
    graph_row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": old.label, "fcm_us": 9.0, "stock_us": 30.4}
    graph_row |= {"fcm_graph_us": 7.5, "stock_graph_us": 12.0}
    entries = layer_entries([graph_row]) + [Entry(SPEC.key, SPEC.kind, new, 6.0, None)]
    walls, timed = wall_times(entries), graph_times([graph_row])
    (chain,) = with_times(best_per_chain(entries), timed, "graph_us", walls, graph_kernels([graph_row]))
    assert chain["tiles"] == vars(new)
    assert chain["graph_us"] == {"fcm": 7.5, "stock": 12.0, "fcm_tiles": vars(old), "fcm_wall_us": 9.0}
    in_graph_too = {**graph_row, "tiles": new.label, "fcm_us": 6.0, "fcm_graph_us": 8.0}  # and slower there
    rows = [graph_row, in_graph_too]
    (chain,) = with_times(best_per_chain(entries), graph_times(rows), "graph_us", walls, graph_kernels(rows))
    assert "fcm_wall_us" not in chain["graph_us"] and chain["graph_us"]["fcm_tiles"] == vars(old)


def test_wall_times_keep_each_kernels_fastest_and_skip_dropped_ones():
    tiles = FcmTiles(24, 8, 8, 256, 8)
    entries = [Entry(SPEC.key, SPEC.kind, tiles, 9.0, None), Entry(SPEC.key, SPEC.kind, tiles, 8.0, None)]
    assert wall_times(entries) == {(SPEC.key, tiles): 8.0}
    assert wall_times(without_fcm_of({SPEC.kind}, [Entry(SPEC.key, SPEC.kind, tiles, 8.0, 20.0)])) == {}


def test_a_table_written_for_ones_own_gpu_is_what_the_planner_reads_from_fcm_tvm_measured(
    tmp_path, monkeypatch
):
    from fcm_tvm.planner import plan_chain
    from fcm_tvm.planner.measured import MEASURED_ENV

    row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": "c24 8x8 t256 s4", "fcm_us": 18.3, "stock_us": 30.4}
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps({"rows": [row]}))
    main(["--gpu", "NVIDIA A100", "--layers", str(layers), "-o", str(tmp_path / "own" / "a100.json")])
    monkeypatch.setenv(MEASURED_ENV, str(tmp_path / "own"))
    decision = plan_chain(SPEC, get_gpu("a100"))
    assert decision.fuse and decision.reason.startswith("measured against stock: ")
    assert decision.fused.measured_s == pytest.approx(18.3e-6)
    assert decision.tiles == FcmTiles(24, 8, 8, 256, 4)


def time_spec_on_an_h200_against_untuned_stock(tmp_path, monkeypatch) -> None:
    """A user's own H200 table (``$FCM_TVM_MEASURED``) with one row: SPEC's FCM at 40 us."""
    from fcm_tvm.planner.measured import MEASURED_ENV

    row = {"key": SPEC.key, "kind": SPEC.kind, "tiles": "c24 8x8 t256 s4", "fcm_us": 40.0, "stock_us": 30.4}
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps({"rows": [row]}))
    main(["--gpu", "h200", "--layers", str(layers), "-o", str(tmp_path / "own" / "h200.json")])
    monkeypatch.setenv(MEASURED_ENV, str(tmp_path / "own"))


def test_an_h200_is_planned_with_its_own_rows_and_the_h100s_row_for_every_chain_it_lacks(
    tmp_path, monkeypatch
):
    from fcm_tvm.planner import plan_chain
    from fcm_tvm.planner.measured import table_gpus

    h100, h200 = get_gpu("h100"), get_gpu("h200")
    assert table_gpus("h200") == ("h200", "h100")
    retimed = {key for key, row in table_rows("h200").items() if row != table_rows("h100").get(key)}
    assert retimed and all(" float16" in key for key in retimed)  # untuned H100 rows of the same chains
    assert any(table_rows("h200")[key]["tiles"].get("tensor_cores") for key in retimed)  # its TC chains
    (_, spec), *_ = model_chains("mobilenet_v2")
    assert measured(spec, h200) == measured(spec, h100)  # not timed on the H200: the H100's row
    time_spec_on_an_h200_against_untuned_stock(tmp_path, monkeypatch)
    assert measured(SPEC, h200).fcm_s == pytest.approx(40e-6)  # its own row wins over the H100's
    assert measured(SPEC, h100).fcm_s != pytest.approx(40e-6)
    assert not plan_chain(SPEC, h200).fuse  # its own time: slower than stock
    assert measured(spec, h200) == measured(spec, h100)  # every other chain still the H100's
    assert set(table_rows("h200")) == set(table_rows("h100")) | {SPEC.key}
    assert table_gpus("orin") == ()


def test_a_tuned_build_takes_the_row_timed_against_tuned_stock_from_either_gpu_of_the_chip(
    tmp_path, monkeypatch
):
    """The H100's fp16 batch-32 rows were timed against untuned stock only; the H200's rows of the
    same chains have tuned stock and tensor-core tiles, so a tuned H100 build is planned on those."""
    h100, h200 = get_gpu("h100"), get_gpu("h200")
    deep = FcmSpec(32, 160, 7, 7, (Pointwise(960, "relu6"), Depthwise(3, 1, None, "relu6")), False, "float16")
    assert deep.key == "32x160x7x7 pw960:relu6 dw3s1p1111:relu6 float16"  # MobileNetV2's last head
    assert measured(deep, h100, tuned=True) == measured(deep, h200, tuned=True)
    assert measured(deep, h100, tuned=True).stock_tuned_s is not None
    assert measured(deep, h100) != measured(deep, h200)  # untuned: the H100's own row
    assert measured(deep, h100).stock_tuned_s is None and not measured(deep, h100).tiles.tensor_cores
    time_spec_on_an_h200_against_untuned_stock(tmp_path, monkeypatch)
    assert measured(SPEC, h200).fcm_s == pytest.approx(40e-6)
    assert measured(SPEC, h200, tuned=True) == measured(SPEC, h100, tuned=True)  # the H100's tuned row
    assert measured(SPEC, h100, tuned=True).stock_tuned_s is not None


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--gpu", "v100"], "unknown GPU 'v100'"),
        (["--gpu", "h100", "--layers", "absent.json"], "no such file"),
    ],
)
def test_an_unknown_gpu_or_a_missing_result_file_is_one_clear_error(tmp_path, capsys, arguments, message):
    with pytest.raises(SystemExit):
        main([*arguments, "-o", str(tmp_path / "table.json")])
    assert message in capsys.readouterr().err and not (tmp_path / "table.json").exists()


@pytest.mark.parametrize(("gpu_key", "batch"), [("h200", 32), ("h100", 1)])
def test_the_tables_give_efficientnet_b0s_deep_pw_dw_heads_tensor_core_tiles_that_build(gpu_key, batch):
    """The twentieth session's sweep at batch 32 (H200) and the twenty-first's at batch 1 (H100,
    timed inside a CUDA graph too): in fp16 the WMMA PW->DW kernel is the fastest FCM of the deep
    heads; every tensor-core tile the tables ship for a graph build must fit and schedule."""
    gpu = get_gpu(gpu_key)
    chains = [spec for _, spec in model_chains("efficientnet_b0", batch, "float16") if spec.kind == "pw_dw"]
    shipped = {spec: measured(spec, gpu, cuda_graph=True).tiles for spec in chains}
    on_tensor_cores = {spec: tiles for spec, tiles in shipped.items() if tiles.tensor_cores}
    assert {spec.input.h for spec in on_tensor_cores} >= {7, 14}
    for spec, tiles in on_tensor_cores.items():
        assert not tile_problems(spec, tiles, gpu.smem_per_block)
        assert fcm_primfunc(spec, tiles, CUDA).attrs["tirx.is_scheduled"]


def test_a_sweep_timed_on_another_card_is_named_when_it_joins_a_table(tmp_path, capsys):
    stages = [
        {"type": "pw", "out_channels": 144, "activation": "relu6"},
        {"type": "dw", "kernel": 3, "stride": 1, "pads": [1, 1, 1, 1], "activation": "relu6"},
    ]
    row = {"name": "k", "layer": "k", "ok": True, "fcm_us": 10.0, "tiles": {"channel_tile": 16}}
    row |= {"input": [1, 24, 56, 56], "stages": stages, "residual": False, "dtype": "float16"}
    on_h100, on_h200 = tmp_path / "h100.json", tmp_path / "h200.json"
    on_h100.write_text(json.dumps([{**row, "device": "NVIDIA H100 80GB HBM3"}]))
    on_h200.write_text(json.dumps([{**row, "device": "NVIDIA H200"}]))
    main(["--gpu", "h200", "--sweep", str(on_h100), str(on_h200), "-o", str(tmp_path / "table.json")])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {on_h100} was timed on NVIDIA H100 80GB HBM3, not h200"]
