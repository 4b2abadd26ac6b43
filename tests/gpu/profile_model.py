"""Compile a zoo model and run it ``RUNS`` times (default 20), for a profiler's kernel times.

    RUNS=2 ncu --metrics gpu__time_duration.sum --cache-control none --clock-control none \
        --csv --page raw --log-file k.csv python tests/gpu/profile_model.py MODEL [FUSE ...]
    python tests/gpu/kernel_summary.py 2 k.csv       # FUSE: none (stock), auto (fcm)
"""

import os
import sys

import fcm_tvm
from fcm_tvm.models import build_model

RUNS = int(os.environ.get("RUNS", "20"))

name = sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2"
model = build_model(name)
for fuse in sys.argv[2:] or ("none", "auto"):
    compiled = fcm_tvm.compile(model, "cuda", fuse=fuse)
    print(name, fuse, [chain.function for chain in compiled.fused], flush=True)
    runner = compiled.runner()
    inputs = runner.random_inputs()
    for _ in range(RUNS):
        runner.run(*inputs)
