"""FusePlanner's decisions, its GPU selection and its report, on MobileNetV2 and EfficientNet-B0 layers."""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import fields, replace

import pytest

import fcm_tvm
import fcm_tvm.planner.measured as measured_module
import fcm_tvm.planner.planner as planner_module
from fcm_tvm.errors import FcmError
from fcm_tvm.frontend import graph_inputs, import_onnx
from fcm_tvm.gpus import (
    GpuSpec,
    all_gpus,
    arch_defaults,
    data_keys,
    find_gpu,
    get_gpu,
)
from fcm_tvm.models import build_model
from fcm_tvm.pipeline import apply_fusion
from fcm_tvm.planner import candidate_tiles, estimate_fused, format_plan, plan_chain, plan_chains, to_json
from fcm_tvm.planner.layers import EFFICIENTNET_B0, MOBILENET_V2, model_chains
from fcm_tvm.planner.measured import Measured, clocks, from_row, measured
from fcm_tvm.planner.tiles import shared_bytes, tile_grid
from fcm_tvm.precision import as_precision
from fcm_tvm.relay_passes.record import spec_from_record
from fcm_tvm.schedules.spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from fcm_tvm.schedules.tiles import tile_problems
from fcm_tvm.target import resolve_target

H100 = get_gpu("h100")
ORIN = get_gpu("orin")


def chain(model: str, block: str, batch: int = 1):
    return dict(model_chains(model, batch))[block]


# -- what the planner decides ------------------------------------------------------------------


def test_fusing_the_112x112x96_mobilenet_v2_block_saves_most_of_its_dram_traffic_on_an_h100():
    spec = chain("mobilenet_v2", "b2")  # 16x112x112 -> 96x112x112 -> 96x56x56 -> 24x56x56
    assert spec.intermediates[0].as_tuple() == (1, 96, 112, 112)
    decision = plan_chain(spec, H100)
    assert decision.dram_saving >= 0.75


def test_a_fused_kernel_slower_than_the_stock_kernels_is_declined_despite_saving_traffic():
    """Against tuned stock, the measured PW->DW->PW kernel of the last 160x7x7 block is slower than
    the three stock kernels, whose 960-channel intermediate stays in L2 anyway."""
    decision = plan_chain(chain("mobilenet_v2", "b17"), H100, tuned=True)
    assert decision.dram_saving > 0 and decision.fused.time_s > decision.unfused.time_s
    assert not decision.fuse and "slower" in decision.reason


def use_table(monkeypatch, table: dict) -> None:
    """Let the planner see ``table`` (per chain, its times as one Measured per clock) instead of
    the shipped one."""

    def on(spec, gpu, clock, tuned=False):
        return next((times for times in table.get(spec, []) if times.clock == clock), None)

    def best(spec, gpu, cuda_graph=False, tuned=False):
        return next(filter(None, (on(spec, gpu, clock) for clock in clocks(cuda_graph))), None)

    monkeypatch.setattr(planner_module, "measured_on", on)
    monkeypatch.setattr(planner_module, "measured", best)


US = 1e-6


def test_a_whole_block_is_declined_where_a_fused_sub_chain_with_the_other_pw_stock_is_faster(monkeypatch):
    """The alternative to the whole PW->DW->PW kernel is the rewrite's fallback: the DW->PW tail
    (or the PW->DW head) fused, the remaining PW stock, priced as the stock chain less the stock
    sub-chain."""
    spec = chain("mobilenet_v2", "b14")  # 96x14x14 pw576 dw3s2 pw160
    tail, head = planner_module.sub_chains(spec)
    assert (tail.kind, head.kind) == ("dw_pw", "pw_dw") and not tail.residual and not head.residual
    table = {
        spec: [Measured(FcmTiles(), fcm_s=30 * US, stock_s=50 * US)],
        tail: [Measured(FcmTiles(), fcm_s=8 * US, stock_s=35 * US)],  # the first PW alone: 50 - 35
        head: [Measured(FcmTiles(), fcm_s=40 * US, stock_s=30 * US)],  # slower fused: stays stock
    }
    use_table(monkeypatch, table)
    fallbacks = planner_module.fallback_options(spec, H100)
    assert fallbacks == pytest.approx({"tail": (8 + 15) * US, "head": 50 * US})  # head: 30 + (50 - 30)
    decision = plan_chain(spec, H100)
    assert not decision.fuse and "fallback" in decision.reason

    table[tail] = [Measured(FcmTiles(), fcm_s=20 * US, stock_s=35 * US)]  # fallback 35 us: whole wins
    assert plan_chain(spec, H100).fuse
    del table[tail], table[head]  # nothing measured to fall back on: the stock chain is the bar
    assert planner_module.fallback_options(spec, H100) == {} and plan_chain(spec, H100).fuse


