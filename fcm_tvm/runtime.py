"""``fcm_tvm.load``: run an exported model on a GPU host that has only the TVM runtime.

An exported CUDA library holds CUDA source, compiled when loaded through the global function
``tvm_callback_cuda_compile``. With ``TVM_USE_RUNTIME_LIB=1`` nothing registers that function and
nothing loads ``libtvm_runtime_cuda.so``, so this module does both: it loads the CUDA runtime
library and registers a compile callback backed by ``nvcc`` or by NVRTC (cuda-bindings).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tvm

from .errors import DeviceError, FcmError, last_line
from .frontend import TensorInfo
from .runner import Timing, VmRunner

COMPILE_CALLBACK = "tvm_callback_cuda_compile"
METADATA_SUFFIX = ".json"


@dataclass
class LoadedModel:
    """An exported model, loaded and bound to a device."""

    path: Path
    metadata: dict
    runner: VmRunner

    @property
    def inputs(self) -> list[TensorInfo]:
        return self.runner.inputs

    @property
    def fused(self) -> list[dict]:
        return self.metadata.get("fused", [])

    @property
    def device_name(self) -> str:
        """The device the model runs on, as TVM names it (e.g. ``cuda:0``, ``cpu:0``)."""
        return str(self.runner.device)

    def random_inputs(self, seed: int | None = None) -> list[np.ndarray]:
        return self.runner.random_inputs(seed)

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        return self.runner.run(*inputs)

    def benchmark(self, *inputs: np.ndarray, number: int = 10, repeat: int = 20) -> Timing:
        return self.runner.benchmark(*inputs, number=number, repeat=repeat)


def load(path: str | os.PathLike, device: str | None = None, *, compiler: str | None = None) -> LoadedModel:
    """Load a library written by ``CompiledModel.export_library`` and bind it to ``device``.

    ``device`` is "cuda", "cuda:N" or "cpu" (default: the kind the library was compiled for);
    ``compiler`` picks "nvcc" or "nvrtc" for the CUDA source (default: ``TVM_CUDA_COMPILE_MODE``,
    else whichever is installed, nvcc first).
    """
    path = Path(path)
    if not path.is_file():
        raise FcmError(f"{path}: no such file")
    metadata = _read_metadata(path)
    kind = metadata.get("target_kind")
    device = device or default_device(kind)
    tvm_device = _device(device)
    on_gpu = tvm_device.dlpack_device_type() == tvm.cuda(0).dlpack_device_type()
    if kind is not None and (kind == "cuda") != on_gpu:
        raise DeviceError(f"{path} was compiled for {kind} and cannot run on {device}")
    if on_gpu:
        _check_cuda(tvm_device, compiler)
    module = _load_module(path)
    inputs = [TensorInfo.from_json(item) for item in metadata.get("inputs", [])]
    return LoadedModel(path, metadata, VmRunner(module, tvm_device, inputs))


def default_device(target_kind: str | None) -> str:
    """Where a library compiled for ``target_kind`` runs unless told otherwise."""
    return "cuda" if target_kind in (None, "cuda") else "cpu"


def _read_metadata(path: Path) -> dict:
    sidecar = path.with_name(path.name + METADATA_SUFFIX)
    if not sidecar.is_file():
        raise FcmError(f"{sidecar}: missing (export with fcm_tvm's export_library, which writes it)")
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as error:
        raise FcmError(f"{sidecar}: not valid JSON ({error})") from None


def _device(name: str) -> tvm.runtime.Device:
    kind, _, index = name.partition(":")
    if kind not in ("cuda", "gpu", "cpu", "llvm"):
        raise FcmError(f"unknown device '{name}': use cuda, cuda:N or cpu")
    if kind in ("cpu", "llvm"):
        return tvm.cpu()
    load_cuda_runtime()
    device = tvm.cuda(int(index or 0))
    if not device.exist:
        raise DeviceError(f"no CUDA GPU {index or 0} on this machine (is the NVIDIA driver loaded?)")
    return device


def _load_module(path: Path) -> tvm.runtime.Module:
    try:
        return tvm.runtime.load_module(str(path))
    except Exception as error:
        raise FcmError(f"{path}: not a loadable TVM library ({last_line(error)[:200]})") from None


def load_cuda_runtime() -> None:
    """Load ``libtvm_runtime_cuda.so`` (the full TVM package does this itself on import)."""
    from tvm.base import _LOADED_LIBS

    if "tvm_runtime_cuda" in _LOADED_LIBS:
        return
    from tvm_ffi.libinfo import load_lib_ctypes

    runtime_dir = Path(_LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    try:
        _LOADED_LIBS["tvm_runtime_cuda"] = load_lib_ctypes(
            package="tvm", target_name="tvm_runtime_cuda", extra_lib_paths=[runtime_dir], mode="RTLD_LOCAL"
        )
    except (OSError, RuntimeError) as error:
        if "libcuda" in str(error):
            raise DeviceError("no NVIDIA driver on this machine (libcuda.so.1 not found)") from None
        raise DeviceError(f"TVM's CUDA runtime library could not be loaded: {error}") from None


def _check_cuda(device: tvm.runtime.Device, compiler: str | None) -> None:
    arch = "sm_" + device.compute_version.replace(".", "")
    register_cuda_compiler(arch, compiler)


def register_cuda_compiler(arch: str, compiler: str | None = None) -> str:
    """Register ``tvm_callback_cuda_compile`` for ``arch`` with nvcc or NVRTC; return which one."""
    choice = compiler or os.environ.get("TVM_CUDA_COMPILE_MODE") or _available_compiler()
    compile_source = {"nvcc": _nvcc_compiler, "nvrtc": _nvrtc_compiler}.get(choice)
    if compile_source is None:
        raise DeviceError(f"unknown CUDA compiler '{choice}': use nvcc or nvrtc")
    callback = compile_source(arch)
    tvm.register_global_func(COMPILE_CALLBACK, lambda code, *_: callback(code), override=True)
    return choice


def _available_compiler() -> str:
    if _nvcc_path():
        return "nvcc"
    try:
        import cuda.bindings.nvrtc  # noqa: F401
    except ImportError:
        raise DeviceError(
            "no CUDA compiler on this host: the model's CUDA source needs nvcc on PATH "
            "(or in $CUDA_HOME/bin) or the cuda-bindings package for NVRTC"
        ) from None
    return "nvrtc"


def _nvcc_path() -> str | None:
    cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
    candidate = Path(cuda_home) / "bin" / "nvcc"
    return shutil.which("nvcc") or (str(candidate) if candidate.is_file() else None)


def _nvcc_compiler(arch: str):
    nvcc = _nvcc_path()
    if nvcc is None:
        raise DeviceError("nvcc not found (put it on PATH or set CUDA_HOME)")

    def compile_with_nvcc(code: str) -> bytearray:
        with tempfile.TemporaryDirectory(prefix="fcm-nvcc-") as folder:
            source, binary = Path(folder) / "kernels.cu", Path(folder) / "kernels.cubin"
            source.write_text(code)
            command = [nvcc, "--cubin", "-O3", f"-arch={arch}", "-o", str(binary), str(source)]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                raise DeviceError(f"nvcc failed on the model's CUDA source:\n{result.stderr[-2000:]}")
            return bytearray(binary.read_bytes())

    return compile_with_nvcc


def _nvrtc_compiler(arch: str):
    try:
        from cuda.bindings import nvrtc
    except ImportError:
        raise DeviceError("NVRTC needs the cuda-bindings package (pip install cuda-bindings)") from None
    include = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"

    def check(result, what: str):
        status, *values = result
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise DeviceError(f"NVRTC {what} failed: {status}")
        return values[0] if values else None

    def compile_with_nvrtc(code: str) -> bytearray:
        program = check(nvrtc.nvrtcCreateProgram(code.encode(), b"kernels.cu", 0, [], []), "create")
        options = [f"--gpu-architecture={arch}".encode(), b"-default-device", f"-I{include}".encode()]
        status = nvrtc.nvrtcCompileProgram(program, len(options), options)[0]
        if status != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            size = check(nvrtc.nvrtcGetProgramLogSize(program), "log size")
            log = b" " * size
            check(nvrtc.nvrtcGetProgramLog(program, log), "log")
            raise DeviceError(
                f"NVRTC failed on the model's CUDA source:\n{log.decode(errors='replace')[-2000:]}"
            )
        size = check(nvrtc.nvrtcGetCUBINSize(program), "cubin size")
        cubin = b" " * size
        check(nvrtc.nvrtcGetCUBIN(program, cubin), "cubin")
        return bytearray(cubin)

    return compile_with_nvrtc
