"""Run the gated pointwise kernel on the GPU for every project PW after a squeeze-excitation of the
zoo's models, against float64, and time it.

For each model and batch, the 1x1 convolutions that read a squeeze-excitation's product (found in
the ONNX graph with its inferred shapes) are built as ``GatedPointwise`` kernels (fp16, default
tiles, with the residual where an ``Add`` follows the conv's BatchNorm) and run on fresh random
inputs, the output poisoned with NaN first; every element is compared with
``fcm_tvm.reference.gated_pw_reference``. ``--tiles splits`` times each split of the input
channels (the default tiles' rule picks one at batch 1), ``--tiles sweep`` larger tiles too.
Times are medians of the runtime's timer (50 calls, 10 repeats). Needs full TVM on the GPU
host (.gpu/full-b/env.sh)::

    python tests/gpu/check_gated_pw.py --models efficientnet_b0,mobilenet_v3_large --batch 1,32 \\
        --json OUT.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import onnx
import tvm

from fcm_tvm.gpus import DEFAULT_GPU, all_gpus
from fcm_tvm.reference import gated_pw_reference
from fcm_tvm.schedules.cuda import max_shared_memory
from fcm_tvm.schedules.gated_pw_tc import (
    GatedPointwise,
    GatedPwTiles,
    default_tiles,
    gated_pw_primfunc,
    slice_splits,
    tile_blocks,
    tile_problems,
)
from fcm_tvm.target import resolve_target
from models.registry import build_model
from tests.gpu.checked_rows import CheckedRows

TOLERANCE = 1e-2  # max |error| over max |reference|, float16


def project_pws(model: onnx.ModelProto) -> list[GatedPointwise]:
    """The distinct 1x1 convolutions on an image whose input is a squeeze-excitation's product (a
    ``Mul`` by an ``N x C x 1 x 1`` scale), with the residual where an ``Add`` joins the conv's
    BatchNorm output to a tensor from before it (the block's input)."""
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {
        info.name: tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
        for info in (*model.graph.value_info, *model.graph.input, *model.graph.output)
    }
    weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
    order = {out: i for i, node in enumerate(model.graph.node) for out in node.output}
    producers = {out: node for node in model.graph.node for out in node.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def is_excite_product(node) -> bool:
        scales = [shapes.get(name, ()) for name in node.input]
        return node.op_type == "Mul" and any(len(s) == 4 and s[2:] == (1, 1) for s in scales)

    def has_residual(bn) -> bool:
        here = order[bn.output[0]]
        adds = [r for r in readers.get(bn.output[0], []) if r.op_type == "Add"]
        return any(
            order.get(other, -1) < here for add in adds for other in add.input if other != bn.output[0]
        )

    found = []
    for node in model.graph.node:
        source = producers.get(node.input[0]) if node.input else None
        if node.op_type != "Conv" or source is None or not is_excite_product(source):
            continue
        n, c, h, w = shapes[node.input[0]]
        if weights.get(node.input[1], (0, 0, 0, 0))[2:] != (1, 1) or (h, w) == (1, 1):
            continue
        after = readers.get(node.output[0], [])
        bn = after[0] if len(after) == 1 and after[0].op_type == "BatchNormalization" else None
        found.append(
            GatedPointwise(n, c, weights[node.input[1]][0], h, w, "none", bn is not None and has_residual(bn))
        )
    return list(dict.fromkeys(found))


def random_inputs(spec: GatedPointwise, rng: np.random.Generator) -> list[np.ndarray]:
    """x, gate, W, b (and the residual): weights scaled by fan-in so that float16 stays in range."""
    x = rng.uniform(-2, 2, (spec.batch, spec.in_channels, spec.height, spec.width)).astype("float16")
    gate = rng.uniform(0, 1, (spec.batch, spec.in_channels)).astype("float32")
    w = rng.normal(0, 1 / np.sqrt(spec.in_channels), (spec.out_channels, spec.in_channels, 1, 1))
    b = rng.normal(0, 0.5, spec.out_channels)
    inputs = [x, gate, w.astype("float16"), b.astype("float16")]
    if spec.residual:
        inputs.append(rng.uniform(-1, 1, spec.output_shape).astype("float16"))
    return inputs


# Larger tiles for the batch-32 sweep: more tensor-core work per staged chunk (channel tile,
# pixel tile, threads)
LARGER_TILES = ((64, 64, 256), (32, 128, 256), (64, 128, 256))
# Splits the sweep times, in blocks per SM of the GPU default_tiles plans for: a fit of the
# batch-1 times (docs/kernels.md) says about six blocks an SM hide each other's chunk latency
SWEEP_BLOCKS_PER_SM = 8
# Input channels a step in the sweep besides the default (32 or 16), where they divide a slice:
# fewer, longer steps, each with more loads in flight
LONGER_CHUNKS = (64, 96, 128, 160)


def tile_choices(spec: GatedPointwise, choice: str, max_smem: int) -> list[GatedPwTiles]:
    """The default tiles (``default``); those with each split of the input channels that leaves a
    slice at least two chunks (``splits``, to time the rule that picks one); or (``sweep``) the
    default with each larger split up to :data:`SWEEP_BLOCKS_PER_SM` blocks an SM, each with
    the default chunk and :data:`LONGER_CHUNKS`, and :data:`LARGER_TILES` with the default's split
    and chunks of the default or 64, where they fit."""
    tiles = default_tiles(spec)
    splits = sorted({tiles.split, *slice_splits(spec)})
    if choice == "default":
        return [tiles]
    if choice == "splits":
        return [replace(tiles, split=s) for s in splits]
    blocks = tile_blocks(spec, tiles)
    most = SWEEP_BLOCKS_PER_SM * all_gpus()[DEFAULT_GPU].sm_count
    found = [
        replace(tiles, split=s, chunk=step)
        for s in splits
        if s == tiles.split or (s > tiles.split and blocks * s <= most)
        for step in (0, *LONGER_CHUNKS)
    ]
    found += [GatedPwTiles(c, p, t, tiles.split, step) for c, p, t in LARGER_TILES for step in (0, 64)]
    return [t for t in found if not tile_problems(spec, t, max_smem)]


def check(spec: GatedPointwise, tiles: GatedPwTiles, target: tvm.target.Target, device, rng) -> dict:
    lib = tvm.compile(tvm.IRModule({"main": gated_pw_primfunc(spec, tiles, target)}), target=target)
    inputs = random_inputs(spec, rng)
    args = [tvm.runtime.tensor(a, device) for a in inputs]
    out = tvm.runtime.tensor(np.full(spec.output_shape, np.nan, "float16"), device)
    lib["main"](*args, out)
    residual = inputs[4] if spec.residual else None
    expected = gated_pw_reference(*inputs[:4], residual, spec.activation)
    actual = out.numpy().astype(np.float64)
    error = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    timer = lib.mod.time_evaluator("main", device, number=50, repeat=10)
    median_us = float(np.median(timer(*args, out).results) * 1e6)
    ok = bool(np.isfinite(actual).all()) and error <= TOLERANCE
    default = tiles == default_tiles(spec)
    return {
        "key": spec.key,
        "tiles": tiles.label,
        "default": default,
        "rel_error": error,
        "ok": ok,
        "median_us": median_us,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_b0,mobilenet_v3_large")
    parser.add_argument("--batch", default="1,32")
    parser.add_argument(
        "--tiles", choices=("default", "splits", "sweep"), default="default", help="see tile_choices"
    )
    parser.add_argument("--json", help="write the rows here (after every row)")
    parser.add_argument(
        "--deep-first", action="store_true", help="the smallest images first (a run cut short keeps those)"
    )
    args = parser.parse_args(argv)
    target = resolve_target("cuda").tvm_target
    device, rng = tvm.cuda(0), np.random.default_rng()
    rows = CheckedRows("gated pointwise", args.json, device.device_name)
    for model in args.models.split(","):
        for batch in map(int, args.batch.split(",")):
            specs = project_pws(build_model(model, batch=batch))
            for spec in sorted(specs, key=lambda s: s.pixels) if args.deep_first else specs:
                for tiles in tile_choices(spec, args.tiles, max_shared_memory(target)):
                    rows.add({"model": model, **check(spec, tiles, target, device, rng)})
    return rows.finish()


if __name__ == "__main__":
    sys.exit(main())
