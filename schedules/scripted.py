"""The kernels written in TVMScript over a tiled domain or per thread, rather than scheduled from
the TE compute: the tensor-core kernels (``FcmTiles.tensor_cores``, :mod:`.tensor_cores`), the
PW->DW kernel with its PW weights in registers (``FcmTiles.register_pw``, :mod:`.cuda_pw_dw_regs`)
and the DW->PW and PW->DW kernels streamed through registers and warp shuffles
(``FcmTiles.stream``, :mod:`.stream`) and the PW->DW->PW and PW->DW kernels over whole images
(``FcmTiles.image``, :mod:`.cuda_image`). One set of questions for all: is a tile one of
theirs, does it fit, what does it cost, build it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tvm

from . import cuda_image, cuda_pw_dw_regs, stream, tensor_cores
from .spec import FcmSpec, FcmTiles


class Family(NamedTuple):
    """What the tile checks, the planner and the builder ask of one scripted kernel family."""

    problems: Callable[[FcmSpec, FcmTiles, int], list[str]]  # (spec, tiles, max_smem)
    primfunc: Callable[..., tvm.tirx.PrimFunc]  # (spec, tiles, name, fast_math)
    shared_bytes: Callable[[FcmSpec, FcmTiles], int]
    accumulators: Callable[[FcmSpec, FcmTiles], int]  # float32 sums a thread keeps
    register_bytes: Callable[[FcmSpec, FcmTiles], int] | None  # None: TVM's local buffers unchecked


FAMILIES: dict[str, Family] = {  # the FcmTiles knob that selects each
    "tensor_cores": Family(
        tensor_cores.tensor_core_problems,
        tensor_cores.tensor_core_primfunc,
        tensor_cores.shared_bytes,
        tensor_cores.accumulators_per_thread,
        None,  # the accumulators live in fragments
    ),
    "register_pw": Family(
        cuda_pw_dw_regs.register_pw_problems,
        cuda_pw_dw_regs.register_pw_primfunc,
        cuda_pw_dw_regs.shared_bytes,
        cuda_pw_dw_regs.accumulators_per_thread,
        cuda_pw_dw_regs.register_bytes,
    ),
    "stream": Family(
        stream.stream_problems,
        stream.stream_primfunc,
        stream.shared_bytes,
        stream.accumulators_per_thread,
        stream.register_bytes,
    ),
    "image": Family(
        cuda_image.image_problems,
        cuda_image.image_primfunc,
        cuda_image.shared_bytes,
        cuda_image.accumulators_per_thread,
        cuda_image.register_bytes,
    ),
}


def _selected(tiles: FcmTiles | None) -> list[str]:
    return [knob for knob in FAMILIES if tiles is not None and getattr(tiles, knob)]


def is_scripted(tiles: FcmTiles | None) -> bool:
    """Whether ``tiles`` build a scripted kernel (not the CUDA-core rule of :mod:`.rules`)."""
    return bool(_selected(tiles))


def _family(tiles: FcmTiles) -> Family:
    (knob,) = _selected(tiles)
    return FAMILIES[knob]


def scripted_problems(spec: FcmSpec, tiles: FcmTiles, max_smem: int) -> list[str]:
    """Why the scripted kernel of ``tiles`` cannot run ``spec`` (empty if it can)."""
    selected = _selected(tiles)
    if len(selected) > 1:
        return [f"{' and '.join(selected)} are different kernels: choose one"]
    return _family(tiles).problems(spec, tiles, max_smem)


def scripted_primfunc(
    spec: FcmSpec, tiles: FcmTiles, name: str, fast_math: bool = False
) -> tvm.tirx.PrimFunc:
    """The scheduled kernel; call only when :func:`scripted_problems` is empty."""
    return _family(tiles).primfunc(spec, tiles, name, fast_math)


def scripted_register_bytes(spec: FcmSpec, tiles: FcmTiles) -> int | None:
    """The bytes of a thread's register tiles that TVM must keep local buffers within (None: not
    checked)."""
    bound = _family(tiles).register_bytes
    return None if bound is None else bound(spec, tiles)


def scripted_shared_bytes(spec: FcmSpec, tiles: FcmTiles) -> int:
    """Shared memory of one block."""
    return _family(tiles).shared_bytes(spec, tiles)


def scripted_accumulators(spec: FcmSpec, tiles: FcmTiles) -> int:
    """The float32 sums each thread keeps."""
    return _family(tiles).accumulators(spec, tiles)
