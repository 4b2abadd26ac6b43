"""The broad tile sweep (``tests/gpu/check_fcm_kernels.py splits --broad N``) asks the GPU only
about tiles that fit and fill it, and always about the tiles the planner already uses."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fcm_tvm.gpus import get_gpu
from fcm_tvm.planner.cost_model import fcm_blocks
from fcm_tvm.planner.measured import measured
from fcm_tvm.planner.tiles import fit_problems
from fcm_tvm.schedules import default_tiles
from fcm_tvm.schedules.spec import Depthwise, FcmSpec, Pointwise

H100 = get_gpu("h100")
BLOCK = FcmSpec(1, 96, 14, 14, (Pointwise(576, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(96)), True)


def kernel_checker():
    path = Path(__file__).parent / "gpu" / "check_fcm_kernels.py"
    spec = importlib.util.spec_from_file_location("check_fcm_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_broad_choices_fit_fill_the_gpu_and_keep_the_default_and_the_measured_best():
    checker = kernel_checker()
    choices = checker.broad_choices(BLOCK, H100, limit=6)
    anchors = [default_tiles(BLOCK, H100.smem_per_block), measured(BLOCK, H100).tiles]
    assert choices[:2] == anchors
    searched = choices[2:]
    assert len(searched) == 6 and len(set(choices)) == len(choices)
    low, high = (waves * H100.sm_count for waves in checker.BROAD_WAVES)
    for tiles in searched:
        assert not fit_problems(BLOCK, tiles, H100)
        assert tiles.threads in checker.BROAD_THREADS
        assert low <= fcm_blocks(BLOCK, tiles) <= high
