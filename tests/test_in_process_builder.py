"""A candidate that fails to build is reported by its cause, not only by nvcc's error count."""

from __future__ import annotations

from fcm_tvm.in_process_builder import build_error

NVCC_OUTPUT = """Traceback (most recent call last):
  File "tvm/contrib/nvcc.py", line 120, in compile_cuda
RuntimeError: Compilation error:
/tmp/tmpx/tvm_kernels.cu(41): error: no operator "+=" matches these operands
/tmp/tmpx/tvm_kernels.cu(57): error: identifier "half4" is undefined
2 errors detected in the compilation of "/tmp/tmpx/tvm_kernels.cu".
"""


def test_an_nvcc_failure_names_its_first_error_and_the_count_without_the_temporary_folder() -> None:
    assert build_error(RuntimeError(NVCC_OUTPUT)) == (
        'tvm_kernels.cu(41): error: no operator "+=" matches these operands'
        ' (2 errors detected in the compilation of "tvm_kernels.cu".)'
    )
    elsewhere = NVCC_OUTPUT.replace("/tmp/tmpx/", "/tmp/tmp8f3k_q/")
    assert build_error(RuntimeError(elsewhere)) == build_error(RuntimeError(NVCC_OUTPUT))


def test_any_other_failure_is_its_last_line() -> None:
    assert build_error(ValueError("lowering failed\n  at pass X\nInternalError: bad loop")) == (
        "InternalError: bad loop"
    )