def test_a_declined_block_names_its_head_where_fusing_the_head_is_the_faster_fallback(monkeypatch):
    """The rewrite tries the DW->PW tail first; the decision tells it to fuse the PW->DW head
    instead where the head saves more (MnasNet's first block at batch 32 in fp16)."""
    spec = chain("mobilenet_v2", "b14")
    tail, head = planner_module.sub_chains(spec)
    table = {
        spec: [Measured(FcmTiles(), fcm_s=121 * US, stock_s=215 * US)],
        tail: [Measured(FcmTiles(), fcm_s=49 * US, stock_s=82 * US)],  # fallback 49 + 133 = 182 us
        head: [Measured(FcmTiles(), fcm_s=84 * US, stock_s=186 * US)],  # fallback 84 + 29 = 113 us
    }
    use_table(monkeypatch, table)
    assert planner_module.fallback_options(spec, H100) == pytest.approx({"tail": 182 * US, "head": 113 * US})
    decision = plan_chain(spec, H100)
    assert not decision.fuse and decision.fallback == "head" and "fuses its PW->DW head" in decision.reason

    table[head] = [Measured(FcmTiles(), fcm_s=160 * US, stock_s=186 * US)]  # 160 + 29 = 189 us
    decision = plan_chain(spec, H100)
    assert decision.fuse and decision.fallback is None  # the whole chain wins; the tail is the better part
    del table[tail]  # the head alone measured: the pass keeps its order, tail first
    assert plan_chain(spec, H100).fallback is None


def test_a_fallback_counts_only_parts_timed_on_the_gpu_that_timed_the_whole_chain(monkeypatch):
    """The H100 plans on the H200's rows where it has none of its own; a whole chain timed on one
    card and its part on the other would weigh one card's stock times against the other's."""
    spec = chain("mobilenet_v2", "b14")
    tail, head = planner_module.sub_chains(spec)
    table = {
        spec: [Measured(FcmTiles(), fcm_s=121 * US, stock_s=215 * US, gpu="h200")],
        tail: [Measured(FcmTiles(), fcm_s=49 * US, stock_s=82 * US, gpu="h200")],
        head: [Measured(FcmTiles(), fcm_s=84 * US, stock_s=186 * US, gpu="h100")],
    }
    use_table(monkeypatch, table)
    assert planner_module.fallback_options(spec, H100) == pytest.approx({"tail": 182 * US})
    assert plan_chain(spec, H100).fallback is None


def test_a_fallback_is_weighed_on_one_clock_that_has_the_whole_chain_and_a_part(monkeypatch):
    """Decided on GPU time, but its parts were timed on wall clock only: whole and fallback are
    then compared on wall clock, never a wall-clock fallback against a GPU-time FCM."""
    spec = chain("mobilenet_v2", "b14")
    tail, _ = planner_module.sub_chains(spec)
    whole_on_wall = Measured(FcmTiles(), fcm_s=40 * US, stock_s=60 * US)
    table = {
        spec: [Measured(FcmTiles(), fcm_s=30 * US, stock_s=50 * US, clock="gpu"), whole_on_wall],
        tail: [Measured(FcmTiles(), fcm_s=8 * US, stock_s=35 * US)],
    }
    use_table(monkeypatch, table)
    assert planner_module.fallback_options(spec, H100, clock="gpu") == {}
    weighed = planner_module.weigh_fallback(spec, H100, False, clocks(True), "gpu")
    assert weighed[0] == pytest.approx(40 * US)  # both on wall clock
    assert weighed[1] == pytest.approx({"tail": (8 + 25) * US})
    decision = plan_chain(spec, H100, cuda_graph=True)
    assert not decision.fuse and decision.reason.startswith("measured against stock (GPU time): its fallback")


def test_a_graph_build_weighs_the_fallback_on_the_clock_of_the_whole_chain(monkeypatch):
    """MobileNetV3-Large's 40x28x28 block in a CUDA graph: whole 18.7 us, its tail fused 8.4 us
    plus the first PW stock (24.1 - 18.0 us) is faster. On wall clock the whole chain wins."""
    spec = chain("mobilenet_v2", "b14")
    tail, _ = planner_module.sub_chains(spec)
    table = {
        spec: [
            Measured(FcmTiles(), fcm_s=20 * US, stock_s=38 * US),
            Measured(FcmTiles(), fcm_s=18.7 * US, stock_s=24.1 * US, clock="graph"),
        ],
        tail: [
            Measured(FcmTiles(), fcm_s=10 * US, stock_s=26 * US),
            Measured(FcmTiles(), fcm_s=8.4 * US, stock_s=18.0 * US, clock="graph"),
        ],
    }
    use_table(monkeypatch, table)
    assert plan_chain(spec, H100).fuse
    decision = plan_chain(spec, H100, cuda_graph=True)
    assert not decision.fuse and "fallback" in decision.reason and "14.5 against 18.7 us" in decision.reason


MBV3_LARGE_LAST_HEAD = FcmSpec(  # MobileNetV3-Large's 160x7x7 pw960 dw5 (PW->DW), batch 1
    1, 160, 7, 7, (Pointwise(960, "hardswish"), Depthwise(5, 1, (2, 2, 2, 2), "hardswish")), False, "float32"
)


def test_under_cuda_graphs_a_measured_chain_is_decided_on_its_time_in_a_graph():
    """On wall clock the fused kernel wins (the stock chain's time includes four launches); run
    inside a CUDA graph, as a graph-captured model runs it, tuned stock is faster."""
    spec = MBV3_LARGE_LAST_HEAD
    wall, graphs = plan_chain(spec, H100, tuned=True), plan_chain(spec, H100, tuned=True, cuda_graph=True)
    assert wall.fuse and wall.reason.startswith("measured against tuned stock: ")
    assert not graphs.fuse and graphs.reason.startswith("measured against tuned stock (in a CUDA graph): ")
    in_graph = measured(spec, H100, cuda_graph=True)
    assert in_graph.clock == "graph" and graphs.unfused.measured_s == in_graph.stock_tuned_s < in_graph.fcm_s


