"""In-process GPU microbenchmarks: GEMM, HBM copy and read, host<->device, P2P, concurrent GEMM.

The protocol is the same for every figure: one untimed call (lazy init), a time-based warm-up
(clocks ramp up), then `repeats` batches timed by CUDA events, each batch long enough that event
resolution does not matter; the metric is the median of the per-batch figures and the spread
is reported. Backends (torch/cupy) only build and time operations.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from gpunode.bench import numa, stats
from gpunode.bench.backend import GEMM_DTYPES, Backend, Device, Op
from gpunode.bench.results import Metric, errored, skipped

GIB = 1 << 30
MIB = 1 << 20


@dataclass(frozen=True)
class MicroPlan:
    repeats: int
    warmup_s: float  # warm-up time before the timed batches (clocks, caches)
    min_batch_s: float  # each timed batch lasts at least this long
    gemm_size: int = 8192
    d2d_bytes: int = GIB
    pinned_bytes: int = GIB
    pageable_bytes: int = 256 * MIB
    p2p_bytes: int = GIB
    gemm_dtypes: tuple[str, ...] = GEMM_DTYPES
    max_iters: int = 10_000

    @classmethod
    def quick(cls) -> MicroPlan:
        return cls(repeats=5, warmup_s=0.3, min_batch_s=0.02)

    @classmethod
    def full(cls) -> MicroPlan:
        return cls(repeats=20, warmup_s=1.0, min_batch_s=0.05)


@dataclass(frozen=True)
class Target:
    """One GPU to measure: its NVML index (what reports call it) and the backend's device."""

    gpu: int
    device: Device
    locality: numa.GpuLocality = field(default_factory=lambda: numa.GpuLocality("", [], None, "unknown"))


def gemm_flops(m: int, n: int, k: int) -> int:
    """A GEMM of (m x k) by (k x n) does m*n*k multiply-adds: 2*m*n*k floating-point operations."""
    return 2 * m * n * k


def batch_iters(per_op_s: float, min_batch_s: float, max_iters: int) -> int:
    """How many operations make one timed batch of at least min_batch_s."""
    if per_op_s <= 0 or not math.isfinite(per_op_s):
        return max_iters
    return max(1, min(max_iters, math.ceil(min_batch_s / per_op_s)))


class _Timed:
    """Warm-up and batch size for one op; then `sample()` gives one per-op time per call."""

    def __init__(self, backend: Backend, device: Device, op: Op, plan: MicroPlan):
        self.backend, self.device, self.op = backend, device, op
        backend.time(device, op, 1)  # lazy init (cuBLAS handles, peer mappings) out of the timing
        per_op = backend.time(device, op, 2) / 2
        warm_iters = batch_iters(per_op, plan.warmup_s, plan.max_iters)
        per_op = backend.time(device, op, warm_iters) / warm_iters  # clocks are up now
        self.iters = batch_iters(per_op, plan.min_batch_s, plan.max_iters)

    def sample(self) -> float:
        return self.backend.time(self.device, self.op, self.iters) / self.iters


def measure(backend: Backend, device: Device, op: Op, plan: MicroPlan) -> tuple[list[float], int]:
    """-> (seconds per operation for each of plan.repeats batches, operations per batch)."""
    timed = _Timed(backend, device, op, plan)
    return [timed.sample() for _ in range(plan.repeats)], timed.iters


def rate_metric(name: str, gpu: int | None, unit: str, work: float, scale: float, seconds: list[float],
                iters: int, conditions: dict) -> Metric:
    """work per second / scale for each batch -> a metric with the median and the spread."""
    bad = [s for s in seconds if not s > 0]
    if bad:
        return errored(name, unit, f"a timed batch took {bad[0]!r} s: CUDA events gave no usable time", gpu)
    rates = [work / s / scale for s in seconds]
    spread = stats.spread(rates)
    cond = {**conditions, "aggregate": f"median of {len(rates)}", "iters_per_batch": iters}
    return Metric(name, gpu, round(spread.median, 3), unit, "PASS", "", cond, spread)


def _guarded(name: str, unit: str, gpu: int | None, fn: Callable[[], Metric], backend: Backend) -> Metric:
    """One metric's failure (out of memory, CUDA error) is that metric's ERROR, never the run's."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported on the metric
        return errored(name, unit, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}", gpu)
    finally:
        try:
            backend.release()
        except Exception:  # noqa: BLE001, S110 - a broken context surfaces on the next metric
            pass


def gemm_metric(backend: Backend, t: Target, dtype: str, plan: MicroPlan) -> Metric:
    name, size = f"gemm.{dtype}", plan.gemm_size
    cond = {"dtype": dtype, "m": size, "n": size, "k": size, "backend": backend.name,
            "flops_per_gemm": gemm_flops(size, size, size)}
    why = backend.gemm_unsupported(t.device, dtype)
    if why:
        return skipped(name, "TFLOP/s", why, t.gpu, **cond)

    def run() -> Metric:
        op = backend.gemm(t.device, dtype, size, size, size)
        try:
            seconds, iters = measure(backend, t.device, op, plan)
        finally:
            op.close()
        return rate_metric(name, t.gpu, "TFLOP/s", gemm_flops(size, size, size), 1e12, seconds, iters,
                           {**cond, **op.conditions})

    return _guarded(name, "TFLOP/s", t.gpu, run, backend)


def d2d_metric(backend: Backend, t: Target, plan: MicroPlan) -> Metric:
    cond = {"bytes": plan.d2d_bytes, "counting": "read+write", "backend": backend.name,
            "note": "a copy of N bytes reads N and writes N: 2N bytes are counted"}
    return _on_device("hbm.d2d", "d2d", 2, backend, t, plan, cond)


def hbm_read_metric(backend: Backend, t: Target, plan: MicroPlan) -> Metric:
    """HBM read bandwidth alone: what decoding with a large model does to its weights (every
    token reads them all, writes little); a copy's figure mixes reads with writes."""
    cond = {"bytes": plan.d2d_bytes, "counting": "bytes read", "backend": backend.name,
            "note": "a float32 sum over the buffer: N bytes read, one value written"}
    return _on_device("hbm.read", "read", 1, backend, t, plan, cond)


