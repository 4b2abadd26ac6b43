"""Run every squeeze-excitation kernel of the zoo's models on the GPU against float64, and time it.

For each model, batch and precision the excite steps FuseSqueezeExcite would rewrite are built
for the local GPU with their default tiles, with the hidden vector moved (into every thread
block, or into a kernel of its own), and both with unrolled row loads; each runs on fresh random
inputs, and every output element is compared with
``fcm_tvm.reference.excite_reference``. Times are medians of the runtime's timer (50 calls, 10
repeats; one call is two or three launches).
Needs full TVM on the GPU host (.gpu/full-b/env.sh)::

    python tests/gpu/check_squeeze_excite.py --models efficientnet_b0,mobilenet_v3_large \\
        --batch 1,32 --precision fp16,fp32 --json OUT.json
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import tvm

from fcm_tvm.frontend import graph_inputs, import_onnx
from fcm_tvm.precision import as_precision
from fcm_tvm.reference import excite_gate_reference, excite_reference
from fcm_tvm.relay_passes.fuse_squeeze_excite import excite_spec, find_excites
from fcm_tvm.relay_passes.matcher import FunctionIndex
from fcm_tvm.schedules.squeeze_excite import SeTiles, SqueezeExcite, default_tiles, excite_primfunc
from fcm_tvm.target import resolve_target
from models.registry import build_model
from tests.gpu.checked_rows import CheckedRows

TOLERANCE = {"float16": 1e-2, "float32": 1e-5}  # max |error| over max |reference|


def model_excites(model: str, batch: int, precision: str) -> list[SqueezeExcite]:
    proto = as_precision(build_model(model, batch=batch), precision)
    module = import_onnx(proto, graph_inputs(proto, None))
    index = FunctionIndex(module, module["main"])
    return list(dict.fromkeys(excite_spec(match) for match in find_excites(index)))


def random_inputs(se: SqueezeExcite, rng: np.random.Generator) -> list[np.ndarray]:
    n, c, h, w = se.param_shapes()[0]
    x = rng.uniform(-2, 2, (n, c, h, w)) + rng.uniform(-1, 1, (n, c, 1, 1))  # means away from 0
    w1 = rng.normal(0, 1 / np.sqrt(c), (se.squeeze, c, 1, 1))
    w2 = rng.normal(0, 1 / np.sqrt(se.squeeze), (c, se.squeeze, 1, 1))
    b1, b2 = rng.normal(0, 0.5, se.squeeze), rng.normal(0, 0.5, c)
    return [a.astype(se.dtype) for a in (x, w1, b1, w2, b2)]


def check(se: SqueezeExcite, tiles: SeTiles, target: tvm.target.Target, device, rng) -> dict:
    lib = tvm.compile(tvm.IRModule({"main": excite_primfunc(se, tiles, target)}), target=target)
    inputs = random_inputs(se, rng)
    args = [tvm.runtime.tensor(a, device) for a in inputs]
    out = tvm.runtime.tensor(np.full(se.output_shape, np.nan, se.output_dtype), device)
    lib["main"](*args, out)
    expected = (excite_reference if se.scales else excite_gate_reference)(*inputs, se.activation, se.gate)
    actual = out.numpy().astype(np.float64)
    error = float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))
    timer = lib.mod.time_evaluator("main", device, number=50, repeat=10)
    median_us = float(np.median(timer(*args, out).results) * 1e6)
    ok = bool(np.isfinite(actual).all()) and error <= TOLERANCE[se.dtype]
    return {"key": se.key, "tiles": tiles.label, "rel_error": error, "ok": ok, "median_us": median_us}


def variants(se: SqueezeExcite) -> list[SeTiles]:
    """The default tiles, the same with the hidden vector in the other place, and both with the
    loads along a matrix row unrolled."""
    tiles = default_tiles(se)
    moved = replace(tiles, hidden_kernel=1 - tiles.hidden_kernel)
    return [tiles, moved, replace(tiles, unroll=1), replace(moved, unroll=1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_b0,mobilenet_v3_large")
    parser.add_argument("--batch", default="1")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--gate-only", action="store_true", help="the calls that return the gate alone")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args(argv)
    target = resolve_target("cuda").tvm_target
    device, rng = tvm.cuda(0), np.random.default_rng()
    rows = CheckedRows("squeeze-excitation", args.json, device.device_name)
    for model in args.models.split(","):
        for batch in map(int, args.batch.split(",")):
            for precision in args.precision.split(","):
                for se in model_excites(model, batch, precision):
                    se = replace(se, scales=not args.gate_only)
                    for tiles in variants(se):
                        rows.add({"model": model, **check(se, tiles, target, device, rng)})
    return rows.finish()


if __name__ == "__main__":
    sys.exit(main())
