"""An own all-reduce through torch.distributed (NCCL backend), for nodes without nccl-tests.

The CLI process does not run NCCL itself: it starts `python -m gpunode.bench.torch_dist` through
the Runner (so a hung collective is killed with its whole process group at the timeout); that
launcher spawns one process per GPU with torch.multiprocessing, checks the sum once, times
all-reduces with CUDA events and prints one JSON line. busbw = algbw * 2(n-1)/n, as nccl-tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence

from gpunode.bench import nccl_log
from gpunode.bench.results import Metric, errored, skipped

RESULT_PREFIX = "GPUNODE_ALLREDUCE_RESULT "
NAME = "torch.all_reduce.busbw"


def busbw(algbw: float, nranks: int) -> float:
    """nccl-tests' bus bandwidth of all-reduce: algbw * 2(n-1)/n (doc/PERFORMANCE.md)."""
    if nranks < 1:
        raise ValueError("nranks must be >= 1")
    return algbw * 2 * (nranks - 1) / nranks


def algbw(nbytes: int, seconds: float) -> float:
    return nbytes / seconds / 1e9


def launcher_argv(python: str, devices: Sequence[int], sizes: Sequence[int], iters: int, warmup: int) -> list[str]:
    return [python, "-m", "gpunode.bench.torch_dist", "--devices", ",".join(map(str, devices)),
            "--sizes", ",".join(map(str, sizes)), "--iters", str(iters), "--warmup", str(warmup)]


def parse_output(stdout: str) -> dict:
    """The launcher's result line. Raises ValueError when it is missing or cut."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                data = json.loads(line[len(RESULT_PREFIX):])
            except json.JSONDecodeError as exc:
                raise ValueError(f"all-reduce result line is not valid JSON: {exc.msg}") from None
            if not isinstance(data, dict) or "world_size" not in data or "sizes" not in data:
                raise ValueError("all-reduce result line lacks world_size/sizes")
            return data
    raise ValueError("no all-reduce result line in the output (crashed or killed)")


def to_metric(data: dict, iters: int) -> Metric:
    n = int(data["world_size"])
    rows = data["sizes"]
    cond = {"ngpus": n, "nprocs": n, "dtype": "float32", "op": "sum", "backend": "torch.distributed nccl",
            "iters": iters, "aggregate": "busbw at the largest size, CUDA events around the timed loop",
            "formula": "busbw = algbw * 2(n-1)/n", "algo env": data.get("env", {})}
    bad = [r for r in rows if not r.get("correct")]
    if bad:
        return Metric(NAME, None, None, "GB/s", "FAIL",
                      f"all-reduce returned a wrong sum at {bad[0]['bytes']} bytes", cond, None, {"rows": rows})
    if not rows:
        return errored(NAME, "GB/s", "all-reduce launcher reported no sizes", **cond)
    largest = max(rows, key=lambda r: r["bytes"])
    cond["largest_bytes"] = largest["bytes"]
    return Metric(NAME, None, round(largest["busbw"], 3), "GB/s", "PASS", "", cond, None, {"rows": rows})


def run(runner, devices: Sequence[int], sizes: Sequence[int], iters: int, warmup: int, timeout: float,
        environ: Mapping[str, str], python: str = sys.executable, fabric: nccl_log.Fabric | None = None) -> Metric:
    """With NCCL_DEBUG=INFO (bench.nccl.with_debug): NCCL's transports judged as for nccl-tests."""
    from gpunode.bench.nccl import transport_verdict, with_debug

    if len(devices) < 2:
        return skipped(NAME, "GB/s", "needs 2+ GPUs: with one rank the bus bandwidth is 0 by definition")
    r = runner.run(launcher_argv(python, devices, sizes, iters, warmup), timeout=timeout, env=with_debug(environ))
    if r.error:
        return errored(NAME, "GB/s", r.error)
    if r.timed_out:
        return errored(NAME, "GB/s", f"timed out after {timeout:.0f} s: the process group was killed")
    try:
        data = parse_output(r.stdout)
    except ValueError as exc:
        tail = (r.stderr.strip().splitlines() or [""])[-1][:200]
        return errored(NAME, "GB/s", f"{exc} (exit {r.rc}; {tail})")
    if r.rc != 0:
        return errored(NAME, "GB/s", f"launcher exited with status {r.rc}")
    m = to_metric(data, iters)
    t_status, t_why, chosen = transport_verdict(r.stdout + "\n" + r.stderr, fabric or nccl_log.Fabric())
    if m.status == "PASS" and t_status == "FAIL":
        m.status, m.message = "FAIL", t_why
    elif t_status == "WARN" and not m.message:
        m.message = t_why
    m.detail = {**(m.detail or {}), "nccl_transport": chosen}
    return m


# ---- the launcher and its workers (run in their own processes) -------------------------------


def _worker(rank: int, devices: list[int], sizes: list[int], iters: int, warmup: int, init_file: str, queue) -> None:
    import torch
    import torch.distributed as dist

    n = len(devices)
    torch.cuda.set_device(devices[rank])
    dist.init_process_group("nccl", init_method=f"file://{init_file}", rank=rank, world_size=n,
                            device_id=torch.device("cuda", devices[rank]))
    rows = []
    try:
        for nbytes in sizes:
            count = max(1, nbytes // 4)
            x = torch.full((count,), float(rank + 1), dtype=torch.float32, device="cuda")
            dist.all_reduce(x)
            torch.cuda.synchronize()
            correct = bool(torch.all(x == n * (n + 1) / 2).item())
            for _ in range(warmup):
                dist.all_reduce(x)
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            dist.barrier()
            torch.cuda.synchronize()
            start.record()
            for _ in range(iters):
                dist.all_reduce(x)
            end.record()
            end.synchronize()
            seconds = torch.tensor(start.elapsed_time(end) / 1e3 / iters, device="cuda")
            dist.all_reduce(seconds, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
            flag = torch.tensor(0 if correct else 1, device="cuda")
            dist.all_reduce(flag)
            if rank == 0:
                s = float(seconds.item())
                a = algbw(count * 4, s)
                rows.append({"bytes": count * 4, "time_us": round(s * 1e6, 2), "algbw": round(a, 3),
                             "busbw": round(busbw(a, n), 3), "correct": int(flag.item()) == 0})
            del x
    finally:
        dist.destroy_process_group()
    if rank == 0:
        queue.put(rows)


def _launch(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="gpunode.bench.torch_dist")
    p.add_argument("--devices", required=True)
    p.add_argument("--sizes", required=True)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    import torch
    import torch.multiprocessing as mp

    devices = [int(d) for d in args.devices.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    with tempfile.TemporaryDirectory(prefix="gpunode-allreduce-") as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.start_processes(_worker, args=(devices, sizes, args.iters, args.warmup, init_file, queue),
                           nprocs=len(devices), join=True, start_method="spawn")
    rows = queue.get()
    env = {k: v for k, v in sorted(os.environ.items()) if k.startswith("NCCL_") and k not in ("NCCL_DEBUG", "NCCL_DEBUG_SUBSYS")}
    result = {"world_size": len(devices), "sizes": rows, "torch": torch.__version__,
              "nccl": ".".join(map(str, torch.cuda.nccl.version())), "env": env}
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1:]))
