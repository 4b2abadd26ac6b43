"""Kernel time per inference from ``ncu --metrics gpu__time_duration.sum --csv --page raw``.

    python tests/gpu/kernel_summary.py RUNS FILE.csv ...

Per file: the kernels' total time per inference (over ``RUNS`` runs), the launches, the FCM
kernels' share, then the ten kernels that take longest in total.
"""

import csv
import sys
from collections import defaultdict
from pathlib import Path

from fcm_tvm.benchmarks.ncu_bytes import MICROSECONDS
from fcm_tvm.benchmarks.ncu_bytes import TIME_METRIC as TIME


def kernel_times(path: Path) -> dict[str, list[float]]:
    """Microseconds of every launch, by kernel name (ncu's first two rows are a header and units)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith('"')]
    units, *rows = csv.DictReader(lines)
    scale = MICROSECONDS[units[TIME]]
    times: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        times[row["Kernel Name"]].append(float(row[TIME].replace(",", "")) * scale)
    return times


def main() -> None:
    runs = int(sys.argv[1])
    for path in map(Path, sys.argv[2:]):
        times = kernel_times(path)
        total = sum(map(sum, times.values())) / runs
        fcm = sum(sum(t) for name, t in times.items() if name.startswith("fcm")) / runs
        launches = sum(map(len, times.values())) / runs
        print(f"{path.stem}: {total:.1f} us of kernels per inference, {launches:.0f} launches", end="")
        print(f", FCM {fcm:.1f} us")
        for name, t in sorted(times.items(), key=lambda item: -sum(item[1]))[:10]:
            print(f"  {sum(t) / runs:8.1f} us  x{len(t) / runs:4.1f}  {name[:70]}")


if __name__ == "__main__":
    main()
