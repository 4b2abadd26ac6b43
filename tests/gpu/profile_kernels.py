"""Profile the measured table's FCM kernels of a few chains with ncu, one launch each.

Here (TVM compiler)::

    .venv/bin/python tests/gpu/profile_kernels.py export DIR "32x24x56x56 pw144" "32x192x7x7 pw1152:silu"

exports, per key prefix, the first chain of the four headline models whose key starts with it,
built with the tiles of the H100's table (a library each, with a ``check_fcm_kernels`` manifest).

On the GPU host (runtime only)::

    source .gpu/rt/env.sh
    ncu --metrics ... -k regex:fcm_k --csv --page raw python tests/gpu/profile_kernels.py run DIR

runs each kernel twice on random inputs (ncu sees two launches of each) and prints its relative
error against the float64 torch reference, so that a profile of a wrong kernel is not taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

MODELS = ("mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large", "mnasnet1_0")


def export(folder: Path, batch: int, prefixes: list[str]) -> None:
    import tvm
    from check_fcm_kernels import TARGET, spec_to_dict

    from fcm_tvm.benchmarks.chains import LayerCase, model_chains
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.planner.measured import measured
    from fcm_tvm.schedules import fcm_primfunc

    specs = {}
    for model in MODELS:
        for spec, _ in model_chains(LayerCase(model, batch, "fp32"), sub_chains=True):
            specs.setdefault(spec.key, spec)
    folder.mkdir(parents=True, exist_ok=True)
    target, gpu, manifest = tvm.target.Target(TARGET), get_gpu("h100"), []
    for index, prefix in enumerate(prefixes):
        spec = specs[next(key for key in specs if key.startswith(prefix))]
        tiles, symbol = measured(spec, gpu).tiles, f"fcm_k{index}"
        func = fcm_primfunc(spec, tiles, target).with_attr("global_symbol", symbol)
        tvm.compile(tvm.IRModule({symbol: func}), target=target).export_library(str(folder / f"k{index}.so"))
        name = f"k{index} {spec.key} @{tiles.label}"
        manifest.append({"name": name, "file": f"k{index}.so", "symbol": symbol, "tiles": asdict(tiles),
                         "sweep": True, **spec_to_dict(spec)})  # fmt: skip
        print(name, flush=True)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def run(folder: Path) -> None:
    import check_fcm_kernels as check
    import numpy as np
    import torch
    import tvm

    check._register_cuda_compiler()
    generator = torch.Generator(device="cuda")
    generator.seed()
    device = tvm.cuda(0)
    for entry in json.loads((folder / "manifest.json").read_text()):
        kernel = check.load_library(str(folder / entry["file"]))[entry["symbol"]]
        inputs = check.random_inputs(entry, generator)
        args = [tvm.runtime.tensor(t.cpu().numpy(), device) for t in inputs]
        out = tvm.runtime.tensor(np.full(entry["output"], np.nan, dtype=entry["dtype"]), device)
        kernel(*args, out)
        kernel(*args, out)
        device.sync()
        expected = check.torch_fcm(entry, inputs, torch.float64).cpu()
        actual = torch.from_numpy(out.numpy().astype(np.float64))
        print(entry["name"], "rel. error", float((actual - expected).norm() / expected.norm()), flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporter = sub.add_parser("export")
    exporter.add_argument("folder", type=Path)
    exporter.add_argument("prefixes", nargs="+", help="chain keys (FcmSpec.key) or their beginnings")
    exporter.add_argument("--batch", type=int, default=32)
    sub.add_parser("run").add_argument("folder", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.command == "export":
        export(args.folder, args.batch, args.prefixes)
    else:
        run(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
