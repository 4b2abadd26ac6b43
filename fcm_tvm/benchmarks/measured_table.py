"""Write the planner's table of measured chains for one GPU from benchmark results.

    python -m fcm_tvm.benchmarks.measured_table --gpu h100 \\
        --sweep docs/results/splits_h100.json \\
        --layers docs/results/layers.json docs/results/layers_b32.json \\
        --gpu-times docs/results/gpu_times_*.json \\
        -o fcm_tvm/data/measured/h100.json

Results from before a kernel change go under ``--old-sweep``/``--old-layers`` with
``--changed-kinds``: their stock times are kept, their FCM times of the changed kinds dropped.

Sources: ``tests/gpu/check_fcm_kernels.py run --json`` (FCM kernels of many tile choices, each
row with its spec) and ``python -m fcm_tvm.benchmarks.layers`` (the planner's tiles of every
chain of a model, with the stock chain timed beside them). Per chain: the fastest correct FCM
row and its tiles, and the stock chain's time (conv + BatchNorm + activation, as fcm-tvm leaves
a declined chain) where a layer benchmark measured it: the latest such time, ``--old-*`` first,
then the others in the order given. ``--gpu-times`` adds the GPU times of
``layers --profile-run`` under ncu (:mod:`.ncu_bytes`, run with ``--clock-control none``) as
``gpu_us``: the fastest FCM profiled, with its tiles where they are not the row's. Layer rows
timed with ``--graph-clock`` add ``graph_us`` the same way.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import NamedTuple

from ..gpus import GpuSpec, all_gpus, find_gpu
from ..schedules.spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .chains import LayerCase, model_chains

# how FcmTiles.label spells tiles
TILES_TEXT = re.compile(
    r"c(\d+) (\d+)x(\d+) t(\d+) s(\d+)"
    r"(?: p(\d+))?(?: u(\d+))?(?: o(\d+))?(?: v(\d+))?(?: pv(\d+))?(?: d(\d+))?(?: x(\d+))?(?: r(\d+))?"
    r"(?: lr(\d+))?(?: st(\d+))?(?: im(\d+))?( tc)?( rw)?"
)


def spec_from_row(row: dict) -> FcmSpec:
    """The spec of a kernel-check row (``check_fcm_kernels.spec_to_dict``)."""
    stages = tuple(
        Depthwise(s["kernel"], s["stride"], tuple(s["pads"]), s["activation"])
        if s["type"] == "dw"
        else Pointwise(s["out_channels"], s["activation"])
        for s in row["stages"]
    )
    n, c, h, w = row["input"]
    return FcmSpec(n, c, h, w, stages, row["residual"], row["dtype"])


def tiles_from_text(text: str) -> FcmTiles | None:
    found = TILES_TEXT.fullmatch(text)
    if not found:
        return None
    *knobs, lane_rows, stream, image, tensor_cores, register_pw = found.groups()
    return FcmTiles(
        *(int(knob or 1) for knob in knobs),
        tensor_cores=int(tensor_cores is not None),
        register_pw=int(register_pw is not None),
        stream=int(stream or 0),
        lane_rows=int(lane_rows or 1),
        image=int(image or 0),
    )


class Entry(NamedTuple):
    """One measured FCM of a chain, with the stock chain's times (untuned and MetaSchedule-tuned)
    where the same row timed them."""

    key: str  # FcmSpec.key
    kind: str  # FcmSpec.kind
    tiles: FcmTiles
    fcm_us: float
    stock_us: float | None
    stock_tuned_us: float | None = None


def sweep_entries(rows: list[dict]) -> list[Entry]:
    entries = []
    for row in filter(lambda r: r.get("ok"), rows):
        spec = spec_from_row(row)
        entries.append(Entry(spec.key, spec.kind, FcmTiles(**row["tiles"]), row["fcm_us"], None))
    return entries


def layer_entries(rows: list[dict]) -> list[Entry]:
    """Layer-benchmark rows, keyed by their ``key`` or (older rows) by their chain rebuilt from
    the model as the benchmark built it."""
    specs: dict[tuple, list[FcmSpec]] = {}
    entries = []
    for row in rows:
        tiles = tiles_from_text(row.get("tiles", ""))
        if tiles is None or row.get("fcm_us") is None:
            continue
        key = row.get("key")
        if key is None:
            case = (row["model"], row["batch"], row["precision"])
            if case not in specs:
                specs[case] = [spec for spec, _ in model_chains(LayerCase(*case))]
            key = specs[case][row["chain"]].key
        entries.append(
            Entry(key, row["kind"], tiles, row["fcm_us"], row.get("stock_us"), row.get("stock_tuned_us"))
        )
    return entries


def best_per_chain(entries: list[Entry]) -> list[dict]:
    """The fastest FCM of each chain; the stock times from the last of ``entries`` that measured
    them (the tuned time only where one was measured), so that later runs replace earlier ones and
    a block and its sub-chains, timed in one run, are priced from that run (the fallback's
    remaining PW is the difference of their stock times)."""
    table: dict[str, dict] = {}
    for entry in entries:
        row = table.setdefault(entry.key, {"key": entry.key, "fcm_us": float("inf"), "stock_us": None})
        if entry.fcm_us < row["fcm_us"]:
            row.update(fcm_us=entry.fcm_us, tiles=vars(entry.tiles).copy())
        if entry.stock_us is not None:
            row["stock_us"] = entry.stock_us
        if entry.stock_tuned_us is not None:
            row["stock_tuned_us"] = entry.stock_tuned_us
    return sorted(table.values(), key=lambda row: row["key"])


def gpu_times(workloads: list[dict]) -> dict[str, dict]:
    """Per chain key, the GPU microseconds of each profiled variant: of the FCM the fastest kernel
    profiled (with its tiles), of the stock chains the last profile."""
    times: dict[str, dict] = {}
    for workload in workloads:
        if "key" not in workload:
            raise ValueError("a profile without chain keys (profiles before the tenth session)")
        variant = workload["variant"]
        timed = {variant: workload["gpu_us"]} | ({"fcm_tiles": workload["tiles"]} if variant == "fcm" else {})
        keep_fastest_fcm(times.setdefault(workload["key"], {}), timed)
    return times


def graph_times(rows: list[dict]) -> dict[str, dict]:
    """Per chain key, the times of layer rows taken inside a CUDA graph (``layers --graph-clock``),
    in the form of :func:`gpu_times`."""
    times: dict[str, dict] = {}
    for row in rows:
        if row.get("fcm_graph_us") is None:
            continue
        timed = {variant: row.get(f"{variant}_graph_us") for variant in ("fcm", "stock", "stock_tuned")}
        timed = {name: us for name, us in timed.items() if us is not None}
        keep_fastest_fcm(
            times.setdefault(row["key"], {}), timed | {"fcm_tiles": vars(tiles_from_text(row["tiles"]))}
        )
    return times


def keep_fastest_fcm(chain: dict, timed: dict) -> None:
    """Merge one profile's ``timed`` variants into ``chain``'s times on one clock: the stock times
    replace earlier ones; the FCM's (and its tiles) only where faster than the one kept."""
    fcm = timed.get("fcm")
    if fcm is not None and chain.get("fcm", float("inf")) <= fcm:
        timed = {name: us for name, us in timed.items() if name not in ("fcm", "fcm_tiles")}
    chain.update(timed)


