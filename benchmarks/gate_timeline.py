#!/usr/bin/env python3
"""Where one `gpunode gate` run spends its time: milestones (ms after the script starts, i.e.
after the interpreter and site) of the NVML read in its thread and of the main thread's imports,
checks and report; each figure the median over --runs fresh processes. A benchmark, not a test:
run it on a GPU node (the lent H200).

    PYTHONPATH=agent python3 benchmarks/gate_timeline.py --runs 11 -o gate-timeline.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import sys, time
T0 = time.perf_counter()
marks = []
def mark(what):
    marks.append((what, (time.perf_counter() - T0) * 1000))
if INTERVAL:
    sys.setswitchinterval(INTERVAL)
import gpunode.host.gpu.source as source
import gpunode.host.gpu.nvml as nvml
import gpunode.slurm.fastpath as fastpath
mark("fastpath and GPU source imported")
real_preload, real_collect, real_publish = nvml.preload, source.LiveGpuSource._collect, source.LiveGpuSource._publish
def preload():
    real_preload(); mark("pynvml imported")
def collect(self):
    mark("NVML thread started"); real_collect(self); mark("NVML thread done (after nvmlShutdown)")
def publish(self, inventory):
    mark("NVML inventory published"); real_publish(self, inventory)
nvml.preload, source.LiveGpuSource._collect, source.LiveGpuSource._publish = preload, collect, publish
real_prepare = fastpath.prepare
def prepare(*args, **kwargs):
    mark("prepare: config, profile, checks")
    run = real_prepare(*args, **kwargs)
    mark("prepare done")
    gate = sys.modules["gpunode.slurm.gate"]
    real_run_gate = gate.run_gate
    def run_gate(r):
        verdict = real_run_gate(r); mark("checks done"); return verdict
    gate.run_gate = run_gate
    return run
fastpath.prepare = prepare
import io, contextlib
with contextlib.redirect_stdout(io.StringIO()):
    code = fastpath.fast_main(sys.argv[1:])
mark("report printed")
print("MARKS" + repr(marks))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--intervals", default="0", help="GIL switch intervals to compare (s; 0: Python's default)")
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    result = {}
    for interval in [float(x) for x in args.intervals.split(",")]:
        runs: dict[str, list[float]] = {}
        for _ in range(args.runs):
            code = CHILD.replace("INTERVAL", repr(interval))
            proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)  # noqa: S603
            line = next((x for x in proc.stdout.splitlines() if x.startswith("MARKS")), None)
            if line is None:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 1
            for what, ms in eval(line[5:]):  # noqa: S307 - our own child's repr of (str, float) pairs
                runs.setdefault(what, []).append(ms)
        medians = {what: round(statistics.median(v), 2) for what, v in runs.items()}
        result[f"switch_interval_{interval or 'default'}"] = medians
        print(f"switch interval {interval or 'default'}:")
        for what, ms in sorted(medians.items(), key=lambda kv: kv[1]):
            print(f"  {ms:8.2f} ms  {what}")
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
