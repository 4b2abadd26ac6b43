"""A MetaSchedule builder that lowers candidates in the tuning process, on a thread pool.

MetaSchedule's ``LocalBuilder`` starts fresh worker processes for every batch. The first CUDA
build in a process imports ``tvm.s_tir.tensor_intrin``, which parses a few hundred TVMScript
functions; on the H100 host (where tvm-ffi also imports torch) that took over 30 s per worker,
so every candidate hit the builder's timeout and tuning measured nothing (15 s per worker on a
bare 2-core machine, where 16 candidates still timed out at 120 s). Building in-process pays
that import once. A build is lowering, CUDA code generation and its compilation (~1.2 s a
candidate on the H100 host). TVM's FFI releases the GIL, so threads lower and generate code in
parallel (here, without compilation: 16 candidates in 1.84 s on one thread, 0.97 s on two); the
compilation overlaps only with nvcc, a subprocess, not with NVRTC, which holds the GIL (H100
host: 20.7 s on one thread, 18.0 s on sixteen), so ``fcm_tvm.tuning`` picks nvcc.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.s_tir.meta_schedule.builder.local_builder import default_build, default_export

from .errors import last_line


@derived_object
class InProcessBuilder(PyBuilder):
    """Build and export candidates here; a failure is that candidate's error, not the batch's."""

    def __init__(self, max_threads: int | None = None) -> None:
        super().__init__()
        self.max_threads = max_threads or os.cpu_count() or 1

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        with ThreadPoolExecutor(self.max_threads) as pool:
            return list(pool.map(build_one, build_inputs))


def build_one(item: BuilderInput) -> BuilderResult:
    """Lower, generate and export one candidate (an exception becomes its error message)."""
    try:
        return BuilderResult(default_export(default_build(item.mod, item.target, None)), None)
    except Exception as error:  # one bad candidate must not stop the search
        return BuilderResult(None, f"InProcessBuilder: {build_error(error)}")


FOLDERS = re.compile(r'(?<![\w.])/(?:[^\s/"()]+/)+')  # "/tmp/tmpx/" of "/tmp/tmpx/tvm_kernels.cu"


def build_error(error: BaseException | str) -> str:
    """The reason a candidate did not build, in one line: for nvcc, its first ``error:`` line with
    the count it ends on (the count alone, "33 errors detected", says nothing of the cause).
    Folders are cut from paths, so that nvcc's temporary ``/tmp/tmpXXXX/`` does not make each
    failure a reason of its own in the tuning summary, which groups candidates by reason."""
    first = next((line.strip() for line in str(error).splitlines() if " error: " in f" {line}"), None)
    last = last_line(error)
    reason = last if first is None or first == last else f"{first} ({last})"
    return FOLDERS.sub("", reason)
