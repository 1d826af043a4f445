#!/usr/bin/env python3
"""What a resident `gpunode watch` costs the node (issue 22: <= 0.5 % of one core, RSS <= 60 MB
over 10 minutes on the lent GPU): it starts the watcher as systemd would (shadow mode, its state
in a temp dir, the kernel log and NVML events on, the gate checks every --poll seconds), samples
/proc/<pid>/stat and /status every second, and reports CPU as a share of one core (its own time,
and with the commands its polls run: journalctl/dmesg for the Xid check) and RSS (median, max),
both for the whole run and after the start-up (the first poll and the imports).

    PYTHONPATH=agent python3 benchmarks/watch_cost.py --minutes 10 --json watch-cost.json
    PYTHONPATH=agent python3 benchmarks/watch_cost.py --dry --json out.json   # a few seconds, no GPU

--gpu-load-from S starts a GPU load beside the watcher S seconds in (a bf16 matmul loop through
torch, about half busy, until the end): a node running a job, whose clock and power events wake
the watcher's NVML thread. The figures are then given for the idle part and the loaded part too,
each with the CPU of every thread of the watcher (by thread id, in the order they started: the
main loop, then the NVML, kernel-log and poll threads; a poll's worker thread comes and goes).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TICKS = os.sysconf("SC_CLK_TCK")
STARTUP_S = 15.0  # imports, the first poll, NVML's init: reported apart


def sample(pid: int) -> dict | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rpartition(")")[2].split()
        with open(f"/proc/{pid}/status") as fh:
            rss_kb = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None
    utime, stime, cutime, cstime = (int(fields[i]) for i in (11, 12, 13, 14))  # fields 14-17
    return {"t": time.monotonic(), "own_s": (utime + stime) / TICKS, "children_s": (cutime + cstime) / TICKS,
            "rss_mb": rss_kb / 1024}


def cost(samples: list[dict]) -> dict:
    first, last = samples[0], samples[-1]
    wall = last["t"] - first["t"]
    if wall <= 0:
        return {}
    rss = [s["rss_mb"] for s in samples]
    return {"wall_s": round(wall, 1), "cpu_pct_own": round(100 * (last["own_s"] - first["own_s"]) / wall, 3),
            "cpu_pct_with_children": round(100 * (last["own_s"] + last["children_s"] - first["own_s"]
                                                  - first["children_s"]) / wall, 3),
            "rss_mb_median": round(statistics.median(rss), 1), "rss_mb_max": round(max(rss), 1)}


GPU_LOAD = """
import sys, time
import torch
x = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    for _ in range(20):
        y = x @ x
    torch.cuda.synchronize()
    time.sleep(0.05)
"""


def threads(pid: int) -> dict[str, float]:
    """Thread id -> its CPU seconds so far, in the order the threads started."""
    found = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return {}
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                fields = fh.read().rpartition(")")[2].split()
        except OSError:
            continue  # a poll's worker that just ended
        found.append((int(fields[19]), tid, (int(fields[11]) + int(fields[12])) / TICKS))  # field 22: starttime
    return {tid: cpu for _, tid, cpu in sorted(found)}


def phase(samples: list[dict], start: float, end: float, before: dict, after: dict) -> dict:
    """The figures of the samples in [start, end), and each thread's share of one core."""
    part = [s for s in samples if start <= s["t"] < end]
    if len(part) < 2:
        return {}
    figures = cost(part)
    wall = part[-1]["t"] - part[0]["t"]
    figures["threads_cpu_pct"] = {tid: round(100 * (cpu - before.get(tid, 0.0)) / wall, 3)
                                  for tid, cpu in after.items()}
    return figures


