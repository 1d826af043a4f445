#!/usr/bin/env python3
"""Fidelity of gpunode's GEMM and HBM figures against a plain torch loop (a script, not a test).

In one process on one GPU, five rounds; each round measures gpunode's bf16 GEMM (8192^3) and
D2D copy (1 GiB, bytes read+written) through gpunode.bench.micro, and the same operations with
the plainest torch loop (warm-up, CUDA events around N calls). Targets: gpunode's median >= 97 %
(GEMM) and >= 95 % (D2D) of the plain figure; CoV of gpunode's figure over the rounds <= 2 %.

    python3 benchmarks/bench_fidelity.py [--gpu 0] [--rounds 5] [--json out.json]

Exit 0 when every target is met, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

TARGETS = {"gemm.bf16": 0.97, "hbm.d2d": 0.95}
MAX_COV = 0.02


def plain_gemm(torch, dev, n: int = 8192, iters: int = 50) -> float:
    a = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    b = torch.randn(n, n, dtype=torch.bfloat16, device=dev)
    for _ in range(10):
        torch.matmul(a, b)
    torch.cuda.synchronize(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        torch.matmul(a, b)
    end.record()
    end.synchronize()
    return 2 * n**3 * iters / (start.elapsed_time(end) / 1e3) / 1e12


def plain_d2d(torch, dev, nbytes: int = 1 << 30, iters: int = 50) -> float:
    src = torch.zeros(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    for _ in range(5):
        dst.copy_(src)
    torch.cuda.synchronize(dev)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src)
    end.record()
    end.synchronize()
    return 2 * nbytes * iters / (start.elapsed_time(end) / 1e3) / 1e9


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", type=int, default=0, help="CUDA device ordinal")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    import torch

    from gpunode.bench import micro
    from gpunode.bench.backend_torch import TorchBackend

    backend = TorchBackend(torch)
    device = backend.devices()[args.gpu]
    target = micro.Target(args.gpu, device)
    plan = micro.MicroPlan.full()
    dev = torch.device("cuda", args.gpu)
    torch.cuda.set_device(dev)
    figures: dict[str, dict[str, list[float]]] = {k: {"gpunode": [], "plain": [], "cov_within": []} for k in TARGETS}
    for r in range(args.rounds):
        for name in TARGETS:
            m = micro.gemm_metric(backend, target, "bf16", plan) if name == "gemm.bf16" else micro.d2d_metric(backend, target, plan)
            if m.status != "ok":
                print(f"{name}: gpunode metric {m.status}: {m.message}", file=sys.stderr)
                return 1
            plain = plain_gemm(torch, dev) if name == "gemm.bf16" else plain_d2d(torch, dev)
            torch.cuda.empty_cache()
            figures[name]["gpunode"].append(m.value)
            figures[name]["plain"].append(plain)
            figures[name]["cov_within"].append(m.spread.cov)
            print(f"round {r + 1}: {name}: gpunode {m.value:.1f}, plain {plain:.1f} {m.unit}", file=sys.stderr)

    ok = True
    rows = []
    print(f"\ngpunode bench fidelity on {device.name} (torch {torch.__version__}), {args.rounds} rounds")
    print(f"{'metric':<10} {'gpunode median':>15} {'plain median':>13} {'ratio':>7} {'target':>7} "
          f"{'CoV rounds':>11} {'CoV max in-run':>15} verdict")
    for name, target_ratio in TARGETS.items():
        ours, plain = figures[name]["gpunode"], figures[name]["plain"]
        med_ours, med_plain = statistics.median(ours), statistics.median(plain)
        ratio = med_ours / med_plain
        cov = statistics.stdev(ours) / statistics.fmean(ours) if len(ours) > 1 else 0.0
        cov_in = max(figures[name]["cov_within"])
        passed = ratio >= target_ratio and cov <= MAX_COV
        ok &= passed
        unit = "TFLOP/s" if name.startswith("gemm") else "GB/s"
        print(f"{name:<10} {med_ours:>11.1f} {unit:<3} {med_plain:>9.1f} {ratio:>10.3f} {target_ratio:>7.2f} "
              f"{cov:>10.2%} {cov_in:>15.2%} {'PASS' if passed else 'FAIL'}")
        rows.append({"metric": name, "unit": unit, "gpunode": ours, "plain": plain, "ratio": round(ratio, 4),
                     "target": target_ratio, "cov_rounds": round(cov, 5), "cov_within_max": cov_in, "passed": passed})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device.name, "torch": torch.__version__, "rounds": args.rounds, "rows": rows}, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
