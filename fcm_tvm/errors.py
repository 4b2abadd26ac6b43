"""The one exception type users see: a message that names the problem, never a TVM traceback."""


class FcmError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ModelError(FcmError):
    """The model cannot be read or compiled (not ONNX, unsupported op, dynamic shape, ...)."""


class TargetError(FcmError):
    """The target is unknown or does not fit the machine."""


def last_line(error: BaseException | str) -> str:
    """The last non-blank line of an error's message: where TVM puts the reason, after its traceback."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if lines:
        return lines[-1]
    return type(error).__name__ if isinstance(error, BaseException) else "unknown error"


class DeviceError(FcmError):
    """No GPU, no CUDA compiler, or an artifact that does not fit the runtime."""
