"""``fcm-tvm``: a command line in the style of TVM's former ``tvmc``.

Each sub-command is one small function taking the parsed arguments; errors the user can fix
are printed as one line with a non-zero exit code, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .errors import FcmError
from .precision import MODEL_PRECISIONS, as_precision

EXIT_ERROR = 1
SHAPE_ITEM = re.compile(r"\s*([^\s:]+(?::[^\s:\[]+)*?):\s*\[([0-9,\s]*)\]\s*")


def progress(message: str) -> None:
    """Progress on long steps goes to stderr, so stdout stays machine-readable."""
    print(f"[fcm-tvm] {message}", file=sys.stderr, flush=True)


def parse_input_shapes(text: str | None) -> dict[str, tuple[int, ...]] | None:
    """Parse tvmc-style ``name:[1,3,224,224] other:[1,10]`` into a dict."""
    if not text:
        return None
    shapes, position = {}, 0
    for match in SHAPE_ITEM.finditer(text):
        if match.start() != position:
            break
        dims = [d for d in match.group(2).replace(" ", "").split(",") if d]
        shapes[match.group(1)] = tuple(int(d) for d in dims)
        position = match.end()
    if position != len(text) or not shapes:
        raise FcmError(f"cannot parse --input-shapes '{text}': expected name:[1,3,224,224] (space-separated)")
    return shapes


ZOO_BATCH = 1  # a zoo model's batch where --batch is not given


def zoo_batch(batch: int | None) -> int:
    return ZOO_BATCH if batch is None else batch


def model_source(name: str, batch: int | None = None):
    """An ONNX path as given, or, when no such file exists, the zoo model of that name (224x224,
    batch ``batch``, default 1). A batch for a file is an error: its shapes are the file's, or
    ``--input-shapes``'."""
    if Path(name).exists():
        if batch is not None:
            raise FcmError(f"--batch applies to zoo models; for {name} give --input-shapes")
        return name
    from .models import MODELS, build_model

    if name not in MODELS:
        return name  # a missing file is reported by the loader
    return build_model(name, batch=zoo_batch(batch))


# --- sub-commands ------------------------------------------------------------------------


def cmd_compile(args: argparse.Namespace) -> int:
    from .compiler import compile as compile_model

    progress(f"compiling {args.model} for {args.target} (fuse={args.fuse})")
    started = time.perf_counter()
    records = args.tuning_records
    if records == SHIPPED:
        records = _shipped_records_for(args)
        progress(f"applying the shipped tuning records {records}")
    compiled = compile_model(
        model_source(args.model, args.batch),
        args.target,
        fuse=args.fuse,
        input_shapes=parse_input_shapes(args.input_shapes),
        tuning_records=records,
        cuda_graph=args.cuda_graph,
        precision=args.precision,
    )
    output = compiled.export_library(args.output)
    progress(f"built for {compiled.target.describe()} in {time.perf_counter() - started:.1f} s")
    if args.dump_code:
        _dump_code(compiled, output, args.dump_code)
    for chain in compiled.fused:
        print(f"fused {chain.kind:9s} {chain.function}")
    print(f"wrote {output} ({len(compiled.fused)} fused kernels)")
    return 0


SHIPPED = "shipped"


def _shipped_records_for(args: argparse.Namespace, option: str = "--tuning-records") -> Path:
    """The records shipped for zoo model ``args.model`` on ``args.target``'s GPU, at the batch and
    precision it is compiled (or tuned) in; ``option``: the flag that asked, for messages."""
    from .models import MODELS
    from .records import shipped_cases, shipped_records
    from .target import resolve_target

    model, precision = args.model, args.precision or "fp32"
    batch = zoo_batch(args.batch)
    if model not in MODELS or Path(model).exists():
        raise FcmError(f"{option} {SHIPPED} needs a zoo model name (see 'fcm-tvm models'), not {model}")
    resolved = resolve_target(args.target)
    if not resolved.is_cuda or resolved.gpu is None:
        raise FcmError(f"{option} {SHIPPED}: records ship for GPUs only, not {resolved.describe()}")
    folder = shipped_records(resolved.gpu.key, model, batch, precision, args.fuse)
    if folder is None:
        have = ", ".join(shipped_cases(resolved.gpu.key)) or "none"
        raise FcmError(
            f"no tuning records ship for {model} (batch {batch}, {precision}) on {resolved.gpu.key}; "
            f"shipped: {have}"
        )
    return folder


