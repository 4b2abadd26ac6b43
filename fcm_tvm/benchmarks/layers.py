"""Per-layer benchmark of the FCM kernels (issue 3), run on the GPU host with the full TVM.

For every DW/PW chain of the chosen zoo models, side by side in one process:

- ``fcm``: the FCM kernel (tiles from FusePlanner, or the kernel's defaults);
- ``stock``: the chain's ops as the zoo's models have them (conv, BatchNorm, activation) through
  TVM's default pipeline (dlight), separate kernels: what a chain the planner declines costs;
- ``stock_folded``: the same with BatchNorm folded into a bias (as exporters that fold it emit),
  which dlight schedules through a slower fallback (the ``stock`` of results before 2026-11-26);
- ``stock_tuned``: the same ops with a MetaSchedule database (``--tuning-records``);
- ``*_graph_us`` (``--graph-clock K``): the FCM, stock and tuned stock chains run K times on
  fresh inputs inside one CUDA graph, per run: what a chain costs in a graph-captured model;
- ``cudnn``: ``torch.nn.functional.conv2d`` (cuDNN) in the same dtype, and with ``--graph-clock``
  also K chains captured in one torch CUDA graph (``cudnn_graph_us``);
- ``floor``: the DRAM-traffic floor (inputs, weights and output moved once) at the measured
  copy bandwidth.

Each FCM kernel's output is poisoned with NaN and checked against a float64 torch reference on
fresh random inputs before it is timed. Kernel times use the runtime's time evaluator with
``number`` runs per repeat and the median of ``repeat`` repeats. ``--profile-run`` instead runs
each workload once between marker kernels, for ``ncu`` to count DRAM bytes and GPU time (see
:mod:`.ncu_bytes`). ``--variants`` picks the unfused builds, timed or profiled: each is a TVM
build of every chain, so re-timing new FCM kernels (``--variants fcm``) skips them; a table
built from such a run keeps the stock times of earlier runs (:mod:`.measured_table`).

    python -m fcm_tvm.benchmarks.layers --models mobilenet_v2 --batch 1,32 --precision fp32,fp16 --out DIR

``--sub-chains`` adds the shorter chains the rewrite pass falls back to inside a declined
PW->DW->PW chain, so that the planner's table of measured chains (:mod:`.measured_table`) has
them too. ``--kinds`` keeps the chains of some kinds only (``dw_pw``, say), so that a run
re-times those without replacing the other kinds' rows of a table built from it.
``--beyond-l2`` keeps the chains whose largest intermediate exceeds the GPU's L2 (those issue 3's
DRAM target is about), for a short ``ncu`` run. ``--cuda-graph`` plans the FCMs as a graph build
does (``fcm-tvm bench --cuda-graph``); given ``--tuning-records``, also as a tuned build does.

``--jobs N`` runs every case (model, batch, precision) in a process of its own, N at a time: the
builds overlap and the GPU work takes turns (:mod:`.gpu_turns`); the rows are joined into one
report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from collections.abc import Collection
from pathlib import Path

import numpy as np

from ..records import has_records, tuning_dir, unpacked
from ..schedules.spec import KIND_OF_STAGES
from .chains import (
    LayerCase,
    batchnorm_epsilon,
    case_model,
    fused_module,
    graph_timed_module,
    intermediate_bytes,
    model_chains,
    traffic_floor_bytes,
    unfused_module,
)
from .gpu_turns import gpu_turn, run_cases
from .report import save_report

COLUMNS = [
    "model",
    "batch",
    "precision",
    "chain",
    "kind",
    "shape",
    "count",
    "fcm_us",
    "stock_us",
    "stock_folded_us",
    "stock_tuned_us",
    "fcm_graph_us",
    "stock_graph_us",
    "stock_tuned_graph_us",
    "cudnn_us",
    "cudnn_graph_us",
    "floor_us",
    "speedup_vs_best_baseline",
    "speedup_in_graphs",
    "rel_error",
    "fused_by_planner",
]
TOLERANCE = {"float32": 1e-4, "float16": 1e-2}
BASELINES = ("stock", "stock_folded", "stock_tuned")  # the unfused builds of a chain
VARIANTS = ("fcm", *BASELINES)
GRAPH_BASELINES = ("stock_tuned_graph_us", "cudnn_graph_us")  # tuned stock and cuDNN, timed in graphs


def planner_tiles(specs, gpu, tuned: bool = False, cuda_graph: bool = False):
    """The planner's decision per chain (fuse?, tiles), or defaults where no planner is present.

    The tiles are those of the planner's best fused candidate also where it declines to fuse:
    what the FCM would be had it fused, so that the decision can be checked against it.
    ``tuned``, ``cuda_graph``: decide as a tuned or graph-captured build does (:func:`plan_chain`).
    """
    try:
        from ..planner import plan_chain
    except ImportError:
        return [(None, None)] * len(specs)
    decisions = [plan_chain(spec, gpu, tuned=tuned, cuda_graph=cuda_graph) for spec in specs]
    return [(d.fuse, d.fused.tiles if d.fused is not None else None) for d in decisions]


def tiles_record(tiles) -> dict | None:
    """The FCM's tiles as the profile order records them (None: the kernel builder's defaults)."""
    return None if tiles is None else dataclasses.asdict(tiles)


def tiles_text(tiles) -> str:
    """``FcmTiles.label`` ("default" for none: the kernel builder's defaults)."""
    return "default" if tiles is None else tiles.label


def describe(spec) -> str:
    stages = "+".join(
        f"dw{s.kernel}s{s.stride}" if hasattr(s, "kernel") else f"pw{s.out_channels}" for s in spec.stages
    )
    return f"{spec.in_channels}x{spec.height}x{spec.width} {stages}{' +res' if spec.residual else ''}"


class NoChainSelected(Exception):
    """A case none of whose chains the run's options select (``--beyond-l2`` at batch 1, say)."""


class Workloads:
    """Built fused and unfused modules for one case, with random arguments per chain."""

    def __init__(
        self,
        case: LayerCase,
        target,
        gpu,
        tuning_records: Path | None,
        sub_chains: bool = False,
        unmeasured: bool = False,
        graph_repeats: int = 0,
        baselines: Collection[str] = BASELINES,
        kinds: Collection[str] | None = None,
        beyond_l2: bool = False,
        cuda_graph_plan: bool = False,
    ):
        """``baselines``: which unfused builds to compile (each is a TVM build of every chain; a
        run of the FCMs alone needs none). The graph clock times the stock chain with "stock"
        and the tuned one with "stock_tuned" (given records). ``kinds``: only chains of these
        kinds (``dw_pw``, say), so that a run re-times one kind without touching the others'
        rows in the table. ``beyond_l2``: only chains whose largest intermediate exceeds the
        GPU's L2. ``cuda_graph_plan``: tiles as a graph build plans them (tuned too, given
        records)."""
        import tvm

        from ..pipeline import stock_pipeline

        self.case = case
        chains = [
            (spec, count)
            for spec, count in model_chains(case, sub_chains=sub_chains)
            if is_selected(spec, gpu, unmeasured, kinds, beyond_l2)
        ]
        if not chains:
            raise NoChainSelected(f"{case.label}: no chain selected")
        self.specs = [spec for spec, _ in chains]
        self.counts = [count for _, count in chains]
        tuned_plan = cuda_graph_plan and tuning_records is not None
        decisions = planner_tiles(self.specs, gpu, tuned_plan, cuda_graph_plan)
        self.planner_fuse = [fuse for fuse, _ in decisions]
        self.tiles = [tiles for _, tiles in decisions]
        self.fused = tvm.compile(fused_module(self.specs, [t for _, t in decisions], target), target)
        self.epsilon = batchnorm_epsilon(case_model(case))  # the model's: its tuned kernels apply
        unfused = unfused_module(self.specs, epsilon=self.epsilon)
        self.stock = tvm.compile(unfused, target) if "stock" in baselines else None
        self.stock_folded = None
        if "stock_folded" in baselines:
            self.stock_folded = tvm.compile(unfused_module(self.specs, batchnorm=False), target)
        self.tuned = None
        if tuning_records is not None and "stock_tuned" in baselines:
            self.tuned = tvm.compile(
                unfused, target, relax_pipeline=stock_pipeline(target, str(tuning_records))
            )
        self.graph_repeats = graph_repeats
        self.graphs: dict[str, object] = {}
        self.graph_columns: dict[str, tuple[str, str]] = {}  # column: (build of graphs, function)
        if graph_repeats:
            self._graph_clock(target, tuning_records, baselines)

    def unfused(self) -> dict[str, object]:
        """The unfused builds compiled, by variant name (of :data:`BASELINES`)."""
        built = {"stock": self.stock, "stock_folded": self.stock_folded, "stock_tuned": self.tuned}
        return {variant: executable for variant, executable in built.items() if executable is not None}

    def _graph_clock(self, target, tuning_records: Path | None, baselines: Collection[str]) -> None:
        """The chains repeated inside one CUDA graph (:func:`.chains.graph_timed_module`), built
        with the default pipeline and, given records (and "stock_tuned"), with the tuned one; and
        which of their functions :func:`graph_clock` times as which column."""
        import tvm

        from ..pipeline import stock_pipeline

        stock = "stock" in baselines
        module = graph_timed_module(self.specs, self.tiles, target, self.graph_repeats, stock, self.epsilon)
        self.graph_columns = {"fcm_graph_us": ("default", "fcm")}
        if stock:
            self.graph_columns["stock_graph_us"] = ("default", "chain")
        builds = {"default": None}
        if tuning_records is not None and "stock_tuned" in baselines:
            builds["tuned"] = str(tuning_records)
            self.graph_columns["stock_tuned_graph_us"] = ("tuned", "chain")
        with tvm.transform.PassContext(opt_level=3, config={"relax.backend.use_cuda_graph": True}):
            self.graphs = {
                name: tvm.compile(module, target, relax_pipeline=stock_pipeline(target, records))
                for name, records in builds.items()
            }


def selected_workloads(case: LayerCase, *args, **kwargs) -> Workloads | None:
    """:class:`Workloads` of ``case``, or None (said on stderr) where the run selects none of its chains."""
    try:
        return Workloads(case, *args, **kwargs)
    except NoChainSelected as skipped:
        print(f"[layers] {skipped}", file=sys.stderr)
        return None


def is_selected(
    spec, gpu, unmeasured: bool = False, kinds: Collection[str] | None = None, beyond_l2: bool = False
) -> bool:
    """Whether a run with these options takes the chain: its stock time not in the GPU's table
    (``unmeasured``), of one of ``kinds``, an intermediate larger than the GPU's L2 (``beyond_l2``)."""
    if unmeasured and _stock_measured(spec, gpu):
        return False
    if kinds is not None and spec.kind not in kinds:
        return False
    return not beyond_l2 or intermediate_bytes(spec) > gpu.l2_bytes


def _stock_measured(spec, gpu) -> bool:
    from ..planner.measured import measured

    known = measured(spec, gpu)
    return known is not None and known.stock_s is not None


def measure_case(workloads: Workloads, device, number: int, repeat: int, bandwidth_gbs: float) -> list[dict]:
    import tvm

    case, rows = workloads.case, []
    vms = {
        f"{variant}_us": tvm.relax.VirtualMachine(executable, device)
        for variant, executable in workloads.unfused().items()
    }
    graph_vms = {name: tvm.relax.VirtualMachine(built, device) for name, built in workloads.graphs.items()}
    for index, spec in enumerate(workloads.specs):
        arguments = [tvm.runtime.tensor(a, device) for a in random_arguments(spec)]
        error = check_fused(workloads.fused, index, spec, arguments, device)
        row = {
            "model": case.model,
            "batch": case.batch,
            "precision": case.precision,
            "chain": index,
            "key": spec.key,
            "kind": spec.kind,
            "shape": describe(spec),
            "count": workloads.counts[index],
            "rel_error": error,
            "fused_by_planner": workloads.planner_fuse[index],
            "tiles": tiles_text(workloads.tiles[index]),
        }
        if not error < TOLERANCE[spec.dtype]:
            rows.append({**row, "fcm_us": None, "status": "WRONG RESULT"})
            continue
        output = tvm.runtime.empty(spec.output.as_tuple(), spec.dtype, device)
        row["fcm_us"] = time_function(
            workloads.fused, f"fcm_{index}", device, [*arguments, output], number, repeat
        )
        for column, vm in vms.items():
            row[column] = time_vm(vm, f"chain_{index}", device, arguments, number, repeat)
        if graph_vms:
            columns, repeats = workloads.graph_columns, workloads.graph_repeats
            row.update(graph_clock(graph_vms, columns, repeats, index, spec, device, number, repeat))
        row["cudnn_us"] = time_cudnn(spec, number, repeat)
        if workloads.graph_repeats:
            row["cudnn_graph_us"] = time_cudnn_graph(spec, workloads.graph_repeats, number, repeat)
        row["floor_us"] = traffic_floor_bytes(spec) / (bandwidth_gbs * 1e3)
        row["speedup_vs_best_baseline"] = best_baseline_ratio(row, "fcm_us", ("stock_tuned_us", "cudnn_us"))
        row["speedup_in_graphs"] = best_baseline_ratio(row, "fcm_graph_us", GRAPH_BASELINES)
        rows.append(row)
    return rows


def best_baseline_ratio(row: dict, fused: str, baselines: tuple[str, ...]) -> float | None:
    """The fastest of ``baselines`` present in ``row`` over its ``fused`` time (None: none timed)."""
    times = [row[key] for key in baselines if row.get(key)]
    return min(times) / row[fused] if times and row.get(fused) else None


def graph_clock(
    vms: dict, columns: dict, repeats: int, index: int, spec, device, number: int, repeat: int
) -> dict:
    """Microseconds per chain with the chain repeated ``repeats`` times inside one CUDA graph
    (``vms`` and ``columns``: :meth:`Workloads._graph_clock`'s builds and what it times in them):
    the FCM and, where built, the stock and tuned stock chains, as ``*_graph_us``."""
    import tvm

    first, *weights = (tvm.runtime.tensor(array, device) for array in random_arguments(spec))
    fresh = (random_array(spec, spec.input.as_tuple()) for _ in range(repeats - 1))
    inputs = [first, *(tvm.runtime.tensor(array, device) for array in fresh)]  # a fresh input per repeat
    times = {}
    for column, (build, prefix) in columns.items():
        microseconds = time_vm(vms[build], f"{prefix}_{index}", device, [*inputs, *weights], number, repeat)
        times[column] = microseconds / repeats
    return times


def random_arguments(spec) -> list[np.ndarray]:
    """Fresh inputs: activations ~ N(0, 1), weights scaled by 1/sqrt(fan-in), biases ~ N(0, 0.1)."""
    rng = np.random.default_rng()
    return [random_array(spec, shape, rng) for shape in spec.param_shapes()]


def random_array(spec, shape: tuple[int, ...], rng: np.random.Generator | None = None) -> np.ndarray:
    """One of :func:`random_arguments`'s arrays, scaled by what ``shape`` is in ``spec``."""
    rng = rng or np.random.default_rng()
    scale = 0.1 if len(shape) == 1 else 1.0
    if len(shape) == 4 and shape != spec.input.as_tuple() and shape != spec.output.as_tuple():
        scale = 1.0 / np.sqrt(shape[1] * shape[2] * shape[3])
    return (rng.standard_normal(shape) * scale).astype(spec.dtype)


def check_fused(library, index: int, spec, arguments, device) -> float:
    """Relative error of the FCM kernel against float64 torch, its output poisoned with NaN first."""
    import tvm

    poisoned = np.full(spec.output.as_tuple(), np.nan, dtype=spec.dtype)
    output = tvm.runtime.tensor(poisoned, device)
    library[f"fcm_{index}"](*arguments, output)
    device.sync()
    actual = output.numpy().astype(np.float64)
    expected = torch_reference(spec, [a.numpy() for a in arguments])
    if not np.isfinite(actual).all():
        return float("inf")
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def torch_chain(spec, tensors, torch):
    import torch.nn.functional as F

    activations = {
        "none": lambda t: t,
        "relu": F.relu,
        "relu6": lambda t: F.relu6(t),
        "hardswish": F.hardswish,
        "sigmoid": torch.sigmoid,
        "silu": F.silu,
    }
    value, cursor = tensors[0], 1
    for stage in spec.stages:
        weight, bias = tensors[cursor], tensors[cursor + 1]
        cursor += 2
        if hasattr(stage, "kernel"):
            top, left, bottom, right = stage.pads
            value = F.conv2d(
                F.pad(value, (left, right, top, bottom)),
                weight,
                bias,
                stride=stage.stride,
                groups=value.shape[1],
            )
        else:
            value = F.conv2d(value, weight, bias)
        value = activations[stage.activation](value)
    return value + tensors[cursor] if spec.residual else value


def torch_reference(spec, arrays: list[np.ndarray]) -> np.ndarray:
    import torch

    tensors = [torch.from_numpy(a.astype(np.float64)).cuda() for a in arrays]
    with torch.no_grad():
        return torch_chain(spec, tensors, torch).cpu().numpy()


def time_function(library, name: str, device, arguments, number: int, repeat: int) -> float:
    evaluator = library.mod.time_evaluator(name, device, number=number, repeat=repeat)
    return statistics.median(evaluator(*arguments).results) * 1e6


def time_vm(vm, name: str, device, arguments, number: int, repeat: int) -> float:
    vm.save_function(name, f"{name}_saved", *arguments)
    evaluator = vm.time_evaluator(f"{name}_saved", device, number=number, repeat=repeat)
    return statistics.median(evaluator().results) * 1e6


def time_cudnn(spec, number: int, repeat: int) -> float:
    import torch

    tensors = cudnn_tensors(spec, random_arguments(spec))
    with torch.no_grad():
        for _ in range(3):
            torch_chain(spec, tensors, torch)
        return median_event_us(lambda: torch_chain(spec, tensors, torch), number, repeat)


def time_cudnn_graph(spec, repeats: int, number: int, repeat: int) -> float:
    """Microseconds per chain with ``repeats`` cuDNN chains, a fresh input each, captured in one
    torch CUDA graph: cuDNN without torch's launch overhead, as the graph clock times TVM's."""
    import torch

    first, *weights = cudnn_tensors(spec, random_arguments(spec))
    fresh = cudnn_tensors(spec, [random_array(spec, spec.input.as_tuple()) for _ in range(repeats - 1)])
    chains = [[value, *weights] for value in [first, *fresh]]
    with torch.no_grad():
        side = torch.cuda.Stream()  # warm-up (cuDNN's algorithm search) off the capturing stream
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                torch_chain(spec, chains[0], torch)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for tensors in chains:
                torch_chain(spec, tensors, torch)
        return median_event_us(graph.replay, number, repeat) / repeats


def cudnn_tensors(spec, arrays: list[np.ndarray]) -> list:
    """``arrays`` on the GPU in the spec's dtype, with cuDNN choosing its algorithms by timing."""
    import torch

    torch.backends.cudnn.benchmark = True
    dtype = torch.float16 if spec.dtype == "float16" else torch.float32
    return [torch.from_numpy(array).to("cuda", dtype) for array in arrays]


def median_event_us(call, number: int, repeat: int) -> float:
    """Median over ``repeat`` repeats of the microseconds per ``call`` of ``number`` calls, by CUDA events."""
    import torch

    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(number):
            call()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / number)
    return statistics.median(times)


