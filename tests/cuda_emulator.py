"""Run a generated CUDA kernel on the CPU: the kernel TVM wrote, compiled as host C++ with g++.

For kernels whose threads share nothing but warp shuffles (no shared memory, no barrier), such
as the streamed PW->DW kernel (:func:`run`): each warp's 32 lanes run as host threads in lockstep
only at the shuffles (a shuffle publishes the lane's value, waits for the warp, reads its source
lane, waits again), blocks and warps one after another. For kernels that share shared memory
through barriers and no shuffles, such as the PW->DW->PW kernel over whole images
(:func:`run_blocks`): all threads of a block run at once, ``__syncthreads`` waits for all of
them, shared arrays are the block's (blocks run one after another), and a source's kernels run in
the order given. ``half`` is ``cuda_fp16.h``'s host type, so the kernel's float16 loads,
conversions and roundings are the GPU's.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np

CUDA_INCLUDE = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda")) / "include"
KERNEL = re.compile(r'extern "C" __global__ void (?:__launch_bounds__\(\d+\) )?(\w+)\(([^)]*)\)\s*\{')

SHIM = r"""
#include <cuda_fp16.h>
#include <vector_types.h>
#include <vector_functions.h>
#include <algorithm>
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>
using std::max;
using std::min;
#undef __global__
#undef __device__
#undef __forceinline__
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
thread_local std::barrier<>* emu_block;
#define __syncthreads() emu_block->arrive_and_wait()
struct EmuDim { unsigned x, y, z; };
thread_local EmuDim emu_threadIdx, emu_blockIdx;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
struct EmuWarp { std::barrier<>* sync; float slots[32]; };
thread_local EmuWarp* emu_warp;
static float emu_exchange(float value, int source) {
  int lane = threadIdx.x % 32;
  emu_warp->slots[lane] = value;
  emu_warp->sync->arrive_and_wait();
  float result = emu_warp->slots[source];
  emu_warp->sync->arrive_and_wait();
  return result;
}
// CUDA: within segments of `width` lanes; a source outside the lane's segment gives its own value
static float emu_shfl_up(float value, int delta, int width) {
  int lane = threadIdx.x % 32, source = lane - delta;
  return emu_exchange(value, source < lane / width * width ? lane : source);
}
static float emu_shfl_down(float value, int delta, int width) {
  int lane = threadIdx.x % 32, source = lane + delta;
  return emu_exchange(value, source >= lane / width * width + width ? lane : source);
}
#define __shfl_up_sync(mask, value, delta, width) emu_shfl_up((value), (delta), (width))
#define __shfl_down_sync(mask, value, delta, width) emu_shfl_down((value), (delta), (width))
#define __expf expf
#define __fdividef(a, b) ((a) / (b))
struct __align__(8) half4 { __half x, y, z, w; };
"""

DRIVER = r"""
extern "C" void emu_run(void** args, int blocks, int warps) {
  for (int block = 0; block < blocks; ++block)
    for (int warp = 0; warp < warps; ++warp) {
      std::barrier<> sync(32);
      EmuWarp context{&sync};
      std::vector<std::thread> lanes;
      for (int lane = 0; lane < 32; ++lane)
        lanes.emplace_back([&, lane] {
          emu_threadIdx = {(unsigned)lane, (unsigned)warp, 0};
          emu_blockIdx = {(unsigned)block, 0, 0};
          emu_warp = &context;
          KERNEL_CALL;
        });
      for (auto& lane : lanes) lane.join();
    }
}
"""


BLOCK_DRIVER = r"""
extern "C" void emu_run_NAME(void** args, int blocks, int threads) {
  for (int block = 0; block < blocks; ++block) {
    std::barrier<> sync(threads);
    std::vector<std::thread> lanes;
    for (int thread = 0; thread < threads; ++thread)
      lanes.emplace_back([&, thread] {
        emu_threadIdx = {(unsigned)thread, 0, 0};
        emu_blockIdx = {(unsigned)block, 0, 0};
        emu_block = &sync;
        KERNEL_CALL;
      });
    for (auto& lane : lanes) lane.join();
  }
}
"""


def missing() -> str | None:
    """What this host lacks to emulate kernels (None: nothing)."""
    if shutil.which("g++") is None:
        return "g++ is not installed"
    if not (CUDA_INCLUDE / "cuda_fp16.h").exists():
        return f"no cuda_fp16.h in {CUDA_INCLUDE} (set CUDA_HOME)"
    return None


def kernel_signature(source: str) -> tuple[str, list[tuple[str, str]]]:
    """The kernel's name and its (C type, parameter name) pairs."""
    return kernel_signatures(source)[0]