def _dump_code(compiled, output: Path, formats: str) -> None:
    for fmt in formats.split(","):
        if fmt != "cuda":
            raise FcmError(f"--dump-code supports 'cuda', not '{fmt}'")
        path = output.with_suffix(".cu")
        path.write_text(compiled.cuda_source())
        progress(f"wrote CUDA source to {path}")


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime import load

    model = load(args.library, args.device, compiler=args.compiler)
    progress(f"loaded {args.library} on {model.device_name}")
    inputs = _read_inputs(args.inputs, model) if args.inputs else model.random_inputs(args.seed)
    outputs = model.run(*inputs)
    for index, output in enumerate(outputs):
        print(
            f"output {index}: shape {list(output.shape)} {output.dtype}, "
            f"mean {float(np.mean(output)):.6g}, max {float(np.max(output)):.6g}"
        )
    if args.outputs:
        np.savez(args.outputs, *outputs)
        progress(f"wrote outputs to {args.outputs}")
    if args.repeat > 0:
        timing = model.benchmark(*inputs, number=args.number, repeat=args.repeat)
        print(
            f"latency (ms): median {timing.median_ms:.4f}  mean {timing.mean_ms:.4f}  "
            f"min {timing.min_ms:.4f}  max {timing.max_ms:.4f}  ({timing.repeat}x{timing.number} runs)"
        )
    return 0


def _read_inputs(path: str, model) -> list[np.ndarray]:
    file = Path(path)
    if not file.is_file():
        raise FcmError(f"{file}: no such input file")
    try:
        data = np.load(file)
    except Exception as error:
        raise FcmError(f"{file}: not a .npy or .npz file ({error})") from None
    if isinstance(data, np.ndarray):
        return [data]
    names = [info.name for info in model.inputs]
    missing = [name for name in names if name not in data.files]
    if missing:  # positional arrays (arr_0, ...) are accepted too
        return [data[key] for key in data.files]
    return [data[name] for name in names]


