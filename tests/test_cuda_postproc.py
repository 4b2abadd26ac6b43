"""The repair of TVM's 8-lane vector constructors in CUDA source (fcm_tvm.cuda_postproc)."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import tvm

from fcm_tvm.compiler import module_cuda_source
from fcm_tvm.cuda_postproc import CALLBACK, install, repair
from tests.conftest import gpu_script

PACK_HALF2 = """
static inline __device__ __host__ unsigned
__pack_half2(const half x, const half y) {
  unsigned v0 = *((unsigned short *)&x);
  unsigned v1 = *((unsigned short *)&y);
  return (v1 << 16) | v0;
}
"""

# TVM 0.27's code for an 8-lane float16 gather through an 8-lane int32 index vector (from a
# MetaSchedule candidate of MobileNetV2's conv2d20, fp16), which nvcc rejects as it is.
GATHER = """
  longlong4 __1 = make_longlong4(LANES);
  *(uint4*)(out) = make_uint4(B_ptr[((int2*)(&(__1.x)))->x],B_ptr[((int2*)(&(__1.x)))->y],\
B_ptr[((int2*)(&(__1.y)))->x],B_ptr[((int2*)(&(__1.y)))->y],B_ptr[((int2*)(&(__1.z)))->x],\
B_ptr[((int2*)(&(__1.z)))->y],B_ptr[((int2*)(&(__1.w)))->x],B_ptr[((int2*)(&(__1.w)))->y]);
"""


def host_program(lanes: list[int]) -> str:
    """A host program that gathers ``B_ptr[lanes[i]]`` (B_ptr[k] = k) as TVM's kernel does and
    prints the eight halves stored, in memory order."""
    gather = GATHER.replace("LANES", ", ".join(map(str, lanes)))
    return f"""#include <cuda_fp16.h>
#include <cstdio>
{PACK_HALF2}
int main() {{
  half B_ptr[8];
  for (int k = 0; k < 8; ++k) B_ptr[k] = __float2half((float)k);
  half out[8];
{gather}
  for (int k = 0; k < 8; ++k) printf("%d ", (int)__half2float(out[k]));
  return 0;
}}
"""


def run_host(source: str, nvcc: str, folder: Path) -> str:
    (folder / "gather.cu").write_text(source)
    subprocess.run([nvcc, "-w", "-o", str(folder / "gather"), str(folder / "gather.cu")], check=True)
    return subprocess.run([str(folder / "gather")], capture_output=True, text=True, check=True).stdout.split()


def test_the_repaired_gather_stores_each_lane_in_order(nvcc: str, tmp_path: Path):
    for lanes in ([0, 1, 2, 3, 4, 5, 6, 7], [7, 5, 3, 1, 6, 4, 2, 0]):
        source = host_program(lanes)
        compile_only = [nvcc, "-w", "-x", "cu", "-c", "-o", "/dev/null", "-"]
        broken = subprocess.run(compile_only, input=source, text=True, capture_output=True)
        assert broken.returncode != 0  # as TVM prints it: "too many arguments in function call"
        assert run_host(repair(source), nvcc, tmp_path) == [str(lane) for lane in lanes]


def test_a_tuning_candidate_that_tvm_prints_with_eight_lane_constructors_compiles(nvcc: str, tmp_path: Path):
    import tvm.s_tir.tensor_intrin  # noqa: F401  (the candidate is tensorized)

    candidate = Path(__file__).parent / "data" / "conv2d20_fp16_candidate.tvmscript"
    module = tvm.script.from_source(candidate.read_text())
    install()
    library = tvm.compile(module, target=tvm.target.Target({"kind": "cuda", "arch": "sm_90"}))
    source = module_cuda_source(library.mod)
    assert source.count("make_uint4(__pack_half2(") == 18  # every gather of eight halves
    (tmp_path / "candidate.cu").write_text(source)
    subprocess.run(
        [
            nvcc,
            "-arch=sm_90",
            "-w",
            "-c",
            "-o",
            str(tmp_path / "candidate.o"),
            str(tmp_path / "candidate.cu"),
        ],
        check=True,
    )


def test_only_constructors_given_twice_their_arguments_are_rewritten():
    code = PACK_HALF2 + "void f(half* __restrict__ A, float* F) {\n"
    calls = [
        "make_uint4(A[0], A[1], A[2], A[3])",  # four words: as it should be
        "make_uint2(A[i], A[i + 1], A[(i + 2)], A[min(i, 3)])",  # four halves: packed
        "make_uint4(F[0], F[1], F[2], F[3], F[4], F[5], F[6], F[7])",  # not half reads: left
    ]
    repaired = repair(code + ";\n".join(calls) + ";\n}")
    assert calls[0] in repaired and calls[2] in repaired
    assert "make_uint2(__pack_half2(A[i], A[i + 1]), __pack_half2(A[(i + 2)], A[min(i, 3)]))" in repaired
    assert repair("int x = make_int4(1, 2, 3, 4);") == "int x = make_int4(1, 2, 3, 4);"


def test_installing_keeps_a_callback_registered_before_and_runs_it_first():
    earlier = tvm.get_global_func(CALLBACK, allow_missing=True)
    try:
        tvm.register_global_func(CALLBACK, lambda code, _target: code + "// seen", override=True)
        install.cache_clear()
        install()
        source = PACK_HALF2 + "x = make_longlong4(0, 1, 2, 3, 4, 5, 6, 7);"
        repaired = tvm.get_global_func(CALLBACK)(source, None)
        assert repaired.endswith("// seen") and "make_longlong4((long long)" in repaired
    finally:
        if earlier is not None:
            tvm.register_global_func(CALLBACK, earlier, override=True)
        install.cache_clear()


def test_the_gpu_check_finds_every_broken_candidate_in_the_kept_tuning_logs(tmp_path: Path):
    """The logs kept for the GPU check hold 81 candidates that failed with TVM's constructors, in
    20 tasks; each is a whole module to build, with its task's unscheduled module beside it."""
    checker = gpu_script("check_cuda_postproc")
    with tarfile.open(Path(__file__).parent / "data" / "make_uint4_tuning_logs.tar.xz") as logs:
        logs.extractall(tmp_path, filter="data")
    found = {log: checker.logged_modules(log) for log in sorted(tmp_path.glob("runs/*/logs/*.log"))}
    assert len(found) == 20 and sum(len(failed) for _, failed in found.values()) == 81
    workload, failed = next(iter(found.values()))
    assert all(not checker.TRACE.match(line) for script in failed for line in script.splitlines())
    import tvm.s_tir.tensor_intrin  # noqa: F401  (the candidates are tensorized)

    for script in (workload, failed[0]):
        assert isinstance(tvm.script.from_source(script)["main"], tvm.tirx.PrimFunc)
