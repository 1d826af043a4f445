#!/usr/bin/env python3
"""Wall time of `gpunode gate` (process start to exit) beside the nvidia-smi query a hand-made
prolog would run, measured in the same run, interleaved so both see the same machine state.

A benchmark, not a test: run it on a real GPU node (the lent H100). Prints a table and writes
JSON (-o). Target (issue 6): gate median <= 0.3 s and <= 2x the nvidia-smi call.

    .venv/bin/python benchmarks/gate_speed.py --runs 15 -o gate-speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=name,persistence_mode,ecc.errors.uncorrected.volatile.total",
                    "--format=csv"]
TARGET_S = 0.3
TARGET_RATIO = 2.0


def once(argv: list[str]) -> tuple[float, int, str]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    return time.perf_counter() - started, proc.returncode, proc.stdout


def summarise(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"runs": len(times), "median_s": round(statistics.median(times), 4), "min_s": round(ordered[0], 4),
            "max_s": round(ordered[-1], 4), "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command (>= 10)")
    parser.add_argument("--gpunode", help="the gpunode executable (default: on PATH, else this Python -m gpunode)")
    parser.add_argument("--snapshot", help="also time the gate replaying this snapshot (no NVML)")
    parser.add_argument("-o", "--output", help="write the figures as JSON here")
    args = parser.parse_args()
    if args.runs < 10:
        parser.error("--runs must be at least 10 (the median of >= 10 runs is the figure)")
    gpunode = [args.gpunode] if args.gpunode else ([shutil.which("gpunode")] if shutil.which("gpunode")
                                                    else [sys.executable, "-m", "gpunode"])
    commands = {
        "gpunode gate": [*gpunode, "gate"],
        "gpunode gate --json": [*gpunode, "gate", "--json"],
        "python3 -c pass (interpreter start)": [sys.executable, "-c", "pass"],
    }
    if args.snapshot:
        commands["gpunode gate --snapshot"] = [*gpunode, "gate", "--snapshot", args.snapshot]
    has_smi = shutil.which("nvidia-smi") is not None
    if has_smi:
        commands["nvidia-smi --query-gpu (3 fields)"] = NVIDIA_SMI_QUERY
    else:
        print("nvidia-smi not found: no reference figure (run this on a GPU node)", file=sys.stderr)

    times: dict[str, list[float]] = {name: [] for name in commands}
    codes: dict[str, set[int]] = {name: set() for name in commands}
    for argv in commands.values():
        once(argv)  # warm-up: page cache, NVML/driver state
    for _ in range(args.runs):
        for name, argv in commands.items():  # interleaved: same conditions for each command
            seconds, rc, _out = once(argv)
            times[name].append(seconds)
            codes[name].add(rc)
    _, _, gate_json = once([*gpunode, "gate", "--json"])

    rows = {name: {"argv": argv, **summarise(times[name]), "exit_codes": sorted(codes[name])}
            for name, argv in commands.items()}
    gate_s = rows["gpunode gate"]["median_s"]
    smi_s = rows.get("nvidia-smi --query-gpu (3 fields)", {}).get("median_s")
    ratio = round(gate_s / smi_s, 2) if smi_s else None
    verdict = {
        "gate_median_s": gate_s,
        "nvidia_smi_median_s": smi_s,
        "ratio": ratio,
        "target_s": TARGET_S,
        "target_ratio": TARGET_RATIO,
        "meets_time": gate_s <= TARGET_S,
        "meets_ratio": ratio is not None and ratio <= TARGET_RATIO,
    }
    try:
        doc = json.loads(gate_json)
        gate_info = {"status": doc.get("status"), "in_process_s": doc.get("duration_s"),
                     "checks": len(doc.get("checks", [])), "summary": doc.get("summary")}
    except ValueError:
        gate_info = {"error": "gpunode gate --json did not print JSON"}

    width = max(len(n) for n in rows)
    print(f"{'command':{width}s}  median    min      p90      max     exit")
    for name, row in rows.items():
        print(f"{name:{width}s}  {row['median_s']:.3f} s  {row['min_s']:.3f} s  {row['p90_s']:.3f} s  "
              f"{row['max_s']:.3f} s  {','.join(map(str, row['exit_codes']))}")
    print(f"gate in-process (checks + verdict): {gate_info.get('in_process_s')} s, "
          f"{gate_info.get('checks')} results, status {gate_info.get('status')}")
    if ratio is not None:
        print(f"gate / nvidia-smi = {ratio:.2f}x (target <= {TARGET_RATIO:g}x): "
              f"{'met' if verdict['meets_ratio'] else 'MISSED'}")
    print(f"gate median {gate_s:.3f} s (target <= {TARGET_S} s): {'met' if verdict['meets_time'] else 'MISSED'}")
    if args.output:
        result = {"schema": "gpunode.gate_speed/1", "host": platform.node(),
                  "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": platform.python_version(),
                  "commands": rows, "verdict": verdict, "gate": gate_info}
        if has_smi:
            result["gpus"] = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,  # noqa: S603
                                            check=False).stdout.splitlines()
        with open(args.output, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
