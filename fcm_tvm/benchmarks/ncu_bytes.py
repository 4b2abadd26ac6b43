"""DRAM bytes and GPU time per workload from an ``ncu`` CSV of ``layers --profile-run``.

The profile run launches, before every workload, a read-only pass over a buffer larger than L2
(a torch reduction: it leaves L2 holding clean lines of no use, so the workload starts cold and
no write-back of earlier data is billed to it) and then a marker kernel (a torch elementwise
add); the kernels ncu lists between two markers, flushes excluded, belong to that workload, in
the order written to ``profile_order.json``. Both ledgers of the cost model are measured: DRAM
bytes (``dram__bytes``) and L2 requests (``lts__t_bytes``). With ``gpu__time_duration`` also
collected, each workload gets the summed GPU time of its kernels (``gpu_us``, from a cold L2):
what a chain costs once CUDA graphs have removed the launch overhead that the layer benchmark's
wall-clock times include. Run on the GPU host::

    ncu --cache-control none --metrics \\
        dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum,gpu__time_duration.sum \\
        --csv --page raw --log-file OUT/ncu.csv \\
        python -m fcm_tvm.benchmarks.layers --profile-run --out OUT ...
    python -m fcm_tvm.benchmarks.ncu_bytes OUT
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

DRAM_METRICS = ("dram__bytes_read.sum", "dram__bytes_write.sum")
L2_METRIC = "lts__t_bytes.sum"
TIME_METRIC = "gpu__time_duration.sum"
MARKER = "elementwise_kernel"
FLUSH = "reduce_kernel"
UNIT_SCALE = {"byte": 1, "Kbyte": 1e3, "Mbyte": 1e6, "Gbyte": 1e9, "KB": 1e3, "MB": 1e6, "GB": 1e9}
# ncu spells time units both ways ("ns" with --page raw on the H100 host, "nsecond" elsewhere)
MICROSECONDS = {
    "ns": 1e-3,
    "nsecond": 1e-3,
    "us": 1.0,
    "usecond": 1.0,
    "ms": 1e3,
    "msecond": 1e3,
    "s": 1e6,
    "second": 1e6,
}


def kernel_rows(csv_path: Path) -> list[dict]:
    """(name, DRAM bytes, L2 bytes, GPU microseconds) of every profiled kernel in launch order;
    a metric the CSV lacks is NaN."""
    lines = csv_path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('"ID"'))
    reader = csv.DictReader(lines[start:])
    units = next(reader)  # the second row holds units

    def value(row: dict, metric: str, scale: dict[str, float]) -> float:
        if metric not in row:
            return float("nan")
        if units[metric] not in scale:
            raise ValueError(f"ncu reports {metric} in {units[metric]!r}, a unit this parser does not know")
        return float(row[metric].replace(",", "")) * scale[units[metric]]

    return [
        {
            "name": row["Kernel Name"],
            "bytes": sum(value(row, metric, UNIT_SCALE) for metric in DRAM_METRICS),
            "l2_bytes": value(row, L2_METRIC, UNIT_SCALE),
            "gpu_us": value(row, TIME_METRIC, MICROSECONDS),
        }
        for row in reader
    ]


def bytes_per_workload(rows: list[dict], order: list[dict]) -> list[dict]:
    """Attach to each workload of ``order`` the bytes, GPU time and kernel count between its markers."""
    segments, current = [], None
    for row in rows:
        if MARKER in row["name"]:
            if current is not None:
                segments.append(current)
            current = {"bytes": 0.0, "l2_bytes": 0.0, "gpu_us": 0.0, "kernels": 0}
        elif current is not None and FLUSH not in row["name"]:
            for measure in ("bytes", "l2_bytes", "gpu_us"):
                current[measure] += row[measure]
            current["kernels"] += 1
    if len(segments) != len(order):
        raise ValueError(f"{len(segments)} marker-delimited segments for {len(order)} workloads")
    return [{**entry, **segment} for entry, segment in zip(order, segments)]


def main(argv: list[str] | None = None) -> int:
    out = Path((argv or sys.argv[1:])[0])
    measured = bytes_per_workload(
        kernel_rows(out / "ncu.csv"), json.loads((out / "profile_order.json").read_text())
    )
    (out / "dram_bytes.json").write_text(json.dumps(measured, indent=1))
    for entry in measured:
        print(
            f"{entry['case']:32s} {entry['chain']:3d} {entry['variant']:12s} {entry['bytes'] / 1e6:9.3f} MB "
            f"DRAM {entry['l2_bytes'] / 1e6:9.3f} MB L2 {entry['gpu_us']:8.2f} us {entry['kernels']} kernels"
            f"  {entry['shape']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
