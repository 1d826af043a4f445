#!/usr/bin/env python3
"""A noisy neighbour: keep one GPU busy with bf16 matrix products (torch) for N seconds.

For the sensitivity check of issue 5: `gpunode bench --quick --compare` must PASS alone and flag
GEMM (and whatever else drops) as WARN/FAIL while another process shares the GPU.

    python3 benchmarks/noisy_neighbour.py --seconds 120                # just burn GPU 0
    python3 benchmarks/noisy_neighbour.py -- gpunode bench --quick --compare
        # burn GPU 0, run the command once the neighbour is busy, stop it, exit with the
        # command's exit code

The neighbour runs in its own process (its own CUDA context, as a second job's would) and
prints what it achieved to stderr when it stops. A script, not a test: it needs a GPU and torch.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import time


def burn(gpu: int, seconds: float, size: int, ready, stop) -> None:
    """Matmuls back to back until `seconds` pass or `stop` is set; then report TFLOP/s."""
    import torch

    dev = torch.device(f"cuda:{gpu}")
    a = torch.randn(size, size, dtype=torch.bfloat16, device=dev)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=dev)
    c = torch.empty_like(a)
    torch.matmul(a, b, out=c)
    torch.cuda.synchronize(dev)
    ready.set()
    started = time.monotonic()
    deadline = started + seconds
    done = 0
    while time.monotonic() < deadline and not stop.is_set():
        for _ in range(8):  # a few per sync keeps the GPU saturated but stops promptly
            torch.matmul(a, b, out=c)
        torch.cuda.synchronize(dev)
        done += 8
    elapsed = time.monotonic() - started
    rate = 2 * size**3 * done / elapsed / 1e12 if elapsed > 0 else 0.0
    print(f"noisy neighbour: GPU{gpu} {done} bf16 matmuls of {size}^3 in {elapsed:.1f}s, {rate:.0f} TFLOP/s",
          file=sys.stderr)


def main(argv: list[str]) -> int:
    command: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, command = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gpu", type=int, default=0, help="CUDA device ordinal to keep busy (default 0)")
    p.add_argument("--seconds", type=float, default=600.0, help="longest time to burn (default 600)")
    p.add_argument("--size", type=int, default=8192, help="matrix size (default 8192)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of burning before the command starts")
    args = p.parse_args(argv)

    ctx = mp.get_context("spawn")  # a fresh process: its own CUDA context
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=burn, args=(args.gpu, args.seconds, args.size, ready, stop), name="noisy-neighbour")
    proc.start()
    deadline = time.monotonic() + 120
    while not ready.wait(timeout=0.5):
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.terminate()
            print(f"noisy neighbour: could not start matmuls on GPU{args.gpu} (needs torch with CUDA)", file=sys.stderr)
            return 3
    if not command:
        proc.join()
        return proc.exitcode or 0
    time.sleep(args.warmup)
    try:
        rc = subprocess.run(command, check=False).returncode  # noqa: S603 - the operator's own argv
    finally:
        stop.set()
        proc.join(timeout=60)
        if proc.is_alive():
            proc.terminate()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
