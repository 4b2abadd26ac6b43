"""The end-to-end bench: the energy of a case's variants is read in turns, so that the GPU's drift
between readings does not enter their ratio; a chart only of what was timed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fcm_tvm.benchmarks import end_to_end
from fcm_tvm.energy import EnergyReading, interleaved_energy


class DriftingMeter:
    """An energy counter whose every reading is ``drift`` higher than the one before (the GPU
    warming up), and which notes what it measured."""

    def __init__(self, drift: float = 0.05):
        self.drift, self.readings, self.order = drift, 0, []

    def measure(self, run_batch, runs_per_batch, min_seconds=2.0):
        joules = run_batch(runs_per_batch)  # the fake batches return their true joules per run
        self.order.append(joules)
        reading = EnergyReading(joules * (1 + self.drift * self.readings), runs_per_batch, min_seconds)
        self.readings += 1
        return reading


def test_a_steady_drift_of_the_gpus_power_does_not_enter_the_variants_ratio():
    batches = {"stock": (lambda: 2.0, 10), "fcm": (lambda: 1.0, 10)}
    energy = interleaved_energy(batches, DriftingMeter(), rounds=4, seconds=0.0)
    assert energy["fcm"].median / energy["stock"].median == pytest.approx(0.5)
    assert [len(runs.joules_per_run) for runs in energy.values()] == [4, 4]


def test_the_turns_reverse_every_other_round():
    meter = DriftingMeter()
    interleaved_energy({"a": (lambda: 1.0, 1), "b": (lambda: 2.0, 1)}, meter, rounds=4, seconds=0.0)
    assert meter.order == [1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 1.0]


def test_the_spread_says_how_far_a_variants_readings_disagreed():
    energy = interleaved_energy({"only": (lambda: 1.0, 1)}, DriftingMeter(drift=0.1), rounds=3, seconds=0.0)
    assert energy["only"].joules_per_run == pytest.approx((1.0, 1.1, 1.2))
    assert energy["only"].spread == pytest.approx(0.2 / 1.1)


class FakeRunner:
    """A compiled variant whose time evaluator runs nothing and reports its true joules."""

    def __init__(self, joules: float):
        self.joules = joules

    def random_inputs(self):
        return [np.zeros(1)]

    def run(self, *inputs):
        return [np.zeros(1)]

    def benchmark(self, *inputs, number, repeat):
        return SimpleNamespace(median_ms=1.0)

    def evaluator(self, *inputs, number):
        return lambda: self.joules


def test_the_bench_reads_every_variants_energy_in_turns_after_all_are_timed(monkeypatch):
    joules = {"none": 3.0, "auto": 1.5}  # by fuse mode: stock, fcm

    def fake_compile(model, target, fuse, **options):
        return SimpleNamespace(fused=[], runner=lambda: FakeRunner(joules[fuse]))

    monkeypatch.setattr("fcm_tvm.compiler.compile", fake_compile)
    monkeypatch.setattr("fcm_tvm.reference.float64_reference", lambda model, inputs: [np.zeros(1)])
    meter = DriftingMeter()
    case = end_to_end.BenchCase("mobilenet_v2", 2, "fp32")
    rows = end_to_end.bench_case(case, ["stock", "fcm"], "llvm", None, 1, meter)
    assert meter.order[:4] == [3.0, 1.5, 1.5, 3.0]  # in turns, once both were compiled and timed
    stock, fcm = rows
    assert fcm["joules_per_inference"] / stock["joules_per_inference"] == pytest.approx(0.5)
    assert stock["joules_per_inference"] == pytest.approx(3.0 * (1 + 0.05 * 3.5) / 2)  # per image
    assert stock["energy_spread"] > 0


def test_a_bench_whose_variants_all_failed_draws_no_chart(tmp_path):
    pytest.importorskip("matplotlib")
    failed = [{"model": "mobilenet_v2", "batch": 1, "variant": "stock", "status": "failed"}]
    assert not end_to_end.plot(failed, tmp_path / "bench.png")
    assert not (tmp_path / "bench.png").exists()
