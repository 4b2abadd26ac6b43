"""Compile a zoo model and run it ``RUNS`` times (default 20), for a profiler's kernel times.

    RUNS=2 ncu --metrics gpu__time_duration.sum --cache-control none --clock-control none \
        --csv --page raw --log-file k.csv python tests/gpu/profile_model.py MODEL [FUSE ...]
    python tests/gpu/kernel_summary.py 2 k.csv       # FUSE: none (stock), auto (fcm)

``TUNED=1`` builds with the tuning records shipped for the model on the local GPU (an H200
borrows the H100's where it has none) at ``BATCH`` (default 1) and ``PRECISION`` (default fp32):
the stock-tuned and fcm-tuned variants of ``fcm-tvm bench``.
"""

import os
import sys

import fcm_tvm
from fcm_tvm.models import build_model
from fcm_tvm.records import shipped_records
from fcm_tvm.target import resolve_target

RUNS = int(os.environ.get("RUNS", "20"))
TUNED = os.environ.get("TUNED") == "1"
BATCH = int(os.environ.get("BATCH", "1"))
PRECISION = os.environ.get("PRECISION", "fp32")

name = sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2"
model = build_model(name, batch=BATCH)
gpu = resolve_target("cuda").gpu
for fuse in sys.argv[2:] or ("none", "auto"):
    records = shipped_records(gpu.key, name, BATCH, PRECISION, fuse) if TUNED else None
    compiled = fcm_tvm.compile(model, "cuda", fuse=fuse, tuning_records=records, precision=PRECISION)
    print(name, fuse, "tuned" if records else "", [chain.function for chain in compiled.fused], flush=True)
    runner = compiled.runner()
    inputs = runner.random_inputs()
    for _ in range(RUNS):
        runner.run(*inputs)