def test_gpu_times_stand_in_only_where_the_fcm_and_every_stock_time_have_them():
    row = {"key": "k", "tiles": vars(FcmTiles()), "fcm_us": 10.0, "stock_us": 30.0, "stock_tuned_us": 20.0}
    profiled = {**row, "gpu_us": {"fcm": 9.0, "stock": 12.0, "stock_tuned": 11.0}}
    assert from_row(profiled) == from_row(row)  # wall clock
    on_gpu = from_row(profiled, "gpu")
    assert (on_gpu.fcm_s, on_gpu.stock_s, on_gpu.stock_tuned_s, on_gpu.clock) == pytest.approx(
        (9e-6, 12e-6, 11e-6, "gpu")
    )
    assert from_row(profiled, "graph") is None
    stock_only = {**row, "gpu_us": {"stock": 12.0, "stock_tuned": 11.0}}  # the FCM not profiled
    assert from_row(stock_only, "gpu") is None
    untuned_only = {**row, "gpu_us": {"fcm": 9.0, "stock": 12.0}}  # the row has a tuned time: needed
    assert from_row(untuned_only, "gpu") is None


def test_a_faster_kernel_timed_on_wall_clock_only_is_priced_on_another_clock_by_the_wall_clock_ratio(
    monkeypatch,
):
    """The row's best kernel (wall clock 6 us) was never timed in a graph; the older one, 9 us on
    wall clock, took 7.5 us there: the build gets the faster kernel at 7.5 x 6 / 9 = 5 us."""
    faster, older = FcmTiles(16, 2, 56, 32, output_cols=2, stream=16), FcmTiles(16, 4, 8, 256)
    graph = {"fcm": 7.5, "stock": 12.0, "fcm_tiles": vars(older), "fcm_wall_us": 9.0}
    row = {"key": "k", "tiles": vars(faster), "fcm_us": 6.0, "stock_us": 30.0, "graph_us": graph}
    on_graph = from_row(row, "graph")
    assert on_graph.tiles == faster and on_graph.scaled and on_graph.fcm_s == pytest.approx(5e-6)
    assert on_graph.stock_s == pytest.approx(12e-6)
    spec = chain("mobilenet_v2", "b1")
    monkeypatch.setattr(measured_module, "table_rows", lambda gpu_key, tuned=False: {spec.key: row})
    decision = plan_chain(spec, H100, cuda_graph=True)
    assert decision.fuse and decision.tiles == faster
    assert "(in a CUDA graph, the FCM's scaled from another kernel's there by their wall-clock times)" in (
        decision.reason
    )
    unscaled = {**graph}
    del unscaled["fcm_wall_us"]  # no wall-clock time of the graph's kernel: it stands as timed
    kept = from_row({**row, "graph_us": unscaled}, "graph")
    assert kept.tiles == older and not kept.scaled and kept.fcm_s == pytest.approx(7.5e-6)


def test_the_h100_plans_efficientnet_b0s_fp32_batch32_heads_on_streamed_kernels_scaled_to_gpu_time():
    """Their rows hold older kernels' ncu times; the streamed kernels were swept on wall clock
    only (thirty-fifth session), 1.2-1.6x faster there."""
    plan = fcm_tvm.plan(build_model("efficientnet_b0", batch=32), "h100", tuned=True, cuda_graph=True)
    heads = [d for d in plan.plan.decisions if d.fuse and d.spec.input.h >= 56]
    assert len(heads) == 3 and all(d.tiles.stream for d in heads)
    assert all("(GPU time, the FCM's scaled from another kernel's there" in d.reason for d in heads)


def test_the_112x112x96_block_is_fused_with_its_mid_channels_split_over_blocks():
    """Unsplit, its 49 blocks each loop over all 96 mid channels; split, they fill the GPU."""
    decision = plan_chain(chain("mobilenet_v2", "b2"), H100)
    assert decision.fuse and decision.tiles.split > 1
    assert len(decision.fused.kernels) == 2  # the slices, then their sum


def test_the_first_mobilenet_v2_dw_pw_pair_is_fused_on_an_h100():
    decision = plan_chain(chain("mobilenet_v2", "b1"), H100)
    assert decision.fuse and decision.fused.time_s < decision.unfused.time_s


@pytest.fixture
def roofline_only(monkeypatch):
    """The cost model without its H100 calibration (today's kernels' slowdown, the stock stages'
    measured time) and without the measured chains: its own reasoning, from traffic and GPU
    characteristics alone."""
    uncalibrated = {"fcm_time_factor": {}, "stock_stage": {"time_factor": 1.0, "overhead_us": 3.0}}
    monkeypatch.setattr("fcm_tvm.planner.cost_model._calibration", lambda: uncalibrated)
    monkeypatch.setattr(
        "fcm_tvm.planner.planner.measured", lambda spec, gpu, cuda_graph=False, tuned=False: None
    )
    monkeypatch.setattr("fcm_tvm.planner.planner.table_rows", lambda gpu_key, tuned=False: {})


