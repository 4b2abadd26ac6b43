"""Do MetaSchedule candidates that TVM's make_uint4 bug broke compute right once repaired?

``fcm_tvm.cuda_postproc`` rewrites TVM's 8-lane float16 ``make_uint4`` gathers. This script takes
the candidates that failed to build in tuning logs ("too many arguments in function call"),
builds them here with the repair (nvcc), and runs them on the GPU host with the runtime only,
against the task's unscheduled function built for the CPU on the same random inputs.

    python tests/gpu/check_cuda_postproc.py build OUT_DIR LOG...   # here: libraries + inputs
    python tests/gpu/check_cuda_postproc.py run OUT_DIR            # GPU host, .gpu/rt/env.sh sourced

The logs of the 81 candidates that failed on the H100 (2026-12-06, before the repair; tuning now
builds them) are ``tests/data/make_uint4_tuning_logs.tar.xz``: ``tar xJf`` it in a scratch folder
and pass ``runs/*/logs/*.log``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

FAILED = "too many arguments in function call"
RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d ")  # a log record's first line
TRACE = re.compile(r"^(sch\.|\w+ = sch\.)")  # where a logged module ends and its trace begins
TOLERANCE = 2e-2  # normwise, fp16 kernels against an fp16 CPU build of the same function


def logged_modules(log: Path) -> tuple[str, list[str]]:
    """The task's unscheduled module and the scheduled modules of its candidates that hit the bug."""
    records, current = [], []
    for line in log.read_text().splitlines():
        if RECORD.match(line) and current:
            records.append(current)
            current = []
        current.append(line)
    records.append(current)
    script = lambda lines: "\n".join(_module_lines(lines))  # noqa: E731
    workload = next(script(r) for r in records if any(line.startswith("@I.ir_module") for line in r))
    failed = [script(r) for r in records if len(r) > 1 and FAILED in r[1]]
    return workload, failed


def _module_lines(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("# from tvm.script"))
    end = next((i for i, line in enumerate(lines) if i > start and TRACE.match(line)), len(lines))
    return lines[start:end]


def build(out_dir: Path, logs: list[Path]) -> int:
    import tvm
    import tvm.s_tir.tensor_intrin  # noqa: F401  (the candidates are tensorized)
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo

    from fcm_tvm.compiler import module_cuda_source
    from fcm_tvm.cuda_postproc import install

    install()
    out_dir.mkdir(parents=True, exist_ok=True)
    cuda = tvm.target.Target({"kind": "cuda", "arch": "sm_90"})
    rng, cases = np.random.default_rng(0), {}
    for log in logs:
        workload, failed = logged_modules(log)
        task = f"{log.parent.parent.name}.{log.stem.split('task_0_')[-1]}"  # run.task: unique
        unscheduled = tvm.script.from_source(workload)
        reference = tvm.compile(unscheduled, target="llvm")
        arguments = ArgInfo.from_prim_func(unscheduled["main"])
        shapes = [([int(d) for d in info.shape], str(info.dtype)) for info in arguments]
        inputs = [rng.uniform(-1, 1, shape).astype(dtype) for shape, dtype in shapes[:-1]]
        np.savez(out_dir / f"{task}.npz", *inputs, expected=_run(reference, tvm.cpu(), inputs, shapes[-1]))
        for index, script in enumerate(failed):
            library = tvm.compile(tvm.script.from_source(script), target=cuda)
            _nvcc(module_cuda_source(library.mod), out_dir / f"{task}_{index}.cu")  # fails without the repair
            library.export_library(str(out_dir / f"{task}_{index}.so"))
            cases[f"{task}_{index}"] = task
            print(f"built {task}_{index}", flush=True)
    (out_dir / "cases.json").write_text(json.dumps(cases))
    return 0


def _nvcc(source: str, path: Path) -> None:
    path.write_text(source)
    objects = path.with_suffix(".o")
    subprocess.run(["nvcc", "-arch=sm_90", "-w", "-c", str(path), "-o", str(objects)], check=True)
    objects.unlink()
    path.unlink()


def _run(module, device, inputs: list[np.ndarray], output: tuple[list[int], str]) -> np.ndarray:
    import tvm

    arrays = [tvm.runtime.tensor(array, device) for array in inputs]
    result = tvm.runtime.tensor(np.full(output[0], np.nan, output[1]), device)  # poisoned
    module["main"](*arrays, result)
    return result.numpy()


def run(out_dir: Path) -> int:
    import tvm

    from fcm_tvm.runtime import load_cuda_runtime, register_cuda_compiler

    load_cuda_runtime()
    register_cuda_compiler("sm_90")
    failures = 0
    print("| candidate | relative error | correct |\n|---|---|---|")
    for name, task in json.loads((out_dir / "cases.json").read_text()).items():
        data = np.load(out_dir / f"{task}.npz")
        inputs = [data[f"arr_{i}"] for i in range(len(data.files) - 1)]
        expected = data["expected"].astype(np.float64)
        module = tvm.runtime.load_module(str(out_dir / f"{name}.so"))
        actual = _run(module, tvm.cuda(0), inputs, (list(expected.shape), str(data["expected"].dtype)))
        error = np.linalg.norm(actual.astype(np.float64) - expected) / max(np.linalg.norm(expected), 1e-30)
        correct = bool(np.isfinite(actual).all() and error < TOLERANCE)
        failures += not correct
        print(f"| {name} | {error:.2e} | {'yes' if correct else 'NO'} |", flush=True)
    return 1 if failures else 0


def main() -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("command", choices=["build", "run"])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("logs", type=Path, nargs="*")
    args = parser.parse_args()
    return build(args.out_dir, args.logs) if args.command == "build" else run(args.out_dir)


if __name__ == "__main__":
    sys.exit(main())
