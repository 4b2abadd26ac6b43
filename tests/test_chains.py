"""The per-layer benchmark's unfused chains compute the FCM's function, in both stock forms."""

from __future__ import annotations

import numpy as np
import pytest
import tvm

from fcm_tvm.benchmarks.chains import unfused_module
from fcm_tvm.schedules import Depthwise, FcmSpec, Pointwise

from .test_schedules import assert_matches_reference, random_inputs

SPECS = [
    FcmSpec(1, 8, 12, 12, (Depthwise(3, 1, None, "relu6"), Pointwise(16, "none"))),
    FcmSpec(2, 6, 9, 11, (Pointwise(12, "hardswish"), Depthwise(5, 2, None, "silu"))),
    FcmSpec(
        1, 8, 10, 10, (Pointwise(24, "relu6"), Depthwise(3, 1, None, "relu6"), Pointwise(8, "none")), True
    ),
    FcmSpec(1, 8, 12, 12, (Depthwise(3, 2, None, "relu"), Pointwise(16, "relu")), dtype="float16"),
]


@pytest.mark.parametrize("batchnorm", [True, False], ids=["batchnorm", "bias"])
def test_each_unfused_chain_matches_the_float64_definition(batchnorm: bool, rng: np.random.Generator):
    executable = tvm.compile(unfused_module(SPECS, batchnorm=batchnorm), "llvm")
    vm = tvm.relax.VirtualMachine(executable, tvm.cpu())
    for index, spec in enumerate(SPECS):
        inputs = random_inputs(spec, rng)
        output = vm[f"chain_{index}"](*[tvm.runtime.tensor(a) for a in inputs]).numpy()
        assert output.dtype == np.dtype(spec.dtype) and output.shape == spec.output.as_tuple()
        assert_matches_reference(spec, output, inputs)


def test_the_batchnorm_form_keeps_a_batch_norm_per_convolution():
    text = unfused_module(SPECS[:1]).script()
    assert text.count("R.nn.batch_norm(") == 2 and text.count("R.nn.conv2d(") == 2
    assert "R.nn.batch_norm(" not in unfused_module(SPECS[:1], batchnorm=False).script()
