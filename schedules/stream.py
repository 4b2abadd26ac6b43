"""The kernels streamed through registers and warp shuffles (``FcmTiles.stream``), one module per
chain kind, behind one set of questions: does a tile fit, what does it cost, build it."""

from __future__ import annotations

from types import ModuleType

import tvm

from . import cuda_dw_pw_stream, cuda_pw_dw_stream
from .spec import FcmSpec, FcmTiles
from .warp_lanes import MAX_REGISTER_BYTES, strip_rows

KERNELS: dict[str, ModuleType] = {"dw_pw": cuda_dw_pw_stream, "pw_dw": cuda_pw_dw_stream}


def stream_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int = 0) -> list[str]:
    """Why ``tiles`` with ``stream`` cannot run ``spec`` (empty if they can; no shared memory,
    whatever ``max_smem``): the kernel's reasons, then a thread's local buffers over
    :data:`.warp_lanes.MAX_REGISTER_BYTES`."""
    kernel = KERNELS.get(spec.kind)
    if kernel is None:
        return [f"stream kernels only for {' and '.join(KERNELS)}, not {spec.kind}"]
    found = kernel.stream_problems(spec, tiles)
    if not found and (local := register_bytes(spec, tiles)) > MAX_REGISTER_BYTES:
        found.append(f"{local} bytes of registers a thread > {MAX_REGISTER_BYTES}")
    return found


def stream_primfunc(spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False) -> tvm.tirx.PrimFunc:
    """The kernel; call only when :func:`stream_problems` is empty."""
    return KERNELS[spec.kind].stream_primfunc(spec, tiles, name, fast_math)


def shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """None: the kernels keep everything in registers."""
    return 0


def accumulators_per_thread(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 sums a thread keeps over its strip (the DW's in PW->DW, the PW's in DW->PW)."""
    return tiles.stream * strip_rows(tiles) * tiles.output_cols


def register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """A thread's local buffers, which TVM must keep within this."""
    return KERNELS[spec.kind].register_bytes(spec, tiles)