@pytest.mark.usefixtures("roofline_only")
def test_the_planner_declines_when_the_intermediate_fits_in_l2_and_a_small_channel_tiles_reads_outweigh_it():
    spec = chain("efficientnet_b0", "b10")  # 112x14x14 -> 672x14x14 -> 5x5 depthwise
    eight_channels = [tiles for tiles in tile_grid(spec, H100) if tiles.channel_tile == 8]
    decision = plan_chain(spec, H100, candidates=eight_channels)
    assert not decision.fuse and decision.tiles is None
    assert decision.unfused.kernels[1].reread_l2_hit == 1.0  # the stock kernels meet in L2
    assert "stays in L2" in decision.reason and "redundant reads" in decision.reason
    assert decision.fused.requested.input > 100 * decision.unfused.dram.input  # 84 channel blocks
    assert plan_chain(spec, H100).fuse  # with wider channel tiles fusing pays


def test_the_planner_keeps_deep_layers_whose_tiny_intermediate_stays_in_l2_anyway():
    spec = chain("mobilenet_v2", "b17")  # 160x7x7 -> 960x7x7 -> 960x7x7 -> 320x7x7
    decision = plan_chain(spec, H100, tuned=True)
    assert not decision.fuse
    assert decision.unfused.dram.intermediate_read == 0
    assert "stays in L2" in decision.reason
    # unsplit, a few blocks would sit on 132 SMs: the best candidate splits the 960 channels
    unsplit = estimate_fused(spec, replace(decision.fused.tiles, split=1), H100)
    assert decision.fused.tiles.split > 1
    assert decision.fused.kernels[0].efficiency > 2 * unsplit.kernels[0].efficiency


def test_the_planner_declines_when_no_tile_fits_in_shared_memory():
    tiny = replace(H100, key="tiny", smem_per_block=64, smem_per_sm=2048)
    decision = plan_chain(chain("mobilenet_v2", "b3"), tiny)
    assert not decision.fuse and decision.fused is None
    assert decision.reason.startswith("no tile fits tiny") and "shared memory" in decision.reason


def test_tiles_that_overflow_shared_memory_are_never_chosen():
    small = replace(H100, key="small", smem_per_block=6 * 1024)
    for name in ("b2", "b8"):
        spec = chain("mobilenet_v2", name)
        decision = plan_chain(spec, small)
        roomy = plan_chain(spec, H100)
        assert decision.fused is not None
        assert shared_bytes(spec, decision.fused.tiles, small) <= small.smem_per_block
        assert shared_bytes(spec, roomy.fused.tiles, H100) > small.smem_per_block  # the limit did bind


@pytest.mark.usefixtures("roofline_only")
def test_a_bigger_l2_makes_the_planner_fuse_less():
    big_l2 = replace(ORIN, l2_bytes=H100.l2_bytes)  # an Orin with an H100's L2, nothing else changed
    newly_kept = []
    for model in ("mobilenet_v2", "efficientnet_b0"):
        for name, spec in model_chains(model, batch=16):
            small, big = plan_chain(spec, ORIN), plan_chain(spec, big_l2)
            assert small.fuse or not big.fuse, f"{model} {name}: a bigger L2 made fusing pay"
            if small.fuse and not big.fuse:
                newly_kept.append(big)
    assert newly_kept
    assert all("stays in L2" in d.reason for d in newly_kept)


def test_chosen_tiles_are_accepted_by_the_kernel_builder():
    plan = plan_chains([spec for _, spec in model_chains("mobilenet_v2")], H100)
    assert plan.fused_count > 0
    for decision in plan.decisions:
        if decision.fuse:
            assert decision.tiles == decision.fused.tiles
            assert tile_problems(decision.spec, decision.tiles, H100.smem_per_block) == []
        else:
            assert decision.tiles is None


def test_the_best_first_search_finds_the_same_tiles_as_pricing_every_candidate():
    for spec in (chain("mobilenet_v2", "b1"), chain("efficientnet_b0", "b13")):
        candidates = candidate_tiles(spec, H100)
        everything = [estimate_fused(spec, tiles, H100) for tiles in candidates]
        best = min(everything, key=lambda e: (e.time_s, e.dram.total))
        assert plan_chain(spec, H100, candidates=candidates).fused.tiles == best.tiles


def test_a_measured_chain_is_decided_by_its_measured_times():
    decision = plan_chain(chain("mobilenet_v2", "b8"), H100)  # 64x14x14 -> 384 -> 64, measured
    assert decision.reason.startswith("measured against stock: ")
    assert decision.fused.time_s == decision.fused.measured_s < decision.unfused.measured_s
    assert decision.fuse and decision.tiles.split > 1


