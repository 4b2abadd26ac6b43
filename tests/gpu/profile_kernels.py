"""Profile the measured table's FCM kernels of a few chains with ncu, one launch each.

Here (TVM compiler)::

    .venv/bin/python tests/gpu/profile_kernels.py export DIR "32x24x56x56 pw144" "32x192x7x7 pw1152:silu"

exports, per key prefix, the first chain of the four headline models whose key starts with it,
built with the tiles of a GPU's table (``--gpu``, the H100's unless named; a library each,
``k<i>``, with a ``check_fcm_kernels`` manifest), in ``--precision`` (fp32 unless named).

On the GPU host (runtime only)::

    source .gpu/rt/env.sh
    ncu --metrics ... -k regex:fcm_ --csv --page raw python tests/gpu/profile_kernels.py run DIR

runs each kernel twice on random inputs (ncu sees two launches of each) and prints its errors
against the float64 torch reference, so that a profile of a wrong kernel is not taken.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MODELS = ("mobilenet_v2", "efficientnet_b0", "mobilenet_v3_large", "mnasnet1_0")


def export(folder: Path, batch: int, precision: str, gpu_name: str, prefixes: list[str]) -> None:
    from check_fcm_kernels import _export_layer

    from fcm_tvm.benchmarks.chains import LayerCase, model_chains
    from fcm_tvm.gpus import get_gpu
    from fcm_tvm.planner.measured import measured

    specs = {}
    for model in MODELS:
        for spec, _ in model_chains(LayerCase(model, batch, precision), sub_chains=True):
            specs.setdefault(spec.key, spec)
    folder.mkdir(parents=True, exist_ok=True)
    gpu, manifest = get_gpu(gpu_name), []
    for index, prefix in enumerate(prefixes):
        spec = specs[next(key for key in specs if key.startswith(prefix))]
        manifest += _export_layer((f"k{index}", spec, [measured(spec, gpu).tiles], folder))
        print(manifest[-1]["name"], spec.key, flush=True)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))


def run(folder: Path) -> None:
    import check_fcm_kernels as check
    import torch
    import tvm

    check._register_cuda_compiler()
    generator = torch.Generator(device="cuda")
    generator.seed()
    for entry in json.loads((folder / "manifest.json").read_text()):
        launch = check.launch_checked(entry, folder, generator)
        launch.module[entry["symbol"]](*launch.args, launch.out)
        tvm.cuda(0).sync()
        print(entry["name"], f"rel. error {launch.rel:.1e}, worst element {launch.worst:.1e}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exporter = sub.add_parser("export")
    exporter.add_argument("folder", type=Path)
    exporter.add_argument("prefixes", nargs="+", help="chain keys (FcmSpec.key) or their beginnings")
    exporter.add_argument("--batch", type=int, default=32)
    exporter.add_argument("--precision", choices=("fp32", "fp16"), default="fp32")
    exporter.add_argument("--gpu", default="h100", help="whose measured table gives the tiles")
    sub.add_parser("run").add_argument("folder", type=Path)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.command == "export":
        export(args.folder, args.batch, args.precision, args.gpu, args.prefixes)
    else:
        run(args.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
