"""Energy per inference from NVML's total-energy counter (millijoules since the driver loaded).

The counter updates every few tens of milliseconds, so a measurement runs the model for at
least ``min_seconds`` and divides by the number of runs. Variants compared with each other are
measured in turns (:func:`interleaved_energy`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

ROUNDS = 4  # readings per variant, taken in turns
ROUND_SECONDS = 1.0  # per reading: tens of the counter's updates


@dataclass(frozen=True)
class EnergyReading:
    joules_per_run: float
    runs: int
    seconds: float

    @property
    def watts(self) -> float:
        return self.joules_per_run * self.runs / self.seconds


class EnergyMeter:
    """Reads GPU ``index``'s energy counter through nvidia-ml-py (``pynvml``)."""

    def __init__(self, index: int = 0):
        try:
            import pynvml
        except ImportError:
            raise RuntimeError("energy needs nvidia-ml-py (pip install nvidia-ml-py)") from None
        pynvml.nvmlInit()
        self._nvml = pynvml
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self.millijoules()  # fails here, not mid-benchmark, where the GPU has no energy counter

    def millijoules(self) -> int:
        return int(self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle))

    def measure(self, run_batch: Callable[[int], None], runs_per_batch: int, min_seconds: float = 2.0):
        """Call ``run_batch(runs_per_batch)`` (which must synchronize) until ``min_seconds`` passed."""
        start_mj, start, runs = self.millijoules(), time.perf_counter(), 0
        while time.perf_counter() - start < min_seconds:
            run_batch(runs_per_batch)
            runs += runs_per_batch
        seconds = time.perf_counter() - start
        return EnergyReading((self.millijoules() - start_mj) / 1e3 / runs, runs, seconds)


@dataclass(frozen=True)
class EnergyRuns:
    """One variant's readings of :func:`interleaved_energy`, in joules per run."""

    joules_per_run: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.joules_per_run)

    @property
    def spread(self) -> float:
        """(largest - smallest) / median: how far this variant's readings disagreed."""
        return (max(self.joules_per_run) - min(self.joules_per_run)) / self.median


def interleaved_energy(
    batches: Mapping[str, tuple[Callable[[], None], int]],
    meter: EnergyMeter,
    rounds: int = ROUNDS,
    seconds: float = ROUND_SECONDS,
) -> dict[str, EnergyRuns]:
    """Joules per run of each variant (``batches``: name -> (a synchronising call running it
    ``runs`` times, runs)), read ``rounds`` times in turns, the order reversed every other round
    (A B, B A, ...).

    Why: one reading per variant, taken a minute apart after each compile, let the GPU's drift in
    temperature and power into the variants' ratio (EfficientNet-B0's moved 0.85x -> 0.90x between
    two runs of one build). In turns, a drift touches every variant alike, and a linear one
    cancels over each pair of rounds.
    """
    names = list(batches)
    readings: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else names[::-1]:
            batch, runs = batches[name]
            reading = meter.measure(lambda _count, batch=batch: batch(), runs, seconds)
            readings[name].append(reading.joules_per_run)
    return {name: EnergyRuns(tuple(values)) for name, values in readings.items()}