WallTimes = dict[tuple[str, FcmTiles], float]  # (chain key, tiles) -> the fastest wall-clock us


def with_times(
    chains: list[dict],
    times: dict[str, dict],
    field: str,
    walls: WallTimes | None = None,
    on_clock: AbstractSet[tuple[str, FcmTiles]] = frozenset(),
) -> list[dict]:
    """``chains`` with ``field`` (``gpu_us``, ``graph_us``) where timed. An FCM timed with other
    tiles than the row's (a later sweep found faster ones) keeps its tiles as ``fcm_tiles``: a
    build planned on that clock builds the kernel that was timed on it. Where the row's own tiles
    were never timed on that clock (``on_clock``: the (key, tiles) that were) and ``walls`` has
    the wall-clock time of the kernel that was, that time comes along as ``fcm_wall_us``, so that
    the planner can price the row's faster kernel on that clock (:func:`..planner.measured.from_row`)."""
    walls = walls or {}
    for row in chains:  # FcmTiles(**...): knobs added since a result was written take their defaults
        timed = dict(times.get(row["key"], {}))
        tiles = timed.pop("fcm_tiles", None)
        if "fcm" in timed and (kernel := FcmTiles(**tiles)) != (best := FcmTiles(**row["tiles"])):
            timed["fcm_tiles"] = tiles
            wall = walls.get((row["key"], kernel))
            if wall is not None and (row["key"], best) not in on_clock:
                timed["fcm_wall_us"] = wall
        if timed:
            row[field] = timed
    return chains


