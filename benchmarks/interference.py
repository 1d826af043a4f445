#!/usr/bin/env python3
"""Does `gpunode bench --compare` notice a co-running process? One run on one GPU:

1. idle: the bench alone must PASS;
2. calibration: a second process (its own CUDA context, as another job's) runs small bf16 GEMMs
   at a duty cycle (busy for d x 20 ms, asleep for the rest); a plain torch GEMM loop measures the
   slowdown each duty cycle causes, and the duty cycles for a ~5 % and a ~10 % slowdown are
   interpolated;
3. for each of the two loads: the plain torch slowdown is measured right before and after the
   bench, with the same load running; the bench must flag the figures, naming the interference.

    PYTHONPATH=agent python3 benchmarks/interference.py --out DIR [--gpu 0] [--state-dir DIR]

Writes DIR/interference.json (the figures and verdicts), DIR/bench-{idle,load5,load10}.json (the
bench results with telemetry) and DIR/interference.log (every command's output). The main process
never touches CUDA: the bench must see the load as the only process besides itself. A script,
not a test: it needs a GPU and torch. Exit 0 when idle PASSed and both loads were flagged.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

SIZE = 8192
LOAD_SIZE = 4096
PERIOD_S = 0.02
GRID = (0.05, 0.1, 0.2, 0.35)
TARGETS = (("load5", 0.05), ("load10", 0.10))


def load_worker(gpu: int, duty, ready, stop) -> None:
    """Small GEMMs for duty x PERIOD_S, then sleep for the rest of the period; duty may change."""
    import torch

    dev = torch.device(f"cuda:{gpu}")
    a = torch.randn(LOAD_SIZE, LOAD_SIZE, dtype=torch.bfloat16, device=dev)
    b = torch.randn(LOAD_SIZE, LOAD_SIZE, dtype=torch.bfloat16, device=dev)
    c = torch.empty_like(a)
    torch.matmul(a, b, out=c)
    torch.cuda.synchronize(dev)
    ready.set()
    while not stop.is_set():
        d = duty.value
        start = time.perf_counter()
        while d > 0 and time.perf_counter() - start < d * PERIOD_S:
            torch.matmul(a, b, out=c)
            torch.cuda.synchronize(dev)
        time.sleep(max(0.0, PERIOD_S - (time.perf_counter() - start)))


def meter_worker(gpu: int, conn) -> None:
    """Plain torch bf16 GEMM throughput (TFLOP/s) for each request of `seconds`, until None."""
    import torch

    dev = torch.device(f"cuda:{gpu}")
    a = torch.randn(SIZE, SIZE, dtype=torch.bfloat16, device=dev)
    b = torch.randn(SIZE, SIZE, dtype=torch.bfloat16, device=dev)
    c = torch.empty_like(a)
    for _ in range(5):
        torch.matmul(a, b, out=c)
    torch.cuda.synchronize(dev)
    conn.send("ready")
    while True:
        seconds = conn.recv()
        if seconds is None:
            return
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                torch.matmul(a, b, out=c)
            torch.cuda.synchronize(dev)
            done += 10
        conn.send(2 * SIZE**3 * done / (time.perf_counter() - start) / 1e12)


class Meter:
    """A plain torch GEMM loop in its own process; closed before a bench so that it is not a
    foreign process there."""

    def __init__(self, ctx, gpu: int):
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=meter_worker, args=(gpu, child), name="meter")
        self.proc.start()
        if not self.conn.poll(120) or self.conn.recv() != "ready":
            raise RuntimeError("the torch meter did not start (torch with CUDA needed)")

    def rate(self, seconds: float = 2.0) -> float:
        self.conn.send(seconds)
        return float(self.conn.recv())

    def close(self) -> None:
        self.conn.send(None)
        self.proc.join(timeout=30)


def interpolate(points: list[tuple[float, float]], target: float) -> float:
    """The duty cycle at which the measured slowdown reaches `target` (linear between grid points)."""
    pts = sorted([(0.0, 0.0), *points])
    for (d1, s1), (d2, s2) in zip(pts, pts[1:], strict=False):
        if s1 <= target <= s2 and s2 > s1:
            return d1 + (target - s1) * (d2 - d1) / (s2 - s1)
    best = max(pts, key=lambda p: p[1])
    return min(0.9, best[0] * target / best[1]) if best[1] > 0 else 0.5


def bench(name: str, out: Path, state: Path, log) -> dict:
    path = out / f"bench-{name}.json"
    argv = [sys.executable, "-m", "gpunode", "bench", "--quick", "--only", "gemm,hbm", "--compare",
            "--json", str(path), "--state-dir", str(state)]
    started = time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)  # noqa: S603
    log.write(f"\n$ {' '.join(argv[1:])}  # {name}, exit {res.returncode}, {time.monotonic() - started:.1f} s\n")
    log.write(res.stdout + res.stderr)
    log.flush()
    return {"exit": res.returncode, "path": str(path)}


def verdicts(path: str) -> dict:
    from gpunode.baselines.compare import compare_document

    v = compare_document(json.loads(Path(path).read_text()))
    rows = [{"metric": r.metric, "status": r.status, "measured": r.measured, "message": r.message,
             "peak_ratio": r.peak_ratio} for r in v.rows if r.status != "SKIP"]
    return {"status": v.status, "rows": rows}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--state-dir", type=Path, default=None, help="history for the runs (default OUT/state)")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    state = args.state_dir or out / "state"
    ctx = mp.get_context("spawn")
    report: dict = {"gpu": args.gpu, "size": SIZE, "load_size": LOAD_SIZE, "period_s": PERIOD_S}
    with open(out / "interference.log", "w") as log:
        meter = Meter(ctx, args.gpu)
        idle = [meter.rate(), meter.rate()]
        meter.close()
        report["plain_idle_tflops"] = idle
        report["idle"] = bench("idle", out, state, log)
        report["idle"]["verdicts"] = verdicts(report["idle"]["path"])

        duty, ready, stop = ctx.Value("d", 0.0), ctx.Event(), ctx.Event()
        load = ctx.Process(target=load_worker, args=(args.gpu, duty, ready, stop), name="load")
        load.start()
        try:
            if not ready.wait(120):
                raise RuntimeError("the load process did not start")
            meter = Meter(ctx, args.gpu)
            base = max(meter.rate(), meter.rate())  # the load process idles: its context alone
            calibration = []
            for d in GRID:
                duty.value = d
                time.sleep(0.3)
                calibration.append((d, round(1 - meter.rate() / base, 4)))
            meter.close()
            report["plain_with_idle_load_context_tflops"] = base
            report["calibration"] = calibration
            for name, target in TARGETS:
                d = round(interpolate(calibration, target), 4)
                duty.value = d
                meter = Meter(ctx, args.gpu)
                before = 1 - meter.rate() / base
                meter.close()
                result = bench(name, out, state, log)
                meter = Meter(ctx, args.gpu)
                after = 1 - meter.rate() / base
                meter.close()
                result.update(target=target, duty=d, slowdown_before=round(before, 4), slowdown_after=round(after, 4),
                              verdicts=verdicts(result["path"]))
                report[name] = result
        finally:
            stop.set()
            load.join(timeout=30)
            if load.is_alive():
                load.terminate()
        for cmd in (["history"], ["history", "--json"]):
            res = subprocess.run([sys.executable, "-m", "gpunode", *cmd, "--state-dir", str(state)],  # noqa: S603
                                 capture_output=True, text=True, check=False, timeout=60)
            log.write(f"\n$ gpunode {' '.join(cmd)}  # exit {res.returncode}\n{res.stdout}{res.stderr}")
    idle_ok = report["idle"]["verdicts"]["status"] == "OK"
    flagged = all(report[n]["verdicts"]["status"] in ("WARN", "FAIL") and any(
        "foreign process" in r["message"] for r in report[n]["verdicts"]["rows"]) for n, _ in TARGETS)
    report["done"] = {"idle_pass": idle_ok, "loads_flagged_as_interference": flagged}
    (out / "interference.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("plain_idle_tflops", "calibration", "done")}, indent=1))
    for n, _ in TARGETS:
        r = report[n]
        bf16 = next((x for x in r["verdicts"]["rows"] if x["metric"] == "gemm.bf16"), {})
        print(f"{n}: duty {r['duty']}, plain slowdown {r['slowdown_before']:.1%} / {r['slowdown_after']:.1%}, "
              f"bench {r['verdicts']['status']}: gemm.bf16 {bf16.get('status')} {bf16.get('message')}")
    return 0 if idle_ok and flagged else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main(sys.argv[1:]))
