"""Sustained load on every GPU at once: checked GEMM on each GPU, and beside it host<->device
copies (and GPU->GPU copies where peers exist) whose data is verified on arrival.

Each worker runs in its own thread until the deadline or `stop`; a worker that raises becomes
an ERROR result for its subject, the others go on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpunode.bench.backend import Device
from gpunode.diag.backend import CopyWorker, DiagBackend
from gpunode.diag.gemm import GemmPlan, GemmRun, run_gemm
from gpunode.diag.results import TestResult

PCIE_BYTES = 256 << 20
P2P_BYTES = 256 << 20


@dataclass
class CopyRun:
    label: str
    name: str  # pcie.copy | p2p.copy
    gpu: int | None
    rounds: int = 0
    nbytes: int = 0
    seconds: float = 0.0
    bad: list[str] = field(default_factory=list)
    bad_rounds: int = 0
    error: str | None = None


def copy_loop(make: Callable[[], CopyWorker | None], run: CopyRun, deadline: float, stop: threading.Event) -> None:
    worker = None
    try:
        worker = make()
        if worker is None:
            run.error = "no peer access between these GPUs"
            return
        while not stop.is_set() and (run.rounds == 0 or time.monotonic() < deadline):
            r = worker.round()
            run.rounds += 1
            run.nbytes += r.nbytes
            run.seconds += r.seconds
            if r.bad:
                run.bad_rounds += 1
                if len(run.bad) < 5:
                    run.bad.append(f"round {run.rounds}: " + "; ".join(r.bad))
    except Exception as exc:  # noqa: BLE001 - one broken worker is an ERROR for its subject
        run.error = f"{type(exc).__name__}: {exc}"
    finally:
        if worker is not None:
            worker.close()


def copy_result(run: CopyRun) -> TestResult:
    gbps = round(run.nbytes / run.seconds / 1e9, 1) if run.seconds else None
    figures = {"rounds": run.rounds, "bytes": run.nbytes, "gbps": gbps}
    if run.bad_rounds:
        return TestResult(run.name, run.gpu, "FAIL", f"{run.label}: data corrupted in {run.bad_rounds} of "
                                                     f"{run.rounds} rounds: {run.bad[0]}", figures, {"bad": run.bad})
    if run.error:
        status = "SKIP" if "no peer access" in run.error else "ERROR"
        return TestResult(run.name, run.gpu, status, f"{run.label}: {run.error}", figures)
    return TestResult(run.name, run.gpu, "PASS", f"{run.label}: {run.rounds} verified round(s), {gbps} GB/s", figures)


@dataclass
class Worker:
    thread: threading.Thread
    what: str


@dataclass
class StressRun:
    gemm: dict[int, GemmRun] = field(default_factory=dict)
    gemm_errors: dict[int, str] = field(default_factory=dict)
    copies: list[CopyRun] = field(default_factory=list)
    started: float = 0.0
    ended: float = 0.0


def start_stress(backend: DiagBackend, devices: dict[int, Device], plan: GemmPlan, seconds: float,
                 stop: threading.Event, copies: bool = True, measure_plain: bool = True) -> tuple[StressRun, list[Worker]]:
    """Start the workers; the caller joins them (so Ctrl-C lands in its thread)."""
    out = StressRun(started=time.monotonic())
    deadline = out.started + seconds
    workers = []

    def gemm(gpu: int, device: Device) -> None:
        worker = None
        try:
            worker = backend.gemm(device, plan.dtype, plan.size, plan.seed)
            out.gemm[gpu] = run_gemm(worker, gpu, plan, max(0.0, deadline - time.monotonic()), stop, measure_plain)
        except Exception as exc:  # noqa: BLE001
            out.gemm_errors[gpu] = f"{type(exc).__name__}: {exc}"
        finally:
            if worker is not None:
                worker.close()

    for gpu, device in devices.items():
        workers.append(Worker(threading.Thread(target=gemm, args=(gpu, device), daemon=True), f"GPU{gpu} GEMM"))
        if copies:
            run = CopyRun(f"GPU{gpu} host<->device", "pcie.copy", gpu)
            out.copies.append(run)
            workers.append(Worker(threading.Thread(
                target=copy_loop, args=(lambda d=device, g=gpu: backend.pcie(d, PCIE_BYTES, 11 + g), run, deadline, stop),
                daemon=True), run.label))
    if copies and len(devices) > 1:
        gpus = sorted(devices)
        for i, src in enumerate(gpus):  # a ring: every GPU sends to the next, so all links carry load
            dst = gpus[(i + 1) % len(gpus)]
            run = CopyRun(f"GPU{src}->GPU{dst}", "p2p.copy", src)
            out.copies.append(run)
            workers.append(Worker(threading.Thread(
                target=copy_loop,
                args=(lambda s=src, d=dst: backend.p2p(devices[s], devices[d], P2P_BYTES, 101 + s), run, deadline, stop),
                daemon=True), run.label))
    for w in workers:
        w.thread.start()
    return out, workers