def kernel_signatures(source: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each kernel's name and its (C type, parameter name) pairs, in the source's order."""
    return [(name, _parameters(params)) for name, params in KERNEL.findall(source)]


def _parameters(params: str) -> list[tuple[str, str]]:
    pairs = []
    for param in params.split(","):
        *words, pname = param.replace("__restrict__", "").split()
        pairs.append((" ".join(words), pname))
    return pairs


def build(source: str, folder: Path) -> tuple[ctypes.CDLL, list[str]]:
    """The kernel of ``source`` (TVM's CUDA module source) compiled for the host; its parameter
    names in call order."""
    name, params = kernel_signature(source)
    definition = source[source.rindex('extern "C" __global__') :]
    call = f"{name}({', '.join(f'({ctype})args[{i}]' for i, (ctype, _) in enumerate(params))})"
    library = compiled(SHIM + definition + DRIVER.replace("KERNEL_CALL", call), folder / "kernel")
    return library, [pname for _, pname in params]


def compiled(text: str, stem: Path) -> ctypes.CDLL:
    """The host C++ ``text`` (written to ``stem``.cpp) as a loaded shared library."""
    path, library = stem.with_suffix(".cpp"), stem.with_suffix(".so")
    path.write_text(text)
    command = ["g++", "-std=c++20", "-O1", "-fPIC", "-shared", "-w", f"-I{CUDA_INCLUDE}", "-o", str(library)]
    result = subprocess.run([*command, str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return ctypes.CDLL(str(library))


def call_in_place(buffers: dict[str, np.ndarray], names: list[str], launch) -> None:
    """``launch(pointers)`` with the arrays of ``buffers`` named by the parameters ``names`` (``x``
    for ``x_ptr``), then the arrays copied back: the kernels work in place."""
    arrays = [np.ascontiguousarray(buffers[name.removesuffix("_ptr")]) for name in names]
    launch((ctypes.c_void_p * len(arrays))(*(a.ctypes.data for a in arrays)))
    for name, array in zip(names, arrays):
        buffers[name.removesuffix("_ptr")][...] = array


def run(source: str, folder: Path, buffers: dict[str, np.ndarray], blocks: int, warps: int) -> None:
    """Run the kernel of ``source`` over ``blocks`` blocks of ``warps`` warps (threadIdx.x the lane,
    threadIdx.y the warp) on ``buffers`` by parameter name (``x`` for ``x_ptr``), in place."""
    library, names = build(source, folder)
    call_in_place(buffers, names, lambda pointers: library.emu_run(pointers, blocks, warps))


def block_shared(kernels: str) -> str:
    """``kernels`` with their shared arrays, static and dynamic, as static host arrays: one block's
    at a time (the dynamic one as large as any launch may ask: 256 Ki elements)."""
    static = re.sub(r"__shared__ (alignas\(\d+\))", r"\1 static", kernels)
    dynamic = r"extern __shared__ __align__\((\d+)\) (\w+) (\w+)\[\];"
    static = re.sub(dynamic, r"alignas(\1) static \2 \3[1 << 18];", static)
    return static.replace("static uchar ", "static unsigned char ")


def run_blocks(
    source: str, folder: Path, buffers: dict[str, np.ndarray], launches: list[tuple[int, int]]
) -> None:
    """Run the kernels of ``source`` in order, kernel ``i`` over ``launches[i]`` = (blocks, threads)
    with ``threadIdx.x`` the thread, on ``buffers`` by parameter name (``x`` for ``x_ptr``; a
    PrimFunc's workspace too), in place."""
    kernels = kernel_signatures(source)
    assert len(kernels) == len(launches), [name for name, _ in kernels]
    names = sorted({pname for _, params in kernels for _, pname in params})
    drivers = []
    for name, params in kernels:
        args = ", ".join(f"({ctype})args[{names.index(pname)}]" for ctype, pname in params)
        drivers.append(BLOCK_DRIVER.replace("NAME", name).replace("KERNEL_CALL", f"{name}({args})"))
    kernels_text = block_shared(source[source.index('extern "C" __global__') :])
    library = compiled(SHIM + kernels_text + "".join(drivers), folder / "kernels")

    def launch_all(pointers) -> None:
        for (name, _), (blocks, threads) in zip(kernels, launches):
            getattr(library, f"emu_run_{name}")(pointers, blocks, threads)

    call_in_place(buffers, names, launch_all)