def _on_device(name: str, kind: str, passes: int, backend: Backend, t: Target, plan: MicroPlan, cond: dict) -> Metric:
    """One op over plan.d2d_bytes of GPU memory; passes: how often each byte crosses the bus."""
    nbytes = plan.d2d_bytes

    def run() -> Metric:
        op = backend.copy(kind, t.device, nbytes)
        try:
            seconds, iters = measure(backend, t.device, op, plan)
        finally:
            op.close()
        return rate_metric(name, t.gpu, "GB/s", passes * nbytes, 1e9, seconds, iters, cond)

    return _guarded(name, "GB/s", t.gpu, run, backend)


def host_copy_metric(backend: Backend, t: Target, kind: str, plan: MicroPlan) -> Metric:
    """kind: h2d_pinned | d2h_pinned | h2d_pageable | d2h_pageable; metric h2d.pinned etc."""
    direction, memory = kind.split("_")
    name = f"{direction}.{memory}"
    nbytes = plan.pinned_bytes if memory == "pinned" else plan.pageable_bytes
    cond = {"bytes": nbytes, "host_memory": memory, "counting": "bytes transferred once",
            "backend": backend.name, "numa_node": t.locality.numa_node,
            "placement": "thread bound to the GPU's local CPUs, buffer first-touched there (no libnuma)"}
    if memory == "pageable":
        cond["purpose"] = "information: pageable copies are staged by the driver"

    def run() -> Metric:
        with numa.bound_to(t.locality.cpus) as note:
            op = backend.copy(kind, t.device, nbytes)
            try:
                seconds, iters = measure(backend, t.device, op, plan)
            finally:
                op.close()
        return rate_metric(name, t.gpu, "GB/s", nbytes, 1e9, seconds, iters,
                           {**cond, "binding": t.locality.note or note})

    return _guarded(name, "GB/s", t.gpu, run, backend)


def p2p_metric(backend: Backend, src: Target, dst: Target, plan: MicroPlan) -> Metric:
    name, nbytes = f"p2p.{src.gpu}-{dst.gpu}", plan.p2p_bytes
    cond = {"src": src.gpu, "dst": dst.gpu, "bytes": nbytes, "counting": "bytes transferred once",
            "backend": backend.name}

    def run() -> Metric:
        peer = backend.can_access_peer(src.device, dst.device)
        op = backend.copy("p2p", src.device, nbytes, peer=dst.device)
        try:
            seconds, iters = measure(backend, src.device, op, plan)
        finally:
            op.close()
        m = rate_metric(name, None, "GB/s", nbytes, 1e9, seconds, iters, {**cond, "peer_access": peer})
        if not peer:
            m.message = "no peer access between these GPUs: the copy is staged through host memory"
        return m

    return _guarded(name, "GB/s", None, run, backend)


def concurrent_gemm_metrics(backend: Backend, targets: list[Target], plan: MicroPlan,
                            dtype: str = "bf16") -> list[Metric]:
    """Every GPU runs the GEMM at the same time (one thread and stream each): power/thermal sag."""
    name, size = f"gemm.{dtype}.concurrent", plan.gemm_size
    cond = {"dtype": dtype, "m": size, "n": size, "k": size, "backend": backend.name,
            "gpus_at_once": len(targets), "flops_per_gemm": gemm_flops(size, size, size)}
    if len(targets) < 2:
        return [skipped(name, "TFLOP/s", "one GPU: the concurrent run equals gemm.bf16", t.gpu, **cond)
                for t in targets]
    why = backend.gemm_unsupported(targets[0].device, dtype)
    if why:
        return [skipped(name, "TFLOP/s", why, t.gpu, **cond) for t in targets]
    barrier = threading.Barrier(len(targets))
    out: dict[int, Metric] = {}

    def worker(t: Target) -> None:
        op = None
        try:
            op = backend.gemm(t.device, dtype, size, size, size)
            barrier.wait(timeout=300)
            timed = _Timed(backend, t.device, op, plan)
            seconds = []
            for _ in range(plan.repeats):
                barrier.wait(timeout=300)  # batches overlap on all GPUs
                seconds.append(timed.sample())
            out[t.gpu] = rate_metric(name, t.gpu, "TFLOP/s", gemm_flops(size, size, size), 1e12, seconds,
                                     timed.iters, {**cond, **op.conditions})
        except Exception as exc:  # noqa: BLE001 - reported on this GPU's metric
            barrier.abort()
            out[t.gpu] = errored(name, "TFLOP/s", f"{type(exc).__name__}: {exc}", t.gpu)
        finally:
            if op is not None:
                op.close()

    threads = [threading.Thread(target=worker, args=(t,), name=f"gemm-gpu{t.gpu}") for t in targets]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    try:
        backend.release()
    except Exception:  # noqa: BLE001, S110 - surfaces on the next metric
        pass
    return [out[t.gpu] for t in targets]
