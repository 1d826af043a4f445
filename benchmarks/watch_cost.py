#!/usr/bin/env python3
"""What a resident `gpunode watch` costs the node (issue 22: <= 0.5 % of one core, RSS <= 60 MB
over 10 minutes on the lent GPU): it starts the watcher as systemd would (shadow mode, its state
in a temp dir, the kernel log and NVML events on, the gate checks every --poll seconds), samples
/proc/<pid>/stat and /status every second, and reports CPU as a share of one core (its own time,
and with the commands its polls run: journalctl/dmesg for the Xid check) and RSS (median, max),
both for the whole run and after the start-up (the first poll and the imports).

    PYTHONPATH=agent python3 benchmarks/watch_cost.py --minutes 10 --json watch-cost.json
    PYTHONPATH=agent python3 benchmarks/watch_cost.py --dry --json out.json   # a few seconds, no GPU
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--poll", type=float, default=10.0, help="the watcher's poll interval (its default: 10)")
    parser.add_argument("--dry", action="store_true", help="a few seconds, no NVML events (no GPU needed)")
    parser.add_argument("--json", help="write the figures here")
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
        try:
            while time.monotonic() - started < seconds and proc.poll() is None:
                s = sample(proc.pid)
                if s:
                    samples.append(s)
                time.sleep(1.0)
            with open(os.path.join(tmp, "run", "health.json")) as fh:
                state = json.load(fh)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
    steady = [s for s in samples if s["t"] - started >= (2.0 if args.dry else STARTUP_S)]
    result = {"schema": "gpunode.watch_cost/1", "host": platform.node(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "dry": args.dry, "argv": argv[1:], "exit_code": proc.returncode,
              "whole_run": cost(samples), "after_startup": cost(steady) if len(steady) > 1 else {},
              "targets": {"cpu_pct": 0.5, "rss_mb": 60}, "sources": state.get("sources"),
              "polls_status": state.get("poll", {}).get("status"), "problems": state.get("problems"),
              "stderr_tail": err.strip().splitlines()[-5:]}
    steady_cost = result["after_startup"] or result["whole_run"]
    print(f"gpunode watch over {steady_cost.get('wall_s')} s after start-up: CPU {steady_cost.get('cpu_pct_own')} % of "
          f"one core ({steady_cost.get('cpu_pct_with_children')} % with its polls' commands; target <= 0.5), RSS "
          f"median {steady_cost.get('rss_mb_median')} MB, max {steady_cost.get('rss_mb_max')} MB (target <= 60)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")
    return 0 if proc.returncode == 0 and samples else 1


if __name__ == "__main__":
    sys.exit(main())
