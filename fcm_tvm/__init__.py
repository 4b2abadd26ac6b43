"""fcm-tvm: fused depthwise+pointwise convolutions for Apache TVM on NVIDIA GPUs.

Importing the package is cheap (it is autoloaded by ``import tvm`` as a plugin): the compiler,
runtime and planner are imported on first use.
"""

from pathlib import Path as _Path

# In a source checkout the sibling folders relay_passes/, schedules/ and models/ are the
# sub-packages fcm_tvm.relay_passes, ... (a wheel maps them there through package-dir).
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "relay_passes").is_dir() and not (_Path(__file__).parent / "relay_passes").is_dir():
    __path__.append(str(_checkout))  # noqa: F821 (module __path__)

__version__ = "0.1.0"

from .errors import DeviceError, FcmError, ModelError, TargetError  # noqa: E402


def compile(model, target="cuda", **options):  # noqa: A001 (mirrors tvm.compile)
    """Compile an ONNX model; see :func:`fcm_tvm.compiler.compile`."""
    from .compiler import compile as compile_model

    return compile_model(model, target, **options)


def load(path, device=None, **options):
    """Load an exported model on a device (default: the one it was compiled for); see
    :func:`fcm_tvm.runtime.load` (runtime only is enough)."""
    from .runtime import load as load_model

    return load_model(path, device, **options)


def plan(model, gpu="h100", **options):
    """FusePlanner's decisions for a model; see :func:`fcm_tvm.planning.plan`."""
    from .planning import plan as plan_model

    return plan_model(model, gpu, **options)


__all__ = ["compile", "load", "plan", "FcmError", "ModelError", "TargetError", "DeviceError"]