def wall_times(entries: list[Entry]) -> WallTimes:
    """The fastest wall-clock time of every (chain, tiles) measured (not those :func:`without_fcm_of`
    dropped)."""
    walls: WallTimes = {}
    for entry in filter(lambda entry: entry.fcm_us != float("inf"), entries):
        walls[entry.key, entry.tiles] = min(walls.get((entry.key, entry.tiles), float("inf")), entry.fcm_us)
    return walls


def profiled_kernels(workloads: list[dict]) -> set[tuple[str, FcmTiles]]:
    """(chain key, tiles) of every FCM profiled under ncu."""
    return {(w["key"], FcmTiles(**w["tiles"])) for w in workloads if w["variant"] == "fcm" and w.get("tiles")}


def graph_kernels(rows: list[dict]) -> set[tuple[str, FcmTiles]]:
    """(chain key, tiles) of every FCM timed inside a CUDA graph."""
    timed = filter(lambda row: row.get("fcm_graph_us") is not None, rows)
    return {(row["key"], tiles_from_text(row["tiles"])) for row in timed}


def without_fcm_of(kinds: set[str], entries: list[Entry]) -> list[Entry]:
    """``entries`` measured before the kernels of ``kinds`` changed: their stock times stand,
    their FCM times of those kinds do not."""
    kept = []
    for entry in entries:
        if entry.kind in kinds:
            if entry.stock_us is None and entry.stock_tuned_us is None:
                continue
            entry = entry._replace(fcm_us=float("inf"))
        kept.append(entry)
    return kept


def read_sources(sweeps: list[Path], layer_rows: list[dict], gpu: GpuSpec | None = None) -> list[Entry]:
    entries = []
    for path in sweeps:
        rows = json.loads(path.read_text())
        if gpu is not None and (others := other_cards(rows, gpu)):
            print(f"note: {path} was timed on {', '.join(others)}, not {gpu.key}", file=sys.stderr)
        entries += sweep_entries(rows)
    return entries + layer_entries(layer_rows)


def other_cards(rows: list[dict], gpu: GpuSpec) -> list[str]:
    """The cards other than ``gpu`` that timed sweep ``rows`` (those that name theirs, since the
    thirty-first session): their FCM times would sit beside ``gpu``'s stock times."""
    names = sorted({row["device"] for row in rows if row.get("device")})
    return [name for name in names if getattr(find_gpu(name), "key", None) != gpu.key]


def read_layer_rows(paths: list[Path]) -> list[dict]:
    """The rows of layer benchmark results, in the order given."""
    return [row for path in paths for row in json.loads(path.read_text())["rows"]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", required=True)
    parser.add_argument("--sweep", type=Path, nargs="*", default=[])
    parser.add_argument("--layers", type=Path, nargs="*", default=[])
    parser.add_argument("--gpu-times", type=Path, nargs="*", default=[], help="ncu_bytes output files")
    parser.add_argument("--old-sweep", type=Path, nargs="*", default=[])
    parser.add_argument("--old-layers", type=Path, nargs="*", default=[])
    parser.add_argument(
        "--changed-kinds",
        default="",
        help="FCM kinds whose kernels changed after the --old-* results (their FCM times are dropped)",
    )
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    gpu = find_gpu(args.gpu)
    if gpu is None:  # the planner looks the table up by the GPU's key: a typo would never be read
        parser.error(f"unknown GPU {args.gpu!r}; known: {', '.join(sorted(all_gpus()))}")
    inputs = [*args.sweep, *args.layers, *args.old_sweep, *args.old_layers, *args.gpu_times]
    if missing := [str(path) for path in inputs if not path.is_file()]:
        parser.error(f"no such file: {', '.join(missing)}")
    changed = set(filter(None, args.changed_kinds.split(",")))
    layer_rows = read_layer_rows(args.layers)
    entries = without_fcm_of(changed, read_sources(args.old_sweep, read_layer_rows(args.old_layers)))
    entries += read_sources(args.sweep, layer_rows, gpu)  # after the old: the latest stock time counts
    chains = [row for row in best_per_chain(entries) if row["fcm_us"] != float("inf")]
    workloads = [w for path in args.gpu_times for w in json.loads(path.read_text())]
    walls = wall_times(entries)
    chains = with_times(chains, gpu_times(workloads), "gpu_us", walls, profiled_kernels(workloads))
    chains = with_times(chains, graph_times(layer_rows), "graph_us", walls, graph_kernels(layer_rows))
    sources = [str(path) for path in inputs]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"gpu": gpu.key, "sources": sources, "chains": chains}, indent=1))
    print(f"{len(chains)} chains measured on {gpu.key} -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
