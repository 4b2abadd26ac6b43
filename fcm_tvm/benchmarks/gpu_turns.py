"""Benchmark cases in parallel processes: their builds overlap, their GPU work takes turns.

Building a layer benchmark's case (TVM lowering and code generation of every chain, fused,
stock and tuned) is CPU work that took most of a run on the GPU host, one case after another.
Its timings must not share the GPU with another case's. So each case runs in a process of its
own, ``jobs`` at a time, and holds an exclusive lock on one file while it uses the GPU
(:func:`gpu_turn`); the builds of the others go on meanwhile.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "gpu.lock"


@contextmanager
def gpu_turn(lock: Path | None) -> Iterator[None]:
    """Hold the GPU alone among the processes sharing ``lock`` (no lock: nothing to wait for)."""
    if lock is None:
        yield
        return
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run_cases(
    module: str, argv: Sequence[str], cases: dict[str, list[str]], out: Path, jobs: int
) -> dict[str, int]:
    """Run ``python -m module *argv *case_args --out out/label --gpu-lock LOCK`` for every case
    of ``cases`` (label: its arguments), ``jobs`` at a time; each case's output goes to
    ``out/label/run.log``. Later options override ``argv``'s. Returns each case's exit code."""
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_NAME

    def run(label: str) -> int:
        case_out = out / label
        case_out.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", module, *argv, *cases[label]]
        command += ["--out", str(case_out), "--gpu-lock", str(lock), "--jobs", "1"]
        with open(case_out / "run.log", "w") as log:
            code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
        print(f"[{module.rsplit('.', 1)[-1]}] {label}: exit {code}", file=sys.stderr, flush=True)
        return code

    with ThreadPoolExecutor(max_workers=max(jobs, 1)) as pool:
        return dict(zip(cases, pool.map(run, cases)))
