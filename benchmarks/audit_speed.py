#!/usr/bin/env python3
"""Wall time of `gpunode audit` (process start to exit) and of `gpunode --help` on this host.

A benchmark, not a test: run it on a real GPU node. Prints a table and writes JSON (-o).
Target (issue 2): a full audit under 1 s on an H100 node; --help instant.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time


def timed(argv: list[str], runs: int) -> dict:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)  # noqa: S603
        times.append(time.perf_counter() - started)
    return {"argv": argv, "runs": runs, "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("-o", "--output", help="write the figures as JSON here")
    args = parser.parse_args()
    gpunode = shutil.which("gpunode") or sys.exit("gpunode not on PATH")
    rows = {
        "gpunode --help": timed([gpunode, "--help"], args.runs),
        "gpunode audit --json": timed([gpunode, "audit", "--json"], args.runs),
        "gpunode audit (table)": timed([gpunode, "audit"], args.runs),
    }
    if shutil.which("nvidia-smi"):
        rows["nvidia-smi -q (reference)"] = timed(["nvidia-smi", "-q"], args.runs)
    for name, row in rows.items():
        print(f"{name:32s} median {row['median_s']:.3f} s  (min {row['min_s']:.3f}, max {row['max_s']:.3f}, n={row['runs']})")
    if args.output:
        with open(args.output, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
