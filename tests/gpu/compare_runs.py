"""Two check_fcm_kernels.py runs of the same kernels side by side (an A/B of a kernel change):
each kernel's time before and after, and the geometric mean of after/before over those both
ran correctly. Usage: python tests/gpu/compare_runs.py BEFORE.json AFTER.json [-o TABLE.md]"""

from __future__ import annotations

import argparse
import json
import math


def timed(path: str) -> dict[str, float]:
    """Kernel name -> microseconds, for the kernels of a run that were correct."""
    with open(path) as file:
        rows = json.load(file)
    return {row["name"]: row["fcm_us"] for row in rows if row.get("ok")}


def table(before: dict[str, float], after: dict[str, float]) -> list[str]:
    """A Markdown table of the kernels both runs timed, and the geometric mean last."""
    names = [name for name in before if name in after]
    lines = ["| kernel | before (us) | after (us) | after/before |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {before[n]:.2f} | {after[n]:.2f} | {after[n] / before[n]:.3f} |" for n in names]
    if names:
        geomean = math.exp(sum(math.log(after[n] / before[n]) for n in names) / len(names))
        lines.append(f"| geometric mean of {len(names)} | | | {geomean:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("-o", "--output", help="also write the table here")
    args = parser.parse_args()
    lines = table(timed(args.before), timed(args.after))
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as file:
            file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