def start_load(seconds: float, log: str):
    """The GPU load child, or why there is none."""
    try:
        return subprocess.Popen([sys.executable, "-c", GPU_LOAD, f"{seconds:.0f}"], stdout=subprocess.DEVNULL,
                                stderr=open(log, "w")), None
    except OSError as exc:
        return None, f"cannot start the GPU load: {exc}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=10.0, help="the watcher's poll interval (its default: 10)")
    parser.add_argument("--dry", action="store_true", help="a few seconds, no NVML events (no GPU needed)")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--gpu-load-from", type=float, metavar="S",
                        help="start a GPU load (torch) S seconds in, until the end")
    args = parser.parse_args()
    seconds = 5.0 if args.dry else args.minutes * 60
    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "gpunode", "watch", "--shadow", "--state-dir", os.path.join(tmp, "run"),
                "--poll", f"{2.0 if args.dry else args.poll:g}", "--textfile", os.path.join(tmp, "watch.prom")]
        if args.dry:
            fifo = os.path.join(tmp, "kmsg")
            os.mkfifo(fifo)
            argv += ["--no-nvml", "--kmsg", fifo]
        env = dict(os.environ, GPUNODE_STATE_DIR=os.path.join(tmp, "state"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.path.join(os.path.dirname(__file__), "..", "agent"),
                                                          env.get("PYTHONPATH")]))
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        samples: list[dict] = []
        started = time.monotonic()
        load, load_said, marks = None, None, {}
        load_at = None if args.gpu_load_from is None else started + args.gpu_load_from
        try:
            while time.monotonic() - started < seconds and proc.poll() is None:
                now = time.monotonic()
                if "steady" not in marks and now - started >= (2.0 if args.dry else STARTUP_S):
                    marks["steady"] = (now, threads(proc.pid))
                if load_at is not None and load is None and load_said is None and now >= load_at:
                    marks["load"] = (now, threads(proc.pid))
                    load, load_said = start_load(started + seconds - now, os.path.join(tmp, "load.err"))
                s = sample(proc.pid)
                if s:
                    samples.append(s)
                time.sleep(1.0)
            marks["end"] = (time.monotonic(), threads(proc.pid))
            with open(os.path.join(tmp, "run", "health.json")) as fh:
                state = json.load(fh)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            if load is not None:
                ended = load.poll()  # before the kill: a load that failed on its own (no torch, no GPU)
                load.kill()
                load.wait()
                if ended not in (None, 0):
                    with open(os.path.join(tmp, "load.err")) as fh:
                        last = (fh.read().strip().splitlines() or ["no output"])[-1]
                    load_said = f"the GPU load failed (exit {ended}): {last}"
    steady = [s for s in samples if s["t"] - started >= (2.0 if args.dry else STARTUP_S)]
    result = {"schema": "gpunode.watch_cost/1", "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "dry": args.dry, "argv": argv[1:], "exit_code": proc.returncode,
              "whole_run": cost(samples), "after_startup": cost(steady) if len(steady) > 1 else {},
              "targets": {"cpu_pct": 0.5, "rss_mb": 60}, "sources": state.get("sources"),
              "polls_status": state.get("poll", {}).get("status"), "problems": state.get("problems"),
              "counts": state.get("counts"), "stderr_tail": err.strip().splitlines()[-5:]}
    if "steady" in marks:
        upto = marks.get("load", marks["end"])
        result["idle"] = phase(samples, marks["steady"][0], upto[0], marks["steady"][1], upto[1])
    if "load" in marks and load_said is None:
        result["under_gpu_load"] = phase(samples, marks["load"][0], marks["end"][0] + 1, marks["load"][1],
                                         marks["end"][1])
    if "load" in marks:
        result["gpu_load"] = load_said or "torch bf16 8192x8192 matmul, 20 per 50 ms pause"
    steady_cost = result["after_startup"] or result["whole_run"]
    print(f"gpunode watch over {steady_cost.get('wall_s')} s after start-up: CPU {steady_cost.get('cpu_pct_own')} % of "
          f"one core ({steady_cost.get('cpu_pct_with_children')} % with its polls' commands; target <= 0.5), RSS "
          f"median {steady_cost.get('rss_mb_median')} MB, max {steady_cost.get('rss_mb_max')} MB (target <= 60)")
    for name in ("idle", "under_gpu_load"):
        if result.get(name):
            print(f"  {name}: CPU {result[name]['cpu_pct_own']} % over {result[name]['wall_s']} s; by thread "
                  f"{result[name]['threads_cpu_pct']}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
    return 0 if proc.returncode == 0 and samples else 1


if __name__ == "__main__":
    sys.exit(main())
