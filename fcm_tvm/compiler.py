"""``fcm_tvm.compile``: ONNX in, a Relax VM executable out, fused where the planner says so."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm

from .errors import DeviceError, FcmError, last_line
from .frontend import ModelLike, TensorInfo, graph_inputs, import_onnx, load_onnx
from .pipeline import FUSE_MODES, FusedChain, apply_fusion, stock_pipeline
from .precision import as_precision
from .records import DATABASE, has_records, unpacked
from .runner import VmRunner
from .runtime import METADATA_SUFFIX
from .target import ResolvedTarget, TargetLike, local_cuda_device, resolve_target

log = logging.getLogger(__name__)


@dataclass
class CompiledModel:
    """A built model: run it here, export it for a GPU host, or ask what was fused."""

    executable: tvm.runtime.Executable
    target: ResolvedTarget
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    fused: list[FusedChain] = field(default_factory=list)
    _runner: VmRunner | None = field(default=None, repr=False)

    def export_library(self, path: str | os.PathLike) -> Path:
        """Write the shared library and, beside it, ``<path>.json`` with inputs, target and fusions."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.executable.export_library(str(path))
        except Exception as error:
            raise FcmError(f"could not export {path}: {str(error).strip().splitlines()[-1]}") from None
        metadata_path(path).write_text(json.dumps(self.metadata(), indent=2))
        return path

    def metadata(self) -> dict:
        return {
            "format": "fcm-tvm/1",
            "target": str(self.target.tvm_target),
            "target_kind": self.target.tvm_target.kind.name,
            "gpu": self.target.gpu.key if self.target.gpu else None,
            "inputs": [info.to_json() for info in self.inputs],
            "outputs": [info.to_json() for info in self.outputs],
            "fused": [chain.to_json() for chain in self.fused],
        }

    def runner(self) -> VmRunner:
        """A VM on this machine's device for the target (CPU for llvm, GPU 0 for cuda)."""
        if self._runner is None:
            self._runner = VmRunner(self.executable.jit(), self._device(), self.inputs)
        return self._runner

    def run(self, *inputs: np.ndarray) -> list[np.ndarray]:
        """Run once on numpy inputs (in graph-input order) and return numpy outputs."""
        return self.runner().run(*inputs)

    def cuda_source(self) -> str:
        """The generated CUDA C source (what the GPU host compiles on load)."""
        source = module_cuda_source(self.executable.mod)
        if source is None:
            raise FcmError(f"no CUDA code: the target is {self.target.describe()}")
        return source

    def _device(self) -> tvm.runtime.Device:
        if not self.target.is_cuda:
            return tvm.cpu()
        device = local_cuda_device()
        if device is None:
            raise DeviceError("this model was compiled for CUDA but this machine has no CUDA GPU")
        return device


def metadata_path(library: Path) -> Path:
    return library.with_name(library.name + METADATA_SUFFIX)


def walk_modules(module):
    """``module`` and every module it imports, depth first (an executable's host and device code)."""
    yield module
    for imported in module.imports:
        yield from walk_modules(imported)


def module_cuda_source(module) -> str | None:
    """The CUDA C source among ``module`` and its imports (None where there is none)."""
    return next((each.inspect_source() for each in walk_modules(module) if each.kind == "cuda"), None)


def compile(  # noqa: A001 (the public name mirrors tvm.compile)
    model: ModelLike,
    target: TargetLike = "cuda",
    *,
    fuse: str | bool = "auto",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    tuning_records: str | os.PathLike | None = None,
    cuda_graph: bool = False,
    precision: str | None = None,
) -> CompiledModel:
    """Compile an ONNX model (path, bytes or ModelProto) for ``target``.

    ``fuse``: "auto" lets FusePlanner decide per chain, "all" fuses every supported chain,
    "none" (or False) is stock TVM. ``input_shapes`` fixes dynamic input dimensions.
    ``tuning_records``: a MetaSchedule work directory (``fcm-tvm tune``) whose best schedules
    replace dlight's defaults. ``cuda_graph``: capture the VM's kernel launches in CUDA graphs.
    ``precision``: "fp32" or "fp16" casts every float tensor of the model first; None keeps its own.
    """
    fuse_mode = _fuse_mode(fuse)
    resolved = resolve_target(target)
    proto = as_precision(load_onnx(model), precision)
    inputs = graph_inputs(proto, input_shapes)
    log.info("importing %d ONNX nodes", len(proto.graph.node))
    module = import_onnx(proto, inputs)
    records = _tuning_records(tuning_records)
    use_graphs = cuda_graph and resolved.is_cuda
    module, fused = apply_fusion(
        module, resolved, fuse_mode, tuned=records is not None, cuda_graph=use_graphs
    )
    outputs = _output_infos(module, [value.name for value in proto.graph.output])
    log.info("building for %s (%d fused kernels)", resolved.describe(), len(fused))
    executable = _build(module, resolved, records, use_graphs)
    return CompiledModel(executable, resolved, inputs, outputs, fused)


def _fuse_mode(fuse: str | bool) -> str:
    mode = {True: "auto", False: "none"}.get(fuse, fuse) if isinstance(fuse, bool) else fuse
    if mode not in FUSE_MODES:
        raise FcmError(f"fuse must be one of {', '.join(FUSE_MODES)}, not {fuse!r}")
    return mode


def _tuning_records(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    folder = Path(path)
    if not has_records(folder):
        raise FcmError(f"{folder}: not a MetaSchedule work directory (no {DATABASE})")
    return str(unpacked(folder))


def _build(
    module: tvm.IRModule, resolved: ResolvedTarget, tuning_records: str | None, cuda_graph: bool
) -> tvm.runtime.Executable:
    """Build with TVM's stock pipeline; ``cuda_graph`` only for a CUDA target (the caller's check)."""
    pipeline = stock_pipeline(resolved.tvm_target, tuning_records)
    config = {"relax.backend.use_cuda_graph": cuda_graph}
    try:
        with tvm.transform.PassContext(opt_level=3, config=config):
            return tvm.compile(module, target=resolved.tvm_target, relax_pipeline=pipeline)
    except Exception as error:
        raise FcmError(
            f"TVM could not build the model for {resolved.describe()}: {last_line(error)[:300]}"
        ) from None


def _output_infos(module: tvm.IRModule, names: list[str]) -> list[TensorInfo]:
    returned = module["main"].ret_ty
    fields = list(returned.fields) if isinstance(returned, tvm.relax.TupleType) else [returned]
    return [
        TensorInfo(name, tuple(int(d) for d in field.shape.values), str(field.dtype))
        for name, field in zip(names, fields)
    ]
