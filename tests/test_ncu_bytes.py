"""DRAM and L2 bytes per workload are read off an ncu CSV between marker kernels."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from fcm_tvm.benchmarks.ncu_bytes import bytes_per_workload, kernel_rows

HEADER = '"ID","Kernel Name","dram__bytes_read.sum","dram__bytes_write.sum","lts__t_bytes.sum"'
UNITS = '"","","Mbyte","Kbyte","byte"'


def ncu_csv(tmp_path: Path, kernels: list[tuple[str, str, str, str]]) -> Path:
    rows = [f'"{i}","{name}","{read}","{write}","{l2}"' for i, (name, read, write, l2) in enumerate(kernels)]
    path = tmp_path / "ncu.csv"
    path.write_text("\n".join(["==PROF== Connected to process", HEADER, UNITS, *rows]) + "\n")
    return path


def test_units_are_scaled_and_thousands_separators_dropped(tmp_path: Path):
    (row,) = kernel_rows(ncu_csv(tmp_path, [("fcm_0_kernel", "1.5", "2,000", "3000")]))
    assert (row["name"], row["bytes"], row["l2_bytes"]) == ("fcm_0_kernel", 1.5e6 + 2e6, 3000.0)
    assert math.isnan(row["gpu_us"]), "a CSV without gpu__time_duration has no kernel time"


@pytest.mark.parametrize("unit", ["nsecond", "ns"])
def test_kernel_times_are_read_in_microseconds_and_summed_per_workload(tmp_path: Path, unit: str):
    path = tmp_path / "ncu.csv"
    header = HEADER + ',"gpu__time_duration.sum"'
    rows = [
        '"0","vectorized_elementwise_kernel","0","0","0","1,000"',
        '"1","conv_dw_kernel","1","0","0","2,500"',
        '"2","conv_pw_kernel","1","0","0","1,500"',
        '"3","vectorized_elementwise_kernel","0","0","0","1,000"',
    ]
    path.write_text("\n".join([header, UNITS + f',"{unit}"', *rows]) + "\n")
    (measured,) = bytes_per_workload(kernel_rows(path), [{"variant": "stock"}])
    assert measured["gpu_us"] == pytest.approx(4.0)
    assert measured["kernels"] == 2


def test_kernels_between_markers_belong_to_one_workload_and_flushes_are_not_counted(tmp_path: Path):
    kernels = [
        ("at::reduce_kernel<flush>", "500", "0", "900"),
        ("vectorized_elementwise_kernel", "9", "9", "9"),
        ("fcm_0_kernel", "1", "1", "10"),
        ("at::reduce_kernel<flush>", "500", "0", "900"),
        ("vectorized_elementwise_kernel", "9", "9", "9"),
        ("conv_dw_kernel", "2", "0", "20"),
        ("conv_pw_kernel", "3", "0", "30"),
        ("vectorized_elementwise_kernel", "9", "9", "9"),
    ]
    order = [{"chain": 0, "variant": "fcm"}, {"chain": 0, "variant": "stock"}]
    measured = bytes_per_workload(kernel_rows(ncu_csv(tmp_path, kernels)), order)
    assert [(m["variant"], m["bytes"], m["l2_bytes"], m["kernels"]) for m in measured] == [
        ("fcm", 1e6 + 1e3, 10.0, 1),
        ("stock", 5e6, 50.0, 2),
    ]


def test_an_unclosed_or_missing_segment_is_an_error_not_a_shifted_table(tmp_path: Path):
    kernels = [("vectorized_elementwise_kernel", "0", "0", "0"), ("fcm_0_kernel", "1", "0", "0")]
    with pytest.raises(ValueError, match="0 marker-delimited segments for 2 workloads"):
        bytes_per_workload(kernel_rows(ncu_csv(tmp_path, kernels)), [{}, {}])


def test_a_unit_the_parser_does_not_know_is_an_error_not_a_silent_factor(tmp_path: Path):
    path = tmp_path / "ncu.csv"
    path.write_text("\n".join([HEADER, '"","","Mbyte","Kbyte","furlong"', '"0","k","1","1","1"']) + "\n")
    with pytest.raises(ValueError, match="furlong"):
        kernel_rows(path)