def test_with_tuning_records_a_measured_chain_must_beat_the_tuned_stock_chain(monkeypatch):
    spec = chain("mobilenet_v2", "b8")
    known = measured(spec, H100)
    assert known.stock_tuned_s is not None, "the H100 table has tuned times for batch-1 chains"
    assert plan_chain(spec, H100, tuned=True).reason.startswith("measured against tuned stock: ")

    def only_this_chain(changed):  # its sub-chains keep their measured times
        return lambda other, gpu, cuda_graph=False, tuned=False: (
            changed if other == spec else measured(other, gpu)
        )

    untimed = replace(known, stock_tuned_s=None)
    monkeypatch.setattr(planner_module, "measured", only_this_chain(untimed))
    untuned_only = plan_chain(spec, H100, tuned=True)
    assert untuned_only.fuse and untuned_only.reason.startswith("measured against stock: ")  # none timed

    faster_stock = replace(known, stock_tuned_s=known.fcm_s / 2)
    monkeypatch.setattr(planner_module, "measured", only_this_chain(faster_stock))
    decision = plan_chain(spec, H100, tuned=True)
    assert not decision.fuse and decision.reason.startswith("measured against tuned stock: ")
    assert decision.unfused.measured_s == faster_stock.stock_tuned_s
    assert plan_chain(spec, H100).fuse  # without tuning records the default stock time stands


def test_on_a_gpu_with_measured_chains_an_unmeasured_chain_is_not_fused():
    spec = chain("mobilenet_v2", "b2", batch=65)  # measured at batch 1 and 32 only
    decision = plan_chain(spec, H100)
    assert not decision.fuse and decision.reason.startswith("not measured on h100")
    assert plan_chain(spec, ORIN).reason != decision.reason  # no measured table: the model decides


def test_an_fp16_chain_is_planned_from_its_own_fp16_times_not_its_fp32_twins(monkeypatch, tmp_path):
    """MnasNet's 72x56x56 DW->PW pair inside a CUDA graph, as the twelfth session measured it: in
    fp32 the fused kernel beat stock (6.6 against 11.8 us), in fp16 it was slower (15.8 against
    10.8 us), so only fp32 fuses. (The thirteenth session's fp16 tiles beat stock there too.)"""
    fp32 = FcmSpec(1, 72, 56, 56, (Depthwise(3, 1, None, "relu"), Pointwise(24, "none")))
    fp16 = replace(fp32, dtype="float16")
    row = measured_module.table_rows("h100")[fp16.key]
    slow_fp16 = {**row, "graph_us": {**row["graph_us"], "fcm": 15.8, "stock": 10.8}}
    own_table(tmp_path, "h100", [slow_fp16])
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    assert plan_chain(fp32, H100, cuda_graph=True).fuse
    decision = plan_chain(fp16, H100, cuda_graph=True)
    assert not decision.fuse and decision.reason.startswith("measured against stock (in a CUDA graph): ")
    assert decision.fused.measured_s == measured(fp16, H100, cuda_graph=True).fcm_s == pytest.approx(15.8e-6)


def own_table(folder, gpu_key: str, rows: list[dict]) -> None:
    (folder / f"{gpu_key}.json").write_text(json.dumps({"gpu": gpu_key, "chains": rows}))


def test_a_table_of_ones_own_in_fcm_tvm_measured_overrides_the_shipped_rows_of_its_chains(
    monkeypatch, tmp_path
):
    slow, other = chain("mobilenet_v2", "b8"), chain("mobilenet_v2", "b2")
    shipped_other = plan_chain(other, H100)
    assert plan_chain(slow, H100).fuse
    row = {**measured_module.table_rows("h100")[slow.key], "fcm_us": 100.0, "stock_us": 10.0}
    own_table(tmp_path, "h100", [row])
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    decision = plan_chain(slow, H100)
    assert not decision.fuse and decision.fused.measured_s == pytest.approx(100e-6)
    assert plan_chain(other, H100) == shipped_other  # the rows it does not hold stay shipped


def test_a_gpu_without_a_shipped_table_is_planned_from_ones_own(monkeypatch, tmp_path):
    timed, untimed = chain("mobilenet_v2", "b8"), chain("mobilenet_v2", "b2")
    assert not plan_chain(untimed, ORIN).reason.startswith("not measured")  # the model decides
    row = {"key": timed.key, "tiles": vars(FcmTiles()), "fcm_us": 20.0, "stock_us": 50.0}
    own_table(tmp_path, "orin", [row])
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    assert plan_chain(timed, ORIN).reason.startswith("measured against stock: ")
    assert plan_chain(untimed, ORIN).reason.startswith("not measured on orin")


def timed_at(spec: FcmSpec, batch: int, tiles: FcmTiles, fcm_us: float, stock_us: float) -> dict:
    """A table row of ``spec`` timed at ``batch``."""
    return {
        "key": replace(spec, batch=batch).key,
        "tiles": vars(tiles),
        "fcm_us": fcm_us,
        "stock_us": stock_us,
    }


SMALL, LARGE = FcmTiles(4, 4, 4, 32), FcmTiles(64, 7, 7, 196, 4)  # both fit MobileNetV2's b8


def test_a_chain_between_two_timed_batches_takes_their_times_interpolated_and_the_nearer_ones_tiles(
    monkeypatch, tmp_path
):
    spec = chain("mobilenet_v2", "b8")
    rows = [timed_at(spec, 1, SMALL, 10.0, 20.0), timed_at(spec, 32, LARGE, 100.0, 300.0)]
    own_table(tmp_path, "orin", rows)
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    at_8 = plan_chain(replace(spec, batch=8), ORIN)  # 8 is nearer 32 than 1 in ratio (8/1 > 32/8)
    assert at_8.fuse and at_8.tiles == LARGE
    assert at_8.fused.measured_s == pytest.approx((10 + 90 * 7 / 31) * 1e-6)
    assert at_8.unfused.measured_s == pytest.approx((20 + 280 * 7 / 31) * 1e-6)
    assert at_8.reason.startswith("measured against stock at batches 1 and 32, interpolated: ")
    assert plan_chain(replace(spec, batch=4), ORIN).tiles == SMALL  # 4/1 < 32/4


