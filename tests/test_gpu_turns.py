"""Benchmark cases in parallel processes: builds overlap, GPU turns never do."""

from __future__ import annotations

import json
import multiprocessing
import time

from fcm_tvm.benchmarks.gpu_turns import gpu_turn, run_cases


def hold_turn(lock, log, name):
    with gpu_turn(lock):
        start = time.monotonic()
        time.sleep(0.2)
        with open(log, "a") as handle:
            handle.write(json.dumps([name, start, time.monotonic()]) + "\n")


def test_turns_on_one_lock_never_overlap(tmp_path):
    lock, log = tmp_path / "gpu.lock", tmp_path / "turns.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=hold_turn, args=(lock, log, str(i))) for i in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    turns = sorted(json.loads(line)[1:] for line in log.read_text().splitlines())
    assert len(turns) == 3
    assert all(end <= next_start for (_, end), (next_start, _) in zip(turns, turns[1:]))


def test_no_lock_is_no_wait():
    with gpu_turn(None):
        pass


CASE_MODULE = """
import argparse, json, pathlib
parser = argparse.ArgumentParser()
parser.add_argument("--name"); parser.add_argument("--out"); parser.add_argument("--gpu-lock")
parser.add_argument("--jobs", type=int); parser.add_argument("--fail", action="store_true")
args = parser.parse_args()
pathlib.Path(args.out, "seen.json").write_text(json.dumps(vars(args)))
raise SystemExit(3 if args.fail else 0)
"""


def test_each_case_runs_in_its_own_process_with_its_own_output(tmp_path, monkeypatch):
    (tmp_path / "fake_case.py").write_text(CASE_MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    cases = {"one": ["--name", "one"], "two": ["--name", "two", "--fail"]}
    codes = run_cases("fake_case", ["--name", "overridden"], cases, tmp_path / "out", jobs=2)
    assert codes == {"one": 0, "two": 3}
    for label in cases:
        seen = json.loads((tmp_path / "out" / label / "seen.json").read_text())
        assert seen["name"] == label and seen["jobs"] == 1
        assert seen["out"] == str(tmp_path / "out" / label)
        assert seen["gpu_lock"] == str(tmp_path / "out" / "gpu.lock")
