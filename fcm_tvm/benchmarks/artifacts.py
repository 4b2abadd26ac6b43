"""Build model artifacts here, then check and time them on a GPU host that has the runtime only.

Here (with the TVM compiler)::

    python -m fcm_tvm.benchmarks.artifacts build OUT_DIR --models mobilenet_v2 --target h100

On the GPU host (``source .gpu/rt/env.sh``: TVM_USE_RUNTIME_LIB=1)::

    python -m fcm_tvm.benchmarks.artifacts check OUT_DIR --report REPORT_DIR

``check`` loads every library with :func:`fcm_tvm.load`, runs it on fresh random inputs, compares
each output element with the float64 reference of the same ONNX model (rebuilt from the zoo with
its seed, so no weights travel twice), and times it with the VM's time evaluator.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
COLUMNS = ["model", "batch", "fuse", "fused", "max_rel_error", "passed", "median_ms", "min_ms", "device"]


def build(
    out_dir: Path, models: list[str], target: str, batch: int, resolution: int, fuses: list[str]
) -> None:
    from ..compiler import compile as compile_model
    from ..models import build_model

    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for name in models:
        source = {"zoo": name, "batch": batch, "resolution": resolution}
        onnx_model = build_model(name, batch=batch, resolution=resolution)
        for fuse in fuses:
            library = out_dir / f"{name}_b{batch}_{fuse}.so"
            print(f"[artifacts] compiling {name} (batch {batch}, fuse={fuse})", flush=True)
            compile_model(onnx_model, target, fuse=fuse).export_library(library)
            entries.append(
                {"library": library.name, "source": source, "fuse": fuse, "digest": digest(onnx_model)}
            )
    (out_dir / MANIFEST).write_text(json.dumps(entries, indent=2))


def check(artifact_dir: Path, report_dir: Path, input_sets: int, repeat: int) -> bool:
    from ..target import local_gpu_name
    from .report import save_report

    entries = json.loads((artifact_dir / MANIFEST).read_text())
    rows = []
    for zoo in dict.fromkeys(entry["source"]["zoo"] for entry in entries):
        rows += _check_model(
            [e for e in entries if e["source"]["zoo"] == zoo], artifact_dir, input_sets, repeat
        )
    print(save_report(report_dir, "runtime_check", rows, COLUMNS, {"gpu": local_gpu_name() or "none"}))
    return all(row["passed"] for row in rows)


def _check_model(entries: list[dict], artifact_dir: Path, input_sets: int, repeat: int) -> list[dict]:
    """Check every artifact of one zoo model on the same fresh inputs (one float64 reference each)."""
    from .. import load
    from ..models import build_model
    from ..reference import float64_reference

    source = entries[0]["source"]
    onnx_model = build_model(source["zoo"], batch=source["batch"], resolution=source["resolution"])
    if any(digest(onnx_model) != entry["digest"] for entry in entries):
        raise SystemExit(f"{source['zoo']}: the zoo builds a different model than the artifact's; rebuild it")
    models = [load(artifact_dir / entry["library"], "cuda") for entry in entries]
    errors: list[list[float]] = [[] for _ in entries]
    for _ in range(input_sets):  # fresh random inputs each time
        inputs = models[0].random_inputs()
        expected = float64_reference(onnx_model, inputs)
        for model, model_errors in zip(models, errors):
            model_errors += [_relative_error(a, e) for a, e in zip(model.run(*inputs), expected)]
    rows = []
    for entry, model, model_errors in zip(entries, models, errors):
        timing = model.benchmark(number=20, repeat=repeat)
        rows.append(
            {
                "model": source["zoo"],
                "batch": source["batch"],
                "fuse": entry["fuse"],
                "fused": len(model.fused),
                "max_rel_error": max(model_errors),
                "passed": max(model_errors) < 1e-4,
                "median_ms": timing.median_ms,
                "min_ms": timing.min_ms,
                "device": str(model.runner.device),
            }
        )
        print(
            f"[artifacts] {source['zoo']} fuse={entry['fuse']}: rel. error {max(model_errors):.2e}, "
            f"{timing.median_ms:.3f} ms",
            flush=True,
        )
    return rows


def digest(model) -> str:
    """A fingerprint of the model's graph and weights, to check the reference is the same model."""
    import hashlib

    return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()[:16]


def _relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.isfinite(actual).all():
        return float("inf")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    build_parser = commands.add_parser("build", help="compile zoo models into OUT_DIR")
    build_parser.add_argument("out_dir", type=Path)
    build_parser.add_argument("--models", default="mobilenet_v2")
    build_parser.add_argument("--target", default="h100")
    build_parser.add_argument("--batch", type=int, default=1)
    build_parser.add_argument("--resolution", type=int, default=224)
    build_parser.add_argument("--fuse", default="none", help="fuse mode(s), comma-separated")
    check_parser = commands.add_parser("check", help="check and time the artifacts on this GPU")
    check_parser.add_argument("artifact_dir", type=Path)
    check_parser.add_argument("--report", type=Path, default=Path("."))
    check_parser.add_argument("--input-sets", type=int, default=3)
    check_parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args(argv)
    if args.command == "build":
        build(
            args.out_dir,
            args.models.split(","),
            args.target,
            args.batch,
            args.resolution,
            args.fuse.split(","),
        )
        return 0
    return 0 if check(args.artifact_dir, args.report, args.input_sets, args.repeat) else 1


if __name__ == "__main__":
    sys.exit(main())
