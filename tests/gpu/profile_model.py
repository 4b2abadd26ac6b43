"""Compile a zoo model stock and with fcm, run each 20 times: for ``nsys profile --stats=true``."""

import sys

import fcm_tvm
from fcm_tvm.models import build_model

model = build_model(sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2")
for fuse in ("none", "auto"):
    compiled = fcm_tvm.compile(model, "cuda", fuse=fuse)
    print(fuse, [chain.function for chain in compiled.fused], flush=True)
    runner = compiled.runner()
    inputs = runner.random_inputs()
    for _ in range(20):
        runner.run(*inputs)