def test_two_timed_batches_that_disagree_on_fusing_leave_a_batch_between_them_unfused(monkeypatch, tmp_path):
    spec = chain("mobilenet_v2", "b8")
    rows = [timed_at(spec, 1, SMALL, 30.0, 20.0), timed_at(spec, 32, LARGE, 100.0, 300.0)]
    own_table(tmp_path, "orin", rows)
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    assert plan_chain(replace(spec, batch=8), ORIN).measured_on is None  # the model decides


def test_past_the_largest_timed_batch_its_times_scale_with_the_batch_up_to_twice_it(monkeypatch, tmp_path):
    spec = chain("mobilenet_v2", "b8")
    own_table(tmp_path, "orin", [timed_at(spec, 32, LARGE, 100.0, 300.0)])
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    at_64 = plan_chain(replace(spec, batch=64), ORIN)
    assert at_64.fuse and at_64.tiles == LARGE and at_64.fused.measured_s == pytest.approx(200e-6)
    assert at_64.reason.startswith("measured against stock at batch 32, scaled: ")
    assert plan_chain(replace(spec, batch=65), ORIN).measured_on is None  # the model decides
    assert plan_chain(replace(spec, batch=16), ORIN).measured_on is None  # no timed batch below


def test_batches_timed_on_different_gpus_are_not_interpolated(monkeypatch, tmp_path):
    """An H200 plans on the H100's rows where it has none, but the two GPUs' times do not mix."""
    spec = chain("mobilenet_v2", "b8", batch=16)
    own_table(tmp_path, "h100", [timed_at(spec, 1, SMALL, 10.0, 20.0)])
    own_table(tmp_path, "h200", [timed_at(spec, 32, LARGE, 100.0, 300.0)])
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    monkeypatch.setattr(
        measured_module, "_rows", lambda key, folder: measured_module._read_table(tmp_path / f"{key}.json")
    )
    assert plan_chain(spec, get_gpu("h200")).measured_on is None  # the model decides


def test_the_shipped_tables_plan_batch_8_on_batches_1_and_32():
    decisions = [plan_chain(spec, H100) for _, spec in model_chains("mobilenet_v2", 8)]
    interpolated = [d for d in decisions if "at batches 1 and 32, interpolated" in d.reason]
    assert interpolated and any(d.fuse for d in interpolated)


def test_a_broken_table_of_ones_own_is_one_clear_error_naming_it(monkeypatch, tmp_path):
    (tmp_path / "h100.json").write_text("{}")
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    with pytest.raises(FcmError, match=r"h100\.json: not a measured table"):
        plan_chain(chain("mobilenet_v2", "b8"), H100)


def test_a_plan_never_moves_more_dram_data_than_running_unfused():
    for gpu in (H100, ORIN):
        for model in ("mobilenet_v2", "efficientnet_b0"):
            plan = plan_chains([spec for _, spec in model_chains(model)], gpu)
            assert plan.planned_dram <= plan.unfused_dram
            assert plan.planned_time_s <= plan.unfused_time_s
            assert plan.planned_dram == sum(d.planned.dram.total for d in plan.decisions)


def test_a_gpu_can_be_named():
    assert plan_chain(chain("mobilenet_v2", "b1"), "h100").gpu == H100
    with pytest.raises(FcmError, match="unknown GPU"):
        plan_chain(chain("mobilenet_v2", "b1"), "voodoo")


# -- the layer tables --------------------------------------------------------------------------


@pytest.mark.parametrize("model", [MOBILENET_V2, EFFICIENTNET_B0])
def test_each_block_of_a_layer_table_feeds_the_next(model):
    for before, after in zip(model.blocks, model.blocks[1:]):
        assert after.in_channels == before.out_channels
        assert after.size == before.size // before.stride


def test_the_layer_tables_give_the_chains_the_relax_pass_finds():
    mobilenet = model_chains("mobilenet_v2")
    assert [spec.kind for _, spec in mobilenet] == ["dw_pw"] + ["pw_dw_pw"] * 16
    assert sum(spec.residual for _, spec in mobilenet) == 10
    efficientnet = model_chains("efficientnet_b0")
    assert len(efficientnet) == 15 and {spec.kind for _, spec in efficientnet} == {"pw_dw"}
    assert {spec.stages[0].activation for _, spec in efficientnet} == {"silu"}
    with pytest.raises(FcmError, match="no layer table"):
        model_chains("resnet50")


# -- the report --------------------------------------------------------------------------------


def test_the_table_has_a_row_per_chain_and_a_total():
    named = model_chains("efficientnet_b0")
    plan = plan_chains([spec for _, spec in named], H100, [name for name, _ in named])
    text = format_plan(plan)
    rows = [line for line in text.splitlines() if re.match(r"b\d+ ", line)]
    assert len(rows) == len(named)
    decision = plan.decisions[0]
    assert rows[0].split()[:4] == ["b2", "pw_dw", "1x16x112x112", "->"]
    assert f"{decision.unfused.dram.total / 1e6:.2f}" in rows[0]
    assert ("fuse" if decision.fuse else "keep") in rows[0].split()
    total = next(line for line in text.splitlines() if line.startswith("total"))
    assert f"{plan.unfused_dram / 1e6:.2f}" in total and f"{plan.planned_dram / 1e6:.2f}" in total
    assert f"{plan.fused_count} of {len(named)} fused" in total
    assert all(d.reason in text for d in plan.decisions)


