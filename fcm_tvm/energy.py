"""Energy per inference from NVML's total-energy counter (millijoules since the driver loaded).

The counter updates every few tens of milliseconds, so a measurement runs the model for at
least ``min_seconds`` and divides by the number of runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


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
