"""Orchestration of `gpunode diag`: levels, phases, telemetry windows, Ctrl-C, one DiagDocument.

Level 1: the gate's checks + a short correctness GEMM on every GPU (seconds).
Level 2: + HBM memory test + sustained checked GEMM on every GPU + clocks (default 120 s in all).
Level 3: + all GPUs under GEMM at once with verified host<->device and GPU->GPU copies beside
         it, for what is left of --duration (default 540 s in all, one 10-minute slot).
The phases are diag/phases.py's table (the Phase protocol: diag/phase.py). Every phase runs on all selected GPUs at once, one thread each; the main thread only waits, so
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
from gpunode.diag.backend import DiagBackend
from gpunode.diag.memtest import CHUNK_BYTES, FRACTION
from gpunode.diag.phase import PROGRESS_EVERY_S, RESERVE_S, Shared, load_result
from gpunode.diag.phase import Interrupted as _Interrupted
from gpunode.diag.phase import error_result as _error
from gpunode.diag.phase import wait as _wait
from gpunode.diag.phases import PHASES
from gpunode.diag.results import DiagDocument, TestResult
from gpunode.diag.verdicts import Floors, load_findings, telemetry_gap
from gpunode.host.gpu.telemetry import TelemetrySampler, Trace
from gpunode.outputs import iso_time
from gpunode.status import worst

DEFAULT_DURATION = {1: None, 2: 120.0, 3: 540.0}
MIN_DURATION = {2: 45.0, 3: 90.0}
MEMTEST_PASSES = {2: 1, 3: 2}
MIN_LOAD_S = 15.0
# Kept importable from here (tests, callers): they live with the phases now.
__all__ = ["PROGRESS_EVERY_S", "RESERVE_S", "DiagContext", "DiagOptions", "_error", "_wait", "load_result",
           "run_diag", "run_telemetry_result"]


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
    app_clocks: dict[int, int] = field(default_factory=dict)  # NVML index -> application SM clock (MHz)


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
        results += _before_gpus(ctx, end)
        results += _on_gpus(ctx, end, notes)
    except (_Interrupted, KeyboardInterrupt):
        ctx.stop.set()
        interrupted = True
        notes.append(f"interrupted after {ctx.clock() - started:.0f} s; GPU memory freed")
    finally:
        trace = _wind_down(ctx, notes)
    found, per_gpu = _whole_run(ctx, trace)
    return DiagDocument(
        gpunode_version=__version__, host=ctx.hostname, time=iso_time(ctx.now_epoch), time_epoch=ctx.now_epoch,
        level=opts.level, duration_s=ctx.clock() - started, planned_s=planned, gpus=ctx.gpus_meta,
        tools=dict(ctx.tools), results=results + found, interrupted=interrupted, telemetry=per_gpu or None,
        notes=notes,
    )


def _before_gpus(ctx: DiagContext, end: float | None) -> list[TestResult]:
    """The gate and DCGM read NVML themselves (init, read, shutdown): the sampler starts after
    them, so its samples are of the GPU phases only and no two NVML users overlap."""
    out = []
    if ctx.gate is not None:
        ctx.progress("gate checks", None if end is None else end - ctx.clock())
        out.append(ctx.gate())
    if ctx.dcgm is not None:
        ctx.progress("dcgmi diag", None)
        found, meta = ctx.dcgm()
        out += found
        if meta.get("version"):
            ctx.tools["dcgm"] = meta["version"]
    if ctx.sampler is not None:
        ctx.sampler.start()
    return out


def _on_gpus(ctx: DiagContext, end: float | None, notes: list[str]) -> list[TestResult]:
    if ctx.backend is None:
        return [TestResult("gpu.kernels", None, "ERROR", f"no GPU backend: {ctx.backend_why}")]
    if not ctx.devices:
        return [TestResult("gpu.kernels", None, "ERROR", "no GPU selected or visible to the backend")]
    return _gpu_phases(ctx, end, notes)


def _wind_down(ctx: DiagContext, notes: list[str]) -> Trace | None:
    """However the run ended: the sampler stopped (its trace), GPU memory released."""
    trace = ctx.sampler.stop() if ctx.sampler is not None and ctx.sampler.started else None
    if ctx.backend is not None:
        try:
            ctx.backend.release()
        except Exception as exc:  # noqa: BLE001
            notes.append(f"releasing GPU memory: {exc}")
    return trace


def _whole_run(ctx: DiagContext, trace: Trace | None) -> tuple[list[TestResult], dict[str, dict]]:
    """The telemetry result of each GPU over the whole run, and its summary for the document."""
    out, per_gpu = [], {}
    if ctx.backend is None or not ctx.devices:
        return out, per_gpu
    errors = list(trace.errors) if trace else ["telemetry not sampled"]
    for gpu in sorted(ctx.devices):
        tel = trace.summary(gpus=[gpu]) if trace else None
        if tel:
            per_gpu[str(gpu)] = tel
        out.append(run_telemetry_result(gpu, tel, errors))
    return out, per_gpu


def _gpu_phases(ctx: DiagContext, end: float | None, notes: list[str]) -> list[TestResult]:
    """Every phase of this level (diag/phases.py), in order, until one was stopped."""
    shared, out = Shared(end, notes), []
    for i, phase in enumerate(p for p in PHASES if p.min_level <= ctx.opts.level <= p.max_level):
        if i and ctx.stop.is_set():
            break
        out += phase.run(ctx, shared)
    return out
