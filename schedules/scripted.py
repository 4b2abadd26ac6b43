"""The kernels written in TVMScript over a tiled domain, rather than scheduled from the TE compute:
the tensor-core kernels (``FcmTiles.tensor_cores``, :mod:`.tensor_cores`) and the PW->DW kernel
with its PW weights in registers (``FcmTiles.register_pw``, :mod:`.cuda_pw_dw_regs`). One set of
questions for both: is a tile one of theirs, does it fit, what does it cost, build it."""

from __future__ import annotations

import tvm

from . import cuda_pw_dw_regs, tensor_cores
from .spec import FcmSpec, FcmTiles


def is_scripted(tiles: FcmTiles | None) -> bool:
    """Whether ``tiles`` build a scripted kernel (not the CUDA-core rule of :mod:`.rules`)."""
    return tiles is not None and bool(tiles.tensor_cores or tiles.register_pw)


def scripted_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why the scripted kernel of ``tiles`` cannot run ``spec`` (empty if it can)."""
    if tiles.tensor_cores and tiles.register_pw:
        return ["tensor_cores and register_pw are two kernels: choose one"]
    if tiles.register_pw:
        return cuda_pw_dw_regs.register_pw_problems(spec, tiles, max_smem)
    return tensor_cores.tensor_core_problems(spec, tiles, max_smem)


def scripted_primfunc(
    spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False
) -> tvm.tirx.PrimFunc:
    """The scheduled kernel; call only when :func:`scripted_problems` is empty."""
    if tiles.register_pw:
        return cuda_pw_dw_regs.register_pw_primfunc(spec, tiles, name, fast_math)
    return tensor_cores.tensor_core_primfunc(spec, tiles, name, fast_math)


def scripted_register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int | None:
    """The bytes of a thread's register tiles that TVM must keep local buffers within (None: not
    checked; the tensor-core kernels keep their accumulators in fragments)."""
    return cuda_pw_dw_regs.register_bytes(spec, tiles) if tiles.register_pw else None


def scripted_shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Shared memory of one block."""
    if tiles.register_pw:
        return cuda_pw_dw_regs.shared_bytes(spec, tiles)
    return tensor_cores.shared_bytes(spec, tiles)


def scripted_accumulators(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 sums each thread keeps."""
    if tiles.register_pw:
        return cuda_pw_dw_regs.accumulators_per_thread(spec, tiles)
    return tensor_cores.accumulators_per_thread(spec, tiles)
