"""Kernel times of check_fcm_kernels.py runs compared, as Markdown tables with a geometric mean:

    python tests/gpu/compare_runs.py ab BEFORE.json AFTER.json [-o TABLE.md]
    python tests/gpu/compare_runs.py knob SWEEP.json KNOB [-o TABLE.md]

``ab``: the same kernels before and after a change of the kernel, each kernel's time in both
runs (those correct in both). ``knob``: what one tile knob (``patch_reuse``, say) gains in one
sweep, per chain (``layer``): the kernel with the knob at 1 against the fastest correct kernel
with it above 1, the other knobs as they are."""

from __future__ import annotations

import argparse
import json
import math

from fcm_tvm.benchmarks.combine import geomean


def correct_rows(path: str) -> list[dict]:
    with open(path) as file:
        return [row for row in json.load(file) if row.get("ok")]


def ab_table(before_path: str, after_path: str) -> list[str]:
    """Each kernel both runs timed, after over before."""
    before = {row["name"]: row["fcm_us"] for row in correct_rows(before_path)}
    after = {row["name"]: row["fcm_us"] for row in correct_rows(after_path)}
    names = [name for name in before if name in after]
    lines = ["| kernel | before (us) | after (us) | after/before |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {before[n]:.2f} | {after[n]:.2f} | {after[n] / before[n]:.3f} |" for n in names]
    if names:
        ratio = geomean([after[n] / before[n] for n in names])
        lines.append(f"| geometric mean of {len(names)} | | | {ratio:.3f} |")
    return lines


def knob_gains(rows: list[dict], knob: str) -> list[tuple[str, float, float, int]]:
    """(layer, microseconds at 1, best microseconds above 1, its knob value) per chain with both."""
    at_one: dict[str, float] = {}
    best: dict[str, tuple[float, int]] = {}
    for row in rows:
        layer, value, us = row["layer"], row["tiles"][knob], row["fcm_us"]
        if value == 1:
            at_one[layer] = min(us, at_one.get(layer, math.inf))
        elif us < best.get(layer, (math.inf, 0))[0]:
            best[layer] = (us, value)
    return [(layer, at_one[layer], *best[layer]) for layer in at_one if layer in best]


def knob_table(sweep_path: str, knob: str) -> list[str]:
    """:func:`knob_gains` of a sweep, speed-up over the knob at 1."""
    found = knob_gains(correct_rows(sweep_path), knob)
    header = f"| chain | {knob} 1 (us) | best above 1 (us) | {knob} | speed-up |"
    lines = [header, "|---|---:|---:|---:|---:|"]
    lines += [f"| {layer} | {one:.2f} | {us:.2f} | {v} | {one / us:.3f} |" for layer, one, us, v in found]
    if found:
        faster = sum(one > us for _, one, us, _ in found)
        ratio = geomean([one / us for _, one, us, _ in found])
        lines.append(f"| geometric mean of {len(found)} ({faster} faster) | | | | {ratio:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", help="also write the table here")
    modes = parser.add_subparsers(dest="mode", required=True)
    ab = modes.add_parser("ab", help="the same kernels before and after a change")
    ab.add_argument("before")
    ab.add_argument("after")
    knob = modes.add_parser("knob", help="what one tile knob gains per chain in a sweep")
    knob.add_argument("sweep")
    knob.add_argument("knob")
    args = parser.parse_args()
    lines = ab_table(args.before, args.after) if args.mode == "ab" else knob_table(args.sweep, args.knob)
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as file:
            file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
