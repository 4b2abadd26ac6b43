"""What one tile knob gains in a check_fcm_kernels.py sweep: per chain (``layer``), the kernel
with the knob at 1 against the fastest correct kernel with it above 1, the other knobs as they
are. Usage: python tests/gpu/knob_gain.py SWEEP.json KNOB [-o TABLE.md], e.g. ``patch_reuse``."""

from __future__ import annotations

import argparse
import json
import math


def gains(rows: list[dict], knob: str) -> list[tuple[str, float, float, int]]:
    """(layer, microseconds at 1, best microseconds above 1, its knob value) per chain that has both."""
    at_one: dict[str, float] = {}
    best: dict[str, tuple[float, int]] = {}
    for row in rows:
        if not row.get("ok"):
            continue
        layer, value, us = row["layer"], row["tiles"][knob], row["fcm_us"]
        if value == 1:
            at_one[layer] = min(us, at_one.get(layer, math.inf))
        elif us < best.get(layer, (math.inf, 0))[0]:
            best[layer] = (us, value)
    return [(layer, at_one[layer], *best[layer]) for layer in at_one if layer in best]


def table(found: list[tuple[str, float, float, int]], knob: str) -> list[str]:
    """A Markdown table of :func:`gains`, and their geometric mean last."""
    header = f"| chain | {knob} 1 (us) | best above 1 (us) | {knob} | speed-up |"
    lines = [header, "|---|---:|---:|---:|---:|"]
    for layer, one, us, value in found:
        lines.append(f"| {layer} | {one:.2f} | {us:.2f} | {value} | {one / us:.3f} |")
    if found:
        geomean = math.exp(sum(math.log(one / us) for _, one, us, _ in found) / len(found))
        wins = sum(one > us for _, one, us, _ in found)
        lines.append(f"| geometric mean of {len(found)} ({wins} faster) | | | | {geomean:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("knob")
    parser.add_argument("-o", "--output", help="also write the table here")
    args = parser.parse_args()
    with open(args.sweep) as file:
        lines = table(gains(json.load(file), args.knob), args.knob)
    print("\n".join(lines))
    if args.output:
        with open(args.output, "w") as file:
            file.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
