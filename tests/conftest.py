"""Shared fixtures: GPU tests are skipped without a GPU; hypothesis keeps CI bounded."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

try:
    from hypothesis import settings

    settings.register_profile(
        "ci", max_examples=int(os.environ.get("FCM_HYPOTHESIS_EXAMPLES", "15")), deadline=None
    )
    settings.register_profile("nightly", max_examples=300, deadline=None)
    settings.load_profile(os.environ.get("FCM_HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is a test extra
    pass


def _has_gpu() -> bool:
    from fcm_tvm.target import local_cuda_device

    return local_cuda_device() is not None


def pytest_collection_modifyitems(config, items):
    if _has_gpu():
        return
    skip_gpu = pytest.mark.skip(reason="needs an NVIDIA GPU (run on the GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def rng() -> np.random.Generator:
    """Fresh random inputs for every test run (the seed is printed on failure by the test id)."""
    return np.random.default_rng()


@pytest.fixture(scope="session")
def nvcc() -> str:
    path = shutil.which("nvcc") or (
        "/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None
    )
    if path is None:
        pytest.skip("nvcc is not installed")
    return path


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """‖actual − expected‖ / ‖expected‖ over every element, in float64; NaN never passes."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    assert np.isfinite(actual).all(), "non-finite values in the output"
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-30))


def gpu_script(name: str):
    """The GPU-host script ``tests/gpu/<name>.py`` as a module (its CPU-side parts are tested here)."""
    path = Path(__file__).parent / "gpu" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