def test_an_h200_plan_of_chains_only_the_h100_timed_fuses_what_the_h100_table_fuses_and_says_so():
    named = model_chains("mobilenet_v2")  # batch 1, float32: the H200's own table has none
    specs, names = [spec for _, spec in named], [name for name, _ in named]
    on_h100, on_h200 = plan_chains(specs, H100, names), plan_chains(specs, get_gpu("h200"), names)
    assert [d.tiles for d in on_h200.decisions] == [d.tiles for d in on_h100.decisions]
    assert on_h200.fused_count > 0
    title = format_plan(on_h200).splitlines()[0]
    assert title.startswith("FusePlanner on h200") and "chain times measured on h100)" in title
    assert "measured on" not in format_plan(on_h100).splitlines()[0]  # its own rows only
    data = json.loads(to_json(on_h200))
    assert data["measured_on"] == ["h200", "h100"]  # the tables consulted
    assert {chain["measured_on"] for chain in data["chains"]} == {"h100"}  # the rows that decided


def test_a_plan_title_names_each_gpu_whose_times_decided_a_chain():
    """On the H100, MobileNetV2's float32 chains at batch 1 are its own rows; EfficientNet-B0's
    fp16 chains at batch 32 only the H200 timed. A plan of both names both GPUs, one of either
    names that one alone (or none, where it is the GPU planned for)."""
    (_, own), *_ = model_chains("mobilenet_v2")
    (_, head), *_ = model_chains("efficientnet_b0")
    borrowed = replace(head, batch=32, dtype="float16")
    both = plan_chains([own, borrowed], H100)
    assert [d.measured_on for d in both.decisions] == ["h100", "h200"]
    assert "chain times measured on h100 and h200)" in format_plan(both).splitlines()[0]
    assert "chain times measured on h200)" in format_plan(plan_chains([borrowed], H100)).splitlines()[0]
    assert "measured on" not in format_plan(plan_chains([own], H100)).splitlines()[0]


def test_a_model_plan_lists_what_the_rewrite_fuses_in_place_of_a_declined_block():
    """MnasNet at batch 32 in fp16, tuned, with graphs, on the shipped tables: its second block
    (16x112x112 pw48 dw3s2 pw24) is declined for its head, so the rewrite fuses that PW->DW head,
    and the plan says so; the build of this plan ran 12 distinct FCM kernels on the H100."""
    model = build_model("mnasnet1_0", batch=32)
    result = fcm_tvm.plan(model, "h100", tuned=True, cuda_graph=True, precision="fp16")
    block = next(d for d in result.plan.decisions if d.spec.input.as_tuple() == (32, 16, 112, 112))
    assert block.spec.kind == "pw_dw_pw" and not block.fuse and block.fallback == "head"
    fused = [(d.spec.kind, d.spec.input.as_tuple()) for d in result.fused]
    assert ("pw_dw", (32, 16, 112, 112)) in fused and ("dw_pw", (32, 48, 112, 112)) not in fused
    assert len(fused) > result.plan.fused_count and all(d.fuse for d in result.fused)
    assert len({(d.spec, d.tiles) for d in result.fused}) == 12
    assert "the rewrite fuses 17 chains, whole or a declined block's sub-chain (12 distinct kernels)" in (
        result.table()
    )
    assert len(result.to_json()["rewrite"]) == 17


def test_the_json_has_every_decision_with_both_estimates():
    plan = plan_chains([chain("mobilenet_v2", "b1"), chain("mobilenet_v2", "b14")], H100, ["b1", "b14"])
    data = json.loads(to_json(plan))
    assert data["gpu"] == "h100" and data["totals"]["fused"] == plan.fused_count
    first, second = data["chains"]
    assert first["fuse"] and first["tiles"]["channel_tile"] == plan.decisions[0].tiles.channel_tile
    assert first["unfused"]["dram_bytes"]["total"] == plan.decisions[0].unfused.dram.total
    assert len(first["unfused"]["kernels"]) == 2 and len(first["fused"]["kernels"]) == 1
    assert not second["fuse"] and second["tiles"] is None and second["fused"] is not None


# -- GPU selection -----------------------------------------------------------------------------


def test_every_gpu_in_the_table_is_complete():
    numbers = [f.name for f in fields(GpuSpec) if f.name not in ("key", "names", "arch", "data_from")]
    for key, gpu in all_gpus().items():
        assert gpu.names and re.fullmatch(r"sm_\d+", gpu.arch), key
        assert all(getattr(gpu, name) > 0 for name in numbers), key
        assert gpu.smem_per_block + gpu.reserved_smem_per_block <= gpu.smem_per_sm, key
        assert gpu.max_threads_per_block <= gpu.max_threads_per_sm, key
        assert gpu.cache_line_bytes % gpu.sector_bytes == 0, key
        assert all(find_gpu(name) == gpu for name in gpu.names), key
    assert {gpu.arch for gpu in all_gpus().values()} == set(arch_defaults())
    assert all(all_gpus()[key].arch == arch for arch, key in arch_defaults().items())


