"""Graphs written the way torchvision and timm exports write them import, compile and compute right.

Each style (``models/exporter_styles.py``) uses the exporters' plumbing: Constant nodes, the
Shape -> Gather -> Unsqueeze -> Concat -> Reshape flatten, Flatten + Gemm, hardswish as
``x * HardSigmoid(x)``, SiLU as ``x * Sigmoid(x)``, Clip with min/max inputs, squeeze-and-excitation
with GlobalAveragePool, folded or explicit BatchNorm, and weights in an external data file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

import fcm_tvm
from fcm_tvm.models.exporter_styles import STYLES, build_tiny, save_with_external_data
from tests.conftest import relative_error

STYLE_NAMES = sorted(STYLES)


def onnxruntime_output(model, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize("opset", [13, 15, 18])
@pytest.mark.parametrize("style", STYLE_NAMES)
def test_each_export_style_matches_onnxruntime_on_llvm(style: str, opset: int, rng) -> None:
    model = build_tiny(style, opset=opset)
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    (actual,) = fcm_tvm.compile(model, "llvm", fuse="all").run(x)
    assert relative_error(actual, onnxruntime_output(model, x)) < 1e-4


@pytest.mark.parametrize("style", STYLE_NAMES)
def test_each_export_style_builds_for_cuda_and_fuses_its_dw_pw_pair_or_the_se_between(style) -> None:
    compiled = fcm_tvm.compile(build_tiny(style), "h100", fuse="all")
    assert "__global__" in compiled.cuda_source()
    with_se_between = STYLES[style].se is not None
    assert [chain.kind for chain in compiled.fused] == (["se"] if with_se_between else ["dw_pw"])


def test_weights_in_an_external_data_file_are_read_from_beside_the_model(tmp_path: Path, rng) -> None:
    model = build_tiny("timm_efficientnet")
    path = save_with_external_data(build_tiny("timm_efficientnet"), tmp_path / "tiny.onnx")
    assert (tmp_path / "tiny.onnx.data").stat().st_size > 10_000
    assert path.stat().st_size < 10_000  # the graph alone
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    (actual,) = fcm_tvm.compile(path, "llvm").run(x)
    assert relative_error(actual, onnxruntime_output(model, x)) < 1e-4