def copy_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth, counting bytes read plus written (the roofline's ceiling)."""
    import torch

    source = torch.empty(1 << 28, dtype=torch.uint8, device="cuda")
    target = torch.empty_like(source)
    for _ in range(3):
        target.copy_(source)
    microseconds = median_event_us(lambda: target.copy_(source), number=20, repeat=1)
    return 2 * source.numel() / (microseconds * 1e-6) / 1e9


def case_records(tuning_root: Path | None, case: LayerCase) -> Path | None:
    """The unpacked stock-graph database for ``case`` under ``tuning_root``, or None (said why)."""
    if tuning_root is None:
        return None
    records = tuning_dir(tuning_root, case.model, case.batch, case.precision, "none")
    if has_records(records):
        return unpacked(records)
    print(f"[layers] no MetaSchedule database at {records}: no stock_tuned", file=sys.stderr)
    return None


def profile_run(
    cases: list[LayerCase],
    target,
    gpu,
    out: Path,
    tuning_root: Path | None = None,
    sub_chains: bool = False,
    variants: tuple[str, ...] = VARIANTS,
    selection: dict | None = None,
    gpu_lock: Path | None = None,
) -> None:
    """Run each workload once, fused then unfused (and tuned, given records), from a cold L2
    between markers; write the order. ``variants``: which of :data:`VARIANTS` to run;
    ``selection``: :class:`Workloads`' keyword arguments choosing chains and tiles; ``gpu_lock``:
    run on the GPU only in turn with the processes sharing it (:mod:`.gpu_turns`).

    See :mod:`.ncu_bytes`: a read-only reduction over a buffer twice the L2 size evicts the
    previous workload's data without leaving dirty lines, then a marker kernel opens the segment.
    """
    import torch

    # torch.empty launches no kernel (a fill would be an elementwise kernel, read as a marker);
    # the values are never used.
    marker = torch.empty(1, device="cuda")
    l2_bytes = torch.cuda.get_device_properties(0).L2_cache_size
    flush = torch.empty(max(2 * l2_bytes // 4, 1 << 20), device="cuda")
    order, selection = [], selection or {}
    for case in cases:
        records = case_records(tuning_root, case)
        workloads = selected_workloads(
            case, target, gpu, records, sub_chains, baselines=variants, **selection
        )
        if workloads is None:
            continue
        with gpu_turn(gpu_lock):
            order += profile_case(workloads, variants, marker, flush)
    marker.add_(1)
    torch.cuda.synchronize()
    (out / "profile_order.json").write_text(json.dumps(order, indent=1))


def profile_case(workloads: Workloads, variants: tuple[str, ...], marker, flush) -> list[dict]:
    """Each workload of one case once between a flush of L2 and a marker kernel; their order."""
    import torch
    import tvm

    device = tvm.cuda(0)
    builds = workloads.unfused()
    vms = {variant: tvm.relax.VirtualMachine(executable, device) for variant, executable in builds.items()}
    order = []
    for index, spec in enumerate(workloads.specs):
        arguments = [tvm.runtime.tensor(a, device) for a in random_arguments(spec)]
        output = tvm.runtime.empty(spec.output.as_tuple(), spec.dtype, device)
        for variant in [v for v in ("fcm", *vms) if v in variants]:
            flush.sum()  # evict: the workload starts with a cold L2
            marker.add_(1)  # a marker kernel: ncu rows between two markers belong to one workload
            torch.cuda.synchronize()
            if variant == "fcm":
                workloads.fused[f"fcm_{index}"](*arguments, output)
            else:
                vms[variant][f"chain_{index}"](*arguments)
            device.sync()
            order.append(
                {
                    "case": workloads.case.label,
                    "chain": index,
                    "key": spec.key,
                    "variant": variant,
                    "shape": describe(spec),
                    "spec": json.loads(json.dumps(spec, default=lambda o: getattr(o, "__dict__", str(o)))),
                    "tiles": tiles_record(workloads.tiles[index]) if variant == "fcm" else None,
                }
            )
    return order


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="mobilenet_v2,mobilenet_v3_large,efficientnet_b0")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument("--precision", default="fp32,fp16")
    parser.add_argument("--gpu", default="h100")
    parser.add_argument(
        "--tuning-records",
        type=Path,
        help="folder of work dirs named <model>_b<B>_<precision>_stock (as fcm-tvm bench and tune_zoo.sh)",
    )
    parser.add_argument("--out", type=Path, default=Path("layer_results"))
    parser.add_argument("--number", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--profile-run", action="store_true", help="run each workload once, for ncu")
    parser.add_argument(
        "--variants",
        "--profile-variants",  # its name before timed runs took it too
        default=",".join(VARIANTS),
        help="the workloads timed or profiled per chain (stock_tuned only given --tuning-records; "
        "a timed run always times the FCM)",
    )
    parser.add_argument(
        "--sub-chains",
        action="store_true",
        help="also the DW->PW and PW->DW chains inside each PW->DW->PW (what the pass falls back to)",
    )
    parser.add_argument(
        "--unmeasured", action="store_true", help="only chains whose stock time the GPU's table lacks"
    )
    parser.add_argument(
        "--graph-clock",
        type=int,
        default=0,
        metavar="K",
        help="also time each chain repeated K times inside one CUDA graph (*_graph_us)",
    )
    parser.add_argument("--kinds", help="only chains of these kinds, e.g. dw_pw or pw_dw,pw_dw_pw")
    parser.add_argument(
        "--beyond-l2", action="store_true", help="only chains whose largest intermediate exceeds the GPU's L2"
    )
    parser.add_argument(
        "--cuda-graph", action="store_true", help="plan as a CUDA-graph build does (tuned too, given records)"
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="cases in parallel processes, their GPU work one at a time"
    )
    parser.add_argument("--gpu-lock", type=Path, help=argparse.SUPPRESS)  # set by --jobs for each case
    args = parser.parse_args(argv)

    from ..gpus import get_gpu
    from ..target import cuda_target

    gpu = get_gpu(args.gpu)
    target = cuda_target(gpu)
    cases = [
        LayerCase(m, int(b), p)
        for m in args.models.split(",")
        for b in args.batch.split(",")
        for p in args.precision.split(",")
    ]
    variants = tuple(args.variants.split(","))
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}; known: {', '.join(VARIANTS)}")
    kinds = args.kinds.split(",") if args.kinds else None
    if unknown := set(kinds or ()) - set(KIND_OF_STAGES.values()):
        known = ", ".join(KIND_OF_STAGES.values())
        parser.error(f"--kinds: unknown {', '.join(sorted(unknown))}; known: {known}")
    args.out.mkdir(parents=True, exist_ok=True)
    selection = {"kinds": kinds, "beyond_l2": args.beyond_l2, "cuda_graph_plan": args.cuda_graph}
    if args.profile_run:
        if args.jobs > 1:
            parser.error("--profile-run runs in one process (ncu attributes kernels by their order)")
        records, lock = args.tuning_records, args.gpu_lock
        profile_run(cases, target, gpu, args.out, records, args.sub_chains, variants, selection, lock)
        return 0
    if args.jobs > 1 and len(cases) > 1:
        return run_in_processes(argv if argv is not None else sys.argv[1:], cases, args.out, args.jobs)
    import tvm

    rows, bandwidth = [], None
    for case in cases:
        print(f"[layers] {case.label}", file=sys.stderr, flush=True)
        records = case_records(args.tuning_records, case)
        workloads = selected_workloads(
            case,
            target,
            gpu,
            records,
            args.sub_chains,
            args.unmeasured,
            args.graph_clock,
            variants,
            **selection,
        )
        if workloads is None:
            continue
        with gpu_turn(args.gpu_lock):
            bandwidth = bandwidth or copy_bandwidth_gbs()
            rows += measure_case(workloads, tvm.cuda(0), args.number, args.repeat, bandwidth)
    context = {
        "gpu": tvm.cuda(0).device_name,
        "copy_bandwidth_gbs": bandwidth,
        "number": args.number,
        "repeat": args.repeat,
        "timing": "median of repeats, hot L2 (same buffers every run)",
    }
    print(save_report(args.out, "layers", rows, COLUMNS, context))
    return 0 if all(row.get("status") != "WRONG RESULT" for row in rows) else 1


def run_in_processes(argv: list[str], cases: list[LayerCase], out: Path, jobs: int) -> int:
    """Every case in a process of its own (:func:`.gpu_turns.run_cases`), then their rows in one
    report in ``out``, the first case's context with each case's copy bandwidth."""
    arguments = {
        case.label: ["--models", case.model, "--batch", str(case.batch), "--precision", case.precision]
        for case in cases
    }
    codes = run_cases("fcm_tvm.benchmarks.layers", argv, arguments, out, jobs)
    rows, contexts = [], {}
    for label in arguments:
        report = out / label / "layers.json"
        if not report.exists():
            log = out / label / "run.log"
            print(f"[layers] {label}: no report (exit {codes[label]}; see {log})", file=sys.stderr)
            continue
        saved = json.loads(report.read_text())
        rows += saved["rows"]
        contexts[label] = saved["context"]
    if not contexts:
        return 1
    context = {**next(iter(contexts.values())), "jobs": jobs}
    context["copy_bandwidth_gbs"] = {label: c["copy_bandwidth_gbs"] for label, c in contexts.items()}
    print(save_report(out, "layers", rows, COLUMNS, context))
    return max(codes.values())


if __name__ == "__main__":
    sys.exit(main())
