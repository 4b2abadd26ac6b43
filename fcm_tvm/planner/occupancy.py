"""How many thread blocks an SM holds and how well a grid of them keeps the GPU busy.

Three effects, each a small function: the occupancy limit (threads, shared memory, registers,
the hardware's block cap), latency hiding (too few resident threads cannot keep enough loads in
flight to reach peak bandwidth), and wave quantisation (the last wave of blocks leaves SMs idle).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gpus import GpuSpec

# Registers a thread needs besides its output accumulators (indices, addresses, loaded values).
# An estimate, to be checked against ``nvcc -Xptxas -v`` / ncu ``launch__registers_per_thread``.
REGISTERS_BASE = 32
MAX_REGISTERS_PER_THREAD = 255
REGISTER_GRANULE = 256  # registers are allocated to a warp in units of 256 (8 per thread)

# Fraction of an SM's maximum resident threads from which a kernel is assumed to reach peak
# throughput; below it, throughput falls in proportion (Little's law with a fixed number of
# loads in flight per thread). A modelling assumption, to be calibrated with ncu.
SATURATING_OCCUPANCY = 0.25


@dataclass(frozen=True)
class Occupancy:
    """Blocks resident on one SM and the resource that limits them."""

    blocks_per_sm: int
    limited_by: str  # "threads", "shared memory", "registers" or "block limit"


def registers_per_thread(accumulators: int) -> int:
    """Estimated registers of a thread that keeps ``accumulators`` outputs in registers."""
    return min(MAX_REGISTERS_PER_THREAD, accumulators + REGISTERS_BASE)


def occupancy(threads: int, shared_bytes: int, registers: int, gpu: GpuSpec) -> Occupancy:
    """Resident blocks per SM: the least of what threads, shared memory, registers and the cap allow.

    Shared memory per block counts the ``reserved_smem_per_block`` that the CUDA runtime keeps;
    registers are allocated per warp in granules of 256. Zero blocks means the block cannot run.
    """
    warps = -(-threads // 32)
    warp_registers = -(-registers * 32 // REGISTER_GRANULE) * REGISTER_GRANULE
    limits = {
        "threads": gpu.max_threads_per_sm // threads,
        "shared memory": gpu.smem_per_sm // (shared_bytes + gpu.reserved_smem_per_block),
        # launch bounds make the compiler fit one block's registers (spilling the rest)
        "registers": max(1, gpu.registers_per_sm // (warp_registers * warps)),
        "block limit": gpu.max_blocks_per_sm,
    }
    if shared_bytes > gpu.smem_per_block:
        limits["shared memory"] = 0
    limited_by = min(limits, key=lambda name: limits[name])
    return Occupancy(limits[limited_by], limited_by)


def latency_hiding(resident_threads: int, gpu: GpuSpec) -> float:
    """Share of an SM's peak throughput reached with ``resident_threads`` threads on it:
    ``min(1, resident / max_threads_per_sm / SATURATING_OCCUPANCY)``."""
    return min(1.0, resident_threads / gpu.max_threads_per_sm / SATURATING_OCCUPANCY)


def waves(blocks: int, blocks_per_sm: int, gpu: GpuSpec) -> int:
    """Rounds of ``blocks_per_sm * sm_count`` blocks that a grid of ``blocks`` takes."""
    return -(-blocks // (blocks_per_sm * gpu.sm_count))


def parallel_efficiency(blocks: int, threads: int, blocks_per_sm: int, gpu: GpuSpec) -> float:
    """Share of the GPU's peak throughput a grid gets, all blocks doing equal work.

    In a full wave each SM runs ``b = blocks_per_sm`` blocks at ``latency_hiding(b * threads)`` of
    its peak, so a wave takes ``b / latency_hiding`` block-times; the last, partial wave spreads
    its ``r`` blocks over the SMs, ``ceil(r / sm_count)`` each. Efficiency is the ideal time
    (``blocks / sm_count`` block-times) over the sum of the waves' times: ``latency_hiding`` for a
    grid of many full waves, about ``blocks / sm_count`` for a grid smaller than the GPU.
    """
    slots = blocks_per_sm * gpu.sm_count
    full, rest = divmod(blocks, slots)
    block_times = full * blocks_per_sm / latency_hiding(blocks_per_sm * threads, gpu)
    if rest:
        per_sm = -(-rest // gpu.sm_count)
        block_times += per_sm / latency_hiding(per_sm * threads, gpu)
    return blocks / gpu.sm_count / block_times
