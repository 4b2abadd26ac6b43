"""Run and time a Relax VM module with numpy in and out; works with the TVM runtime alone."""

from __future__ import annotations

import re
import statistics
from dataclasses import dataclass

import numpy as np
import tvm
from tvm.runtime.vm import VirtualMachine

from .errors import DeviceError, FcmError, last_line
from .frontend import TensorInfo


@dataclass(frozen=True)
class Timing:
    """Per-inference latency in milliseconds over ``repeat`` measurements of ``number`` runs each."""

    median_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    repeat: int
    number: int

    def to_json(self) -> dict:
        return self.__dict__.copy()


class VmRunner:
    """A Relax VM bound to one device, with the model's input signature for checks."""

    def __init__(self, module: tvm.runtime.Module, device: tvm.runtime.Device, inputs: list[TensorInfo]):
        self.device = device
        self.inputs = inputs
        try:
            self.vm = VirtualMachine(module, device)
        except Exception as error:
            raise DeviceError(
                f"could not start the model on {device}: {device_error_summary(error)}"
            ) from None

    def random_inputs(self, seed: int | None = None) -> list[np.ndarray]:
        """Fresh random inputs of the right shapes and dtypes (standard normal for floats)."""
        rng = np.random.default_rng(seed)
        return [_random_tensor(rng, info) for info in self.inputs]

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run once and return the outputs as numpy arrays (a list, even for one output)."""
        arguments = self._to_device(inputs)
        try:
            result = self.vm["main"](*arguments)
            self.device.sync()  # a kernel fault surfaces here, not at launch
        except Exception as error:
            raise DeviceError(
                f"running the model on {self.device} failed: {device_error_summary(error)}"
            ) from None
        return [tensor.numpy() for tensor in _flatten(result)]

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 20) -> Timing:
        """Time ``main`` with the VM's time evaluator (one warm-up run excluded)."""
        evaluator = self.evaluator(*(inputs or self.random_inputs()), number=number, repeat=repeat)
        try:
            results_ms = [seconds * 1e3 for seconds in evaluator().results]
        except Exception as error:
            raise DeviceError(f"timing failed on {self.device}: {device_error_summary(error)}") from None
        return Timing(
            statistics.median(results_ms),
            statistics.fmean(results_ms),
            min(results_ms),
            max(results_ms),
            repeat,
            number,
        )

    def evaluator(self, *inputs: np.ndarray, number: int, repeat: int = 1):
        """The VM's time evaluator over ``main`` with these inputs bound (no per-call conversion)."""
        self.vm.save_function("main", "fcm_timed_main", *self._to_device(inputs))
        return self.vm.time_evaluator("fcm_timed_main", self.device, number=number, repeat=repeat)

    def _to_device(self, inputs) -> list[tvm.runtime.Tensor]:
        if len(inputs) != len(self.inputs):
            raise FcmError(f"the model takes {len(self.inputs)} input(s), got {len(inputs)}")
        arrays = []
        for value, info in zip(inputs, self.inputs):
            value = np.asarray(value)
            if tuple(value.shape) != info.shape or str(value.dtype) != info.dtype:
                raise FcmError(
                    f"input '{info.name}' must be {info.dtype}{list(info.shape)}, "
                    f"got {value.dtype}{list(value.shape)}"
                )
            arrays.append(_to_tensor(value, self.device))
        return arrays


def _to_tensor(value: np.ndarray, device: tvm.runtime.Device) -> tvm.runtime.Tensor:
    try:
        return tvm.runtime.tensor(value, device)
    except Exception as error:  # out of device memory, most often
        raise DeviceError(
            f"could not copy a {value.nbytes / 2**20:.0f} MiB input to {device}: "
            f"{device_error_summary(error)}"
        ) from None


def _random_tensor(rng: np.random.Generator, info: TensorInfo) -> np.ndarray:
    if np.issubdtype(np.dtype(info.dtype), np.floating):
        return rng.standard_normal(info.shape).astype(info.dtype)
    return rng.integers(0, 10, size=info.shape).astype(info.dtype)


def _flatten(result) -> list:
    if isinstance(result, tvm.runtime.Tensor):
        return [result]
    return [tensor for item in result for tensor in _flatten(item)]


# A CUDA failure as TVM reports it: the error line, the launch shape, and (for a launch failure)
# the whole CUDA source of the module after it, which must not become the message.
_CUDA_FAILURE = re.compile(r"CUDA_ERROR_\w+|cudaError\w+|CUDALaunch Error|CUDA Runtime Error|out of memory")


def device_error_summary(error: BaseException) -> str:
    """One line for a device failure: the CUDA error, launch shape and kernel if TVM gave them."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    failure = next((i for i, line in enumerate(lines) if _CUDA_FAILURE.search(line)), None)
    if failure is None:
        return last_line(error)[:300]
    details = [lines[failure]]
    details += [line for line in lines[failure + 1 : failure + 3] if line.startswith("grid=")]
    kernel = next((line for line in lines if line.startswith("// func_name=")), None)
    if kernel:
        details.append(f"in kernel {kernel.removeprefix('// func_name=')}")
    return " ".join(details)[:400]
