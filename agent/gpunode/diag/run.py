"""Orchestration of `gpunode diag`: levels, phases, telemetry windows, Ctrl-C, one DiagDocument.

Level 1: the gate's checks + a short correctness GEMM on every GPU (seconds).
Level 2: + HBM memory test + sustained checked GEMM on every GPU (default 120 s in all).
Level 3: + all GPUs under GEMM at once with verified host<->device and GPU->GPU copies beside
         it, for what is left of --duration (default 540 s in all, one 10-minute slot).
Every phase runs on all selected GPUs at once, one thread each; the main thread only waits, so
Ctrl-C (or SIGTERM, turned into it by the CLI) lands here: workers are told to stop, joined,
GPU memory is freed, and the document says "interrupted" (ERROR, never PASS).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gpunode import __version__
from gpunode.bench.backend import Device
from gpunode.diag import gemm as gemm_mod
from gpunode.diag.backend import AllocationError, DiagBackend
from gpunode.diag.memtest import CHUNK_BYTES, FRACTION, run_memtest
from gpunode.diag.results import DiagDocument, TestResult
from gpunode.diag.stress import copy_result, start_stress
from gpunode.diag.verdicts import Floors, load_findings, telemetry_gap
from gpunode.host.gpu.telemetry import TelemetrySampler, Trace
from gpunode.outputs import iso_time
from gpunode.status import worst

DEFAULT_DURATION = {1: None, 2: 120.0, 3: 540.0}
MIN_DURATION = {2: 45.0, 3: 90.0}
MEMTEST_PASSES = {2: 1, 3: 2}
MIN_LOAD_S = 15.0
RESERVE_S = 4.0  # kept back at the end: joining, freeing memory, the last telemetry sample
WARMUP_S = 10.0  # clocks and power ramp up: floors are judged after this
PROGRESS_EVERY_S = 30.0


@dataclass
class DiagOptions:
    level: int = 1
    duration: float | None = None  # seconds for the whole run (levels 2 and 3)
    gpus: list[int] | None = None
    with_dcgm: bool = False
    gemm: gemm_mod.GemmPlan = field(default_factory=gemm_mod.GemmPlan)
    memtest_passes: int | None = None
    memtest_fraction: float = FRACTION
    memtest_chunk_bytes: int = CHUNK_BYTES
    copies: bool = True
    min_load_s: float = MIN_LOAD_S  # the load phase runs at least this long

    def __post_init__(self) -> None:
        if self.level not in (1, 2, 3):
            raise ValueError(f"--level {self.level}: 1, 2 or 3")
        if self.duration is not None:
            if self.level == 1:
                raise ValueError("--duration applies to levels 2 and 3 (level 1 takes seconds)")
            if not math.isfinite(self.duration) or self.duration <= 0:
                raise ValueError("--duration must be a positive number of seconds")
        if not 0.05 <= self.memtest_fraction <= 0.98:
            raise ValueError("memory test fraction must be between 0.05 and 0.98")

    @property
    def planned_s(self) -> float | None:
        return self.duration if self.duration is not None else DEFAULT_DURATION[self.level]

    @property
    def passes(self) -> int:
        return self.memtest_passes or MEMTEST_PASSES.get(self.level, 1)


@dataclass
class DiagContext:
    """Everything one run touches, passed in (tests give fakes)."""

    opts: DiagOptions
    hostname: str
    now_epoch: float
    gpus_meta: dict  # the audit's meta["gpus"] object
    devices: dict[int, Device]  # NVML index -> backend device
    names: dict[int, str]  # NVML index -> model name
    backend: DiagBackend | None
    backend_why: str = ""
    sampler: TelemetrySampler | None = None
    floors: Floors = field(default_factory=Floors)
    gate: Callable[[], TestResult] | None = None
    dcgm: Callable[[], tuple[list[TestResult], dict]] | None = None
    progress: Callable[[str, float | None], None] = lambda text, left: None
    stop: threading.Event = field(default_factory=threading.Event)
    tools: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], float] = time.monotonic


class _Interrupted(Exception):
    pass


def _parallel(ctx: DiagContext, label: str, tasks: dict[int, Callable[[], object]], end: float | None) -> dict:
    """Run one task per GPU in threads; the main thread waits (Ctrl-C lands here)."""
    out: dict[int, object] = {}

    def wrap(key: int, fn: Callable[[], object]) -> None:
        try:
            out[key] = fn()
        except Exception as exc:  # noqa: BLE001 - one GPU's failure is that GPU's ERROR
            out[key] = exc

    threads = [threading.Thread(target=wrap, args=(k, fn), name=f"diag-{label}-{k}", daemon=True)
               for k, fn in tasks.items()]
    for t in threads:
        t.start()
    _wait(ctx, label, threads, end)
    return out


def _wait(ctx: DiagContext, label: str, threads: list[threading.Thread], end: float | None) -> None:
    last = ctx.clock()
    try:
        for t in threads:
            while t.is_alive():
                t.join(timeout=0.5)
                if ctx.clock() - last >= PROGRESS_EVERY_S:
                    last = ctx.clock()
                    ctx.progress(label, None if end is None else max(0.0, end - last))
    except KeyboardInterrupt:
        ctx.stop.set()
        for t in threads:
            t.join()
        raise _Interrupted() from None


def _error(name: str, gpu: int | None, exc: BaseException) -> TestResult:
    status = "ERROR"
    text = str(exc) if isinstance(exc, AllocationError) else f"{type(exc).__name__}: {exc}"
    return TestResult(name, gpu, status, text.splitlines()[0][:300] if text else type(exc).__name__)


def _gemm_task(ctx: DiagContext, gpu: int, seconds: float | None, measure_plain: bool):
    def task():
        worker = ctx.backend.gemm(ctx.devices[gpu], ctx.opts.gemm.dtype, ctx.opts.gemm.size, ctx.opts.gemm.seed)
        try:
            return gemm_mod.run_gemm(worker, gpu, ctx.opts.gemm, seconds, ctx.stop, measure_plain)
        finally:
            worker.close()
    return task


def _window(ctx: DiagContext, since: float, until: float, gpu: int) -> dict | None:
    if ctx.sampler is None:
        return None
    return ctx.sampler.trace(since=since, until=until).summary(gpus=[gpu])


def load_result(name: str, gpu: int, tel: dict | None, floors: Floors, errors: list[str]) -> TestResult:
    """Telemetry verdicts of a full-load window."""
    gap = telemetry_gap(tel, errors)
    if gap is not None:
        return TestResult(name, gpu, gap.status if gap.status != "WARN" else "SKIP", gap.text, telemetry=tel)
    found = [f for f in load_findings(tel or {}, floors, full_load=True) if f.kind not in ("errors", "pcie", "interference")]
    if found:
        return TestResult(name, gpu, worst([f.status for f in found]), "; ".join(f.text for f in found),
                          _load_figures(tel), telemetry=tel)
    figs = _load_figures(tel)
    text = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in figs.items())
    return TestResult(name, gpu, "PASS", f"no throttling under load ({text})", figs, telemetry=tel)


def _load_figures(tel: dict | None) -> dict:
    tel = tel or {}
    out = {}
    for key, stat, label in (("power_w", "median", "power_w"), ("power_w", "max", "power_max_w"),
                             ("sm_clock_mhz", "median", "sm_clock_mhz"), ("sm_clock_mhz", "min", "sm_clock_min_mhz"),
                             ("temp_c", "max", "temp_max_c"), ("mem_temp_c", "max", "mem_temp_max_c")):
        value = (tel.get(key) or {}).get(stat)
        if value is not None:
            out[label] = value
    if tel.get("power_limit_w"):
        out["power_limit_w"] = tel["power_limit_w"]
    return out


def run_telemetry_result(gpu: int, tel: dict | None, errors: list[str]) -> TestResult:
    """The whole run on one GPU: new errors, interference, throttling at any time."""
    gap = telemetry_gap(tel, errors)
    if gap is not None:
        return TestResult("telemetry", gpu, gap.status, gap.text, telemetry=tel)
    tel = tel or {}
    found = load_findings(tel, Floors(), full_load=False)  # throttling, interference, new errors
    figures = {k: tel[k] for k in ("ecc_uncorrected_delta", "ecc_corrected_delta", "pcie_replay_delta",
                                   "remap_uncorrectable_delta") if k in tel}
    figures["xid_events"] = len(tel.get("xid") or [])
    if found:
        return TestResult("telemetry", gpu, worst([f.status for f in found]), "; ".join(f.text for f in found),
                          figures, telemetry=tel)
    return TestResult("telemetry", gpu, "PASS", "no new ECC/Xid/remap errors, no throttling, no other process "
                                                f"({tel.get('samples', 0)} samples)", figures, telemetry=tel)


def run_diag(ctx: DiagContext) -> DiagDocument:
    opts = ctx.opts
    started = ctx.clock()
    planned = opts.planned_s
    end = started + planned if planned else None
    results: list[TestResult] = []
    notes: list[str] = []
    interrupted = False
    trace: Trace | None = None
    try:
        # The gate and DCGM read NVML themselves (init, read, shutdown): the sampler starts after
        # them, so its samples are of the GPU phases only and no two NVML users overlap.
        if ctx.gate is not None:
            ctx.progress("gate checks", None if end is None else end - ctx.clock())
            results.append(ctx.gate())
        if ctx.dcgm is not None:
            ctx.progress("dcgmi diag", None)
            found, meta = ctx.dcgm()
            results += found
            if meta.get("version"):
                ctx.tools["dcgm"] = meta["version"]
        if ctx.sampler is not None:
            ctx.sampler.start()
        if ctx.backend is None:
            results.append(TestResult("gpu.kernels", None, "ERROR", f"no GPU backend: {ctx.backend_why}"))
        elif not ctx.devices:
            results.append(TestResult("gpu.kernels", None, "ERROR", "no GPU selected or visible to the backend"))
        else:
            results += _gpu_phases(ctx, end, notes)
    except (_Interrupted, KeyboardInterrupt):
        ctx.stop.set()
        interrupted = True
        notes.append(f"interrupted after {ctx.clock() - started:.0f} s; GPU memory freed")
    finally:
        if ctx.sampler is not None and ctx.sampler.started:
            trace = ctx.sampler.stop()
        if ctx.backend is not None:
            try:
                ctx.backend.release()
            except Exception as exc:  # noqa: BLE001
                notes.append(f"releasing GPU memory: {exc}")
    per_gpu: dict[str, dict] = {}
    if ctx.backend is not None and ctx.devices:
        errors = list(trace.errors) if trace else ["telemetry not sampled"]
        for gpu in sorted(ctx.devices):
            tel = trace.summary(gpus=[gpu]) if trace else None
            if tel:
                per_gpu[str(gpu)] = tel
            results.append(run_telemetry_result(gpu, tel, errors))
    return DiagDocument(
        gpunode_version=__version__, host=ctx.hostname, time=iso_time(ctx.now_epoch), time_epoch=ctx.now_epoch,
        level=opts.level, duration_s=ctx.clock() - started, planned_s=planned, gpus=ctx.gpus_meta,
        tools=dict(ctx.tools), results=results, interrupted=interrupted, telemetry=per_gpu or None, notes=notes,
    )


def _gpu_phases(ctx: DiagContext, end: float | None, notes: list[str]) -> list[TestResult]:
    opts, backend = ctx.opts, ctx.backend
    assert backend is not None  # run_diag says ERROR without one
    out: list[TestResult] = []
    gpus = sorted(ctx.devices)
    ctx.progress(f"correctness GEMM on {len(gpus)} GPU(s)", None if end is None else end - ctx.clock())
    quick = _parallel(ctx, "gemm", {g: _gemm_task(ctx, g, None, False) for g in gpus}, end)
    refs = {}
    for g in gpus:
        r = quick[g]
        if isinstance(r, BaseException):
            out.append(_error("gemm.correctness", g, r))
            continue
        out.append(gemm_mod.gemm_result(r))
        refs[g] = r.reference
    cross = gemm_mod.cross_gpu_result(refs, ctx.names)
    if cross is not None:
        out.append(cross)
    if opts.level < 2 or ctx.stop.is_set():
        return out
    ctx.progress(f"HBM memory test, {opts.passes} pass(es)", None if end is None else end - ctx.clock())
    def memtest(g: int) -> Callable[[], object]:
        return lambda: run_memtest(backend, ctx.devices[g], g, opts.passes, ctx.stop,
                                   fraction=opts.memtest_fraction, chunk_bytes=opts.memtest_chunk_bytes)

    mem = _parallel(ctx, "memtest", {g: memtest(g) for g in gpus}, end)
    for g in gpus:
        out.append(mem[g] if isinstance(mem[g], TestResult) else _error("hbm.memtest", g, mem[g]))
    if ctx.stop.is_set():
        return out
    left = (end - ctx.clock() - RESERVE_S) if end is not None else opts.min_load_s
    if left < opts.min_load_s:
        notes.append(f"the tests before used the budget: load phase stretched to {opts.min_load_s:.0f} s")
        left = opts.min_load_s
    errors = list(ctx.sampler.trace().errors) if ctx.sampler else ["telemetry not sampled"]
    if opts.level == 2:
        ctx.progress(f"sustained checked GEMM, {left:.0f} s", left)
        runs = _parallel(ctx, "sustained", {g: _gemm_task(ctx, g, left, True) for g in gpus}, end)
        for g in gpus:
            r = runs[g]
            if isinstance(r, BaseException):
                out.append(_error("gemm.sustained", g, r))
                continue
            out.append(gemm_mod.gemm_result(r, "gemm.sustained"))
            warm = min(WARMUP_S, 0.2 * r.seconds)
            out.append(load_result("load.gemm", g, _window(ctx, r.started + warm, r.ended, g), ctx.floors, errors))
        return out
    ctx.progress(f"stress: GEMM + verified copies on all GPUs, {left:.0f} s", left)
    stress, workers = start_stress(backend, ctx.devices, opts.gemm, left, ctx.stop, copies=opts.copies)
    _wait(ctx, "stress", [w.thread for w in workers], end)
    stress.ended = ctx.clock()
    for g in gpus:
        if g in stress.gemm_errors:
            out.append(TestResult("stress.gemm", g, "ERROR", stress.gemm_errors[g]))
        elif g in stress.gemm:
            out.append(gemm_mod.gemm_result(stress.gemm[g], "stress.gemm"))
        warm = min(WARMUP_S, 0.2 * (stress.ended - stress.started))
        out.append(load_result("load.stress", g, _window(ctx, stress.started + warm, stress.ended, g), ctx.floors,
                               errors))
    out += [copy_result(c) for c in stress.copies]
    return out