def test_a_gpu_borrows_data_only_from_a_gpu_of_the_same_chip():
    assert data_keys("h200") == ("h200", "h100") and data_keys("h100") == ("h100", "h200")
    assert data_keys("a100") == ("a100",) and data_keys("h100-pcie") == ("h100-pcie",)
    for key, gpu in all_gpus().items():
        if gpu.data_from is not None:
            lender = all_gpus()[gpu.data_from]
            same = ("arch", "sm_count", "smem_per_block", "max_threads_per_block", "fp32_tflops")
            assert all(getattr(gpu, name) == getattr(lender, name) for name in same), key
            assert lender.data_from in (None, key), key  # one step: no chains of borrowing


def test_stage_helpers_describe_the_chain():
    spec = chain("mobilenet_v2", "b2")
    assert isinstance(spec.stages[0], Pointwise) and isinstance(spec.stages[1], Depthwise)
    names = [k.name for k in plan_chain(spec, H100).unfused.kernels]
    assert names == ["pw 16->96", "dw3x3/2 96", "pw 96->24"]


def test_a_graph_build_prefers_times_taken_inside_a_cuda_graph_over_ncus(monkeypatch):
    row = {"key": "k", "tiles": vars(FcmTiles()), "fcm_us": 10.0, "stock_us": 30.0}
    timed = {**row, "gpu_us": {"fcm": 9.0, "stock": 12.0}, "graph_us": {"fcm": 8.0, "stock": 7.0}}
    spec = chain("mobilenet_v2", "b1")
    monkeypatch.setattr(measured_module, "table_rows", lambda gpu_key, tuned=False: {spec.key: timed})
    on_graph = measured(spec, H100, cuda_graph=True)
    assert (on_graph.fcm_s, on_graph.stock_s, on_graph.clock) == pytest.approx((8e-6, 7e-6, "graph"))
    timed["graph_us"] = {"stock": 7.0}
    assert measured(spec, H100, cuda_graph=True).clock == "gpu"
    assert measured(spec, H100).clock == "wall"


def test_a_tuned_plan_says_how_many_chains_it_weighed_against_untuned_stock(monkeypatch, tmp_path):
    """Here the H100's batch-1 fp16 rows without their tuned stock times, as they shipped until the
    twenty-fourth session; its fp32 rows have them."""
    untimed = [without_tuned_times(row) for row in measured_module.table_rows("h100").values()]
    own_table(tmp_path, "h100", [row for row in untimed if row["key"].endswith("float16")])
    monkeypatch.setenv(measured_module.MEASURED_ENV, str(tmp_path))
    fp16 = fcm_tvm.plan(build_model("mobilenet_v2"), "h100", tuned=True, cuda_graph=True, precision="fp16")
    assert fp16.plan.against_untuned == len(fp16.plan.decisions) == 17
    assert "note: a tuned build, but 17 of 17 chains were weighed against untuned stock" in fp16.table()
    assert fp16.to_json()["totals"]["against_untuned_stock"] == 17
    assert {chain["against"] for chain in fp16.to_json()["chains"]} == {"stock"}
    fp32 = fcm_tvm.plan(build_model("mobilenet_v2"), "h100", tuned=True, cuda_graph=True)
    assert fp32.plan.against_untuned == 0 and "note:" not in fp32.table()
    untuned = fcm_tvm.plan(build_model("mobilenet_v2"), "h100", cuda_graph=True, precision="fp16")
    assert untuned.plan.against_untuned == 0  # against stock is what an untuned build runs


def without_tuned_times(row: dict) -> dict:
    graph = {name: us for name, us in row.get("graph_us", {}).items() if name != "stock_tuned"}
    return {key: value for key, value in row.items() if key != "stock_tuned_us"} | {"graph_us": graph}


@pytest.mark.parametrize("model", ["mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large", "mnasnet1_0"])
def test_the_shipped_h100_table_weighs_every_batch1_fp16_chain_against_tuned_stock(model):
    plan = fcm_tvm.plan(build_model(model), "h100", tuned=True, cuda_graph=True, precision="fp16")
    assert plan.plan.against_untuned == 0 and "note:" not in plan.table()


def test_a_tuned_build_fuses_exactly_the_chains_and_tiles_of_its_plan():
    """What ``fcm-tvm plan`` lists is what the build fuses, chain for chain. MobileNetV2's fp16
    batch-32 plan fuses the PW->DW heads of three residual blocks, which the build once turned
    into their DW->PW tails (the second rewrite of FoldAndFuse asked the planner again)."""
    proto = build_model("mobilenet_v2", batch=32)
    planned = fcm_tvm.plan(proto, "h100", tuned=True, precision="fp16")
    assert any(decision.spec.kind == "pw_dw" for decision in planned.fused)
    half = as_precision(proto, "fp16")
    module = import_onnx(half, graph_inputs(half, None))
    _, built = apply_fusion(module, resolve_target("h100"), "auto", tuned=True)
    assert Counter((d.spec, d.tiles) for d in planned.fused) == Counter(
        {(spec_from_record(c.spec), FcmTiles(**c.spec["tiles"])): c.spec["calls"] for c in built}
    )
