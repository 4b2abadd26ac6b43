"""Fused DW/PW kernels: TE computes and hand-written CUDA schedules for :class:`FcmSpec` chains."""

from .compute import ACTIVATION_BUILDERS, fcm_compute
from .primfunc import fcm_primfunc
from .spec import Depthwise, FcmSpec, FcmTiles, Pointwise
from .tiles import default_tiles, tile_problems

__all__ = [
    "ACTIVATION_BUILDERS",
    "Depthwise",
    "FcmSpec",
    "FcmTiles",
    "Pointwise",
    "default_tiles",
    "fcm_compute",
    "fcm_primfunc",
    "tile_problems",
]
