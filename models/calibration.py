"""BatchNorm running statistics that make a randomly initialised network behave like a trained one.

With random running statistics a BatchNorm does not normalise: its output scale is off by some
factor, and over fifty layers the factors multiply until the logits are 1e7 or 1e-7. A trained
network's running statistics are the statistics of the activations it sees. So the model is
first built as a calibration graph (BatchNorms in training mode, see ``GraphBuilder``), run once
by onnx's reference evaluator on a seeded random batch at the model's resolution, and each
BatchNorm's batch statistics become its running statistics: the per-channel mean, and the
variance averaged over channels (per-channel variances from a few deep 7x7 maps are noisy, and
noise compounds from layer to layer as surely as a wrong scale does).

Statistics depend on the resolution (zero padding weighs more on small maps), so the network
is calibrated at the resolution it is built for, as if trained there; its weights do not depend
on the resolution, and nothing depends on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from onnx.reference import ReferenceEvaluator

from .graph import BatchNormStats, GraphBuilder, Value

CALIBRATION_OPSET = 17
MIN_SAMPLES = 32  # pixels x images per channel in the smallest (stride-32) feature map
NETWORK_STRIDE = 32


def calibration_batch(resolution: int) -> int:
    """Images needed for MIN_SAMPLES samples per channel in the stride-32 feature map."""
    return max(1, math.ceil(MIN_SAMPLES / math.ceil(resolution / NETWORK_STRIDE) ** 2))


def calibrate_batchnorm(
    build: Callable[[GraphBuilder, Value], Value], seed: int, resolution: int
) -> list[BatchNormStats]:
    """Running mean and variance of every BatchNorm that ``build`` emits, in emission order."""
    shape = (calibration_batch(resolution), 3, resolution, resolution)
    builder = GraphBuilder(opset=CALIBRATION_OPSET, seed=seed, calibrate=True)
    logits = build(builder, builder.input(shape))
    if not builder.calibration_outputs:
        return []
    batch = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    with np.errstate(over="ignore"):  # the reference Sigmoid overflows harmlessly in exp
        outputs = ReferenceEvaluator(builder.finish(logits)).run(
            builder.calibration_outputs, {"input": batch}
        )
    return [(mean, np.full_like(var, var.mean())) for mean, var in zip(outputs[0::2], outputs[1::2])]