def cmd_models(args: argparse.Namespace) -> int:
    from .models import build_model, list_models

    if not args.name:
        for info in list_models():
            print(f"{info.name:22s} {info.published_params / 1e6:6.2f}M  {info.description}")
        return 0
    model = build_model(args.name, batch=args.batch, resolution=args.resolution, fold_bn=args.fold_bn)
    model = as_precision(model, args.precision)
    output = Path(args.output or f"{args.name}.onnx")
    import onnx

    onnx.save_model(model, str(output))
    print(f"wrote {output}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    from .planning import plan

    progress(f"planning {args.model} for {args.gpu}")
    shapes = parse_input_shapes(args.input_shapes)
    result = plan(
        model_source(args.model, args.batch),
        gpu=args.gpu,
        input_shapes=shapes,
        tuned=args.tuned,
        cuda_graph=args.cuda_graph,
        precision=args.precision,
    )
    print(result.table())
    if args.json:
        Path(args.json).write_text(json.dumps(result.to_json(), indent=2))
        progress(f"wrote {args.json}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from .tuning import SUMMARY, tune

    progress(f"tuning {args.model} for {args.target} with {args.trials} trials (fuse={args.fuse})")
    start_from = args.start_from
    if start_from == SHIPPED:
        start_from = _shipped_records_for(args, "--start-from")
        progress(f"starting from the shipped tuning records {start_from}")
    folder = tune(
        model_source(args.model, args.batch),
        args.target,
        work_dir=args.output,
        trials=args.trials,
        trials_per_task=args.trials_per_task,
        focus=args.focus,
        time_budget_s=args.time_budget,
        fuse=args.fuse,
        input_shapes=parse_input_shapes(args.input_shapes),
        run_timeout_s=args.run_timeout,
        search=args.search,
        precision=args.precision,
        start_from=start_from,
        cuda_graph=args.cuda_graph,
    )
    print(f"tuning records in {folder} (use: fcm-tvm compile ... --tuning-records {folder})")
    print(f"summary in {folder / SUMMARY}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .benchmarks.end_to_end import bench

    rows = bench(
        models=args.model.split(","),
        variants=args.baseline.split(",") + args.variants.split(","),
        batches=[int(b) for b in args.batch.split(",")],
        precisions=args.precision.split(","),
        target=args.target,
        tuning_root=Path(args.tuning_records) if args.tuning_records else None,
        out_dir=Path(args.output),
        input_sets=args.input_sets,
        energy=not args.no_energy,
        cuda_graph=args.cuda_graph,
    )
    failed = [row for row in rows if row.get("status", "").startswith(("WRONG", "failed"))]
    return EXIT_ERROR if failed else 0


# --- parser ------------------------------------------------------------------------------


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="path of the ONNX model to read, or a zoo model name (see 'fcm-tvm models')"
    )
    parser.add_argument(
        "--input-shapes",
        metavar="SHAPES",
        help="static shapes for the inputs, e.g. 'input:[1,3,224,224]' (space-separated for several); "
        "needed when the model has dynamic dimensions",
    )
    parser.add_argument(
        "--batch", type=int, metavar="N", help="batch size of a zoo model (default: 1; files: --input-shapes)"
    )
    parser.add_argument(
        "--precision",
        choices=MODEL_PRECISIONS,
        help="cast every float tensor of the model to fp32 or fp16 first (default: the model's own)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcm-tvm",
        description="Compile and run depthwise-separable networks with fused DW+PW kernels on TVM.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what each step does")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    compile_parser = commands.add_parser(
        "compile",
        help="compile an ONNX model into a shared library",
        description="Compile an ONNX model into a shared library.",
    )
    _add_model_arguments(compile_parser)
    compile_parser.add_argument(
        "--target",
        default="cuda",
        help="'cuda' (arch of the local GPU, else sm_90), a GPU name such as h100 "
        "or a100, 'llvm' for the CPU, or a TVM target as JSON (default: cuda)",
    )
    compile_parser.add_argument(
        "-o",
        "--output",
        default="module.so",
        help="where to write the library; <output>.json gets its metadata (default: module.so)",
    )
    compile_parser.add_argument(
        "--fuse",
        choices=["auto", "all", "none"],
        default="auto",
        help="auto: FusePlanner decides per chain; all: fuse every supported "
        "chain; none: stock TVM (default: auto)",
    )
    compile_parser.add_argument(
        "--dump-code",
        metavar="FORMAT",
        help="also write generated code beside the output: 'cuda' writes <output>.cu",
    )
    compile_parser.add_argument(
        "--tuning-records",
        metavar="DIR",
        help="a MetaSchedule work directory from 'fcm-tvm tune' to apply, or 'shipped': the records "
        "that ship with fcm-tvm for a zoo model on the target's GPU",
    )
    compile_parser.add_argument(
        "--cuda-graph", action="store_true", help="capture the kernel launches in CUDA graphs"
    )
    compile_parser.set_defaults(handler=cmd_compile)

    run_parser = commands.add_parser(
        "run",
        help="run a compiled library and time it",
        description="Run a library written by 'fcm-tvm compile'.",
    )
    run_parser.add_argument("library", help="the .so written by 'fcm-tvm compile'")
    run_parser.add_argument(
        "--device", help="cuda, cuda:N or cpu (default: what the library was compiled for)"
    )
    run_parser.add_argument(
        "--inputs",
        "--input",
        dest="inputs",
        metavar="FILE",
        help=".npz with one array per input name (or a .npy for a single input); default: random inputs",
    )
    run_parser.add_argument("--outputs", metavar="FILE", help="save the outputs to this .npz")
    run_parser.add_argument(
        "--repeat", type=int, default=0, help="time the model over this many repeats (0: just run once)"
    )
    run_parser.add_argument("--number", type=int, default=10, help="runs per timed repeat (default: 10)")
    run_parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default: 0)")
    run_parser.add_argument(
        "--compiler",
        choices=["nvcc", "nvrtc"],
        help="how to compile the CUDA source at load (default: whichever is installed)",
    )
    run_parser.set_defaults(handler=cmd_run)

    plan_parser = commands.add_parser(
        "plan",
        help="print FusePlanner's decision for each DW/PW chain",
        description="Print FusePlanner's per-chain decisions and predictions.",
    )
    _add_model_arguments(plan_parser)
    plan_parser.add_argument("--gpu", default="h100", help="GPU to plan for (default: h100)")
    plan_parser.add_argument("--json", metavar="FILE", help="also write the plan as JSON")
    plan_parser.add_argument(
        "--tuned", action="store_true", help="plan as for a build with tuning records (against tuned stock)"
    )
    plan_parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="plan as for a build with CUDA graphs (on chain times without launches)",
    )
    plan_parser.set_defaults(handler=cmd_plan)

    tune_parser = commands.add_parser(
        "tune",
        help="tune the stock kernels with MetaSchedule",
        description="Tune every kernel that is not an FCM with MetaSchedule "
        "(XGBoost cost model); needs the GPU it tunes for.",
    )
    _add_model_arguments(tune_parser)
    tune_parser.add_argument("--target", default="cuda", help="as for compile (default: cuda)")
    tune_parser.add_argument(
        "-o",
        "--output",
        default="tuning_records",
        help="MetaSchedule work directory to write (default: tuning_records)",
    )
    tune_parser.add_argument(
        "--trials", type=int, default=2000, help="candidates in this run, all tasks together (default: 2000)"
    )
    tune_parser.add_argument(
        "--trials-per-task", type=int, default=64, metavar="N", help="candidates per tuned task (default: 64)"
    )
    tune_parser.add_argument(
        "--focus",
        type=float,
        default=0.9,
        metavar="SHARE",
        help="tune the slowest tasks that make up this share of the model's time under the default "
        "schedules, slowest first (default: 0.9); every task keeps its default schedule as a record",
    )
    tune_parser.add_argument(
        "--time-budget",
        type=float,
        metavar="S",
        help="start no task that would end after S seconds; run the command again to go on",
    )
    tune_parser.add_argument(
        "--search",
        choices=["evolutionary", "replay-trace"],
        default="evolutionary",
        help="MetaSchedule's search: evolutionary (XGBoost-guided, default) or replay-trace (random "
        "samples, no search cost: for short runs)",
    )
    tune_parser.add_argument(
        "--start-from",
        metavar="DIR",
        help="copy this database (a work directory, or shipped records, e.g. another GPU's) into a "
        "new output directory first, and tune only the tasks it holds no tuned record of; 'shipped': "
        "the records shipped for this zoo model, batch and precision on the target's GPU",
    )
    tune_parser.add_argument(
        "--run-timeout", type=float, metavar="S", help="seconds to measure one candidate (default: 30)"
    )
    tune_parser.add_argument(
        "--fuse",
        choices=["auto", "all", "none"],
        default="auto",
        help="tune around the FCMs as compile would fuse (default: auto); none tunes the stock graph",
    )
    tune_parser.add_argument(
        "--cuda-graph",
        action="store_true",
        help="tune around the FCMs of a build with CUDA graphs (compile/bench --cuda-graph), which "
        "may fuse other chains",
    )
    tune_parser.set_defaults(handler=cmd_tune)

    bench_parser = commands.add_parser(
        "bench",
        help="latency and energy of fcm-tvm vs stock TVM",
        description="Compile each variant of zoo models, check it against a "
        "float64 reference, time it and read its energy; "
        "writes bench.json, bench.md and bench.png.",
    )
    bench_parser.add_argument("model", help="zoo model name(s), comma-separated (see 'fcm-tvm models')")
    bench_parser.add_argument(
        "--baseline", default="stock,stock-tuned", help="baseline variants (default: stock,stock-tuned)"
    )
    bench_parser.add_argument(
        "--variants", default="fcm,fcm-tuned", help="fcm-tvm variants (default: fcm,fcm-tuned)"
    )
    bench_parser.add_argument("--batch", default="1", help="batch sizes, comma-separated (default: 1)")
    bench_parser.add_argument("--precision", default="fp32", help="fp32 and/or fp16, comma-separated")
    bench_parser.add_argument("--target", default="cuda", help="as for compile (default: cuda)")
    bench_parser.add_argument(
        "--tuning-records",
        metavar="DIR",
        help="folder of work directories named MODEL_bB_PRECISION_{stock,fcm} "
        "(default: the records shipped for the target's GPU)",
    )
    bench_parser.add_argument("-o", "--output", default="bench_results", help="folder for the results")
    bench_parser.add_argument("--input-sets", type=int, default=3, help="fresh input sets timed (default: 3)")
    bench_parser.add_argument("--no-energy", action="store_true", help="skip the NVML energy reading")
    bench_parser.add_argument(
        "--cuda-graph", action="store_true", help="capture every variant's kernel launches in CUDA graphs"
    )
    bench_parser.set_defaults(handler=cmd_bench)

    models_parser = commands.add_parser(
        "models",
        help="list the model zoo or export one model as ONNX",
        description="List the built-in models, or export NAME as ONNX.",
    )
    models_parser.add_argument("name", nargs="?", help="model to export (omit to list the zoo)")
    models_parser.add_argument("-o", "--output", help="ONNX file to write (default: NAME.onnx)")
    models_parser.add_argument("--batch", type=int, default=1, help="batch size (default: 1)")
    models_parser.add_argument("--resolution", type=int, default=224, help="input resolution (default: 224)")
    models_parser.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convolutions")
    models_parser.add_argument("--precision", choices=MODEL_PRECISIONS, help="fp32 (default) or fp16")
    models_parser.set_defaults(handler=cmd_models)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="[fcm-tvm] %(message)s"
    )
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except FcmError as error:
        print(f"fcm-tvm: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("fcm-tvm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
