"""What the memory hierarchy does to a kernel's traffic: 32-byte sectors and reuse through L2.

Global memory is moved in sectors (32 B on every GPU in the table): a request for part of a
sector costs the whole sector. What a kernel requests goes through L2; a re-read of data that
is still in L2 never reaches DRAM. These are the two effects that separate "bytes a kernel asks
for" (the paper's global-memory accesses) from "bytes DRAM moves" (what ncu's ``dram__bytes``
measures).
"""

from __future__ import annotations

from math import gcd

from ..gpus import GpuSpec

# Share of L2 that one tensor can count on. H100 and A100 split L2 into two partitions, and
# lines read from both sides may be held twice; other traffic and set conflicts take the rest.
# A modelling assumption, to be calibrated with ncu (see docs/planner.md).
L2_EFFECTIVE_FRACTION = 0.5

# L2 hit bandwidth as a multiple of DRAM bandwidth: what re-reads served by L2 cost in time.
# A modelling assumption (NVIDIA publishes no L2 bandwidth for most parts), to be calibrated.
L2_BANDWIDTH_MULTIPLE = 2.0


def contiguous_bytes(nbytes: float, sector: int) -> int:
    """Bytes moved for a contiguous region of ``nbytes`` starting on a sector boundary: whole sectors."""
    return -(-int(nbytes) // sector) * sector


def segment_sectors(start_byte: int, length_bytes: int, sector: int) -> int:
    """Sectors touched by the byte range ``[start_byte, start_byte + length_bytes)``."""
    if length_bytes <= 0:
        return 0
    return (start_byte + length_bytes - 1) // sector - start_byte // sector + 1


def row_segment_sectors(start: int, length: int, row_length: int, elem_bytes: int, sector: int) -> float:
    """Expected sectors touched by ``length`` elements from column ``start`` of one row of a tensor.

    Rows of ``row_length`` elements start at byte offsets ``r * row_length * elem_bytes``; modulo the
    sector size these offsets cycle through the multiples of ``gcd(row pitch, sector)``. The
    expectation is the mean over those alignments, so a 7-wide fp32 row (28 B) is charged for
    the one or two sectors it straddles, and an aligned 8-wide row for exactly one.
    """
    pitch = row_length * elem_bytes
    offsets = range(0, sector, gcd(pitch, sector))
    touched = [
        segment_sectors(offset + start * elem_bytes, length * elem_bytes, sector) for offset in offsets
    ]
    return sum(touched) / len(touched)


def l2_capacity(gpu: GpuSpec) -> float:
    """Bytes of L2 that reused data can count on: ``l2_bytes * L2_EFFECTIVE_FRACTION``."""
    return gpu.l2_bytes * L2_EFFECTIVE_FRACTION


def l2_hit_fraction(reuse_distance: float, capacity: float) -> float:
    """Fraction of a re-read that L2 serves, when ``reuse_distance`` bytes pass through L2 between
    the first touch of a byte and its re-read (the data itself included).

    1 when the distance fits in the capacity; beyond, ``capacity / reuse_distance``: the
    steady-state hit rate of a cache with random replacement over a cyclic sweep (strict LRU would
    give 0, NVIDIA's replacement is neither, ncu decides).
    """
    if reuse_distance <= capacity:
        return 1.0
    return capacity / reuse_distance


def write_back_fraction(bytes_after: float, capacity: float) -> float:
    """Fraction of written bytes that L2 has written back to DRAM once ``bytes_after`` new bytes
    (misses and further writes) have passed through it.

    L2 is write-back: a written line goes to DRAM only when it is evicted. Whatever a kernel
    writes that is still resident when the run ends reaches DRAM later, or never when the memory
    is written again first (TVM's memory planner hands the same storage to the next tensors).
    The complement of :func:`l2_hit_fraction`: a written line survives as a re-read line would.
    """
    return 1.0 - l2_hit_fraction(bytes_after, capacity)


def l2_bandwidth(gpu: GpuSpec) -> float:
    """Bytes per second that L2 serves hits at: ``L2_BANDWIDTH_MULTIPLE`` times DRAM bandwidth."""
    return gpu.dram_bandwidth_gbs * 1e9 * L2_BANDWIDTH_MULTIPLE
