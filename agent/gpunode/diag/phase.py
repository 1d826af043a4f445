"""The door for a diag phase (issue 21 item 4), as DCGM's plugins are: a `Phase` has a name,
the levels that run it and `run(ctx, shared) -> [TestResult]`; diag/phases.py lists them in
run order and diag/run.py runs those of the chosen level until one is stopped. What the
phases share lives here: one task per GPU in threads (the main thread waits, so Ctrl-C lands
there), an exception as that GPU's ERROR, the telemetry of a window, the full-load verdict.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from gpunode.diag import gemm as gemm_mod
from gpunode.diag.backend import AllocationError
from gpunode.diag.results import TestResult
from gpunode.diag.verdicts import Floors, load_findings, telemetry_gap
from gpunode.status import worst

if TYPE_CHECKING:
    from gpunode.diag.run import DiagContext

RESERVE_S = 4.0  # kept back at the end: joining, freeing memory, the last telemetry sample
WARMUP_S = 10.0  # clocks and power ramp up: floors are judged after this
PROGRESS_EVERY_S = 30.0


@dataclass
class Shared:
    """What the phases of one run share: the deadline, the run's notes, and each GPU's
    full-load window (since, until) once a load phase measured it."""

    end: float | None
    notes: list[str]
    load: dict[int, tuple[float, float]] = field(default_factory=dict)

    def left(self, ctx: DiagContext) -> float | None:
        return None if self.end is None else self.end - ctx.clock()


class Phase(Protocol):
    name: str  # the progress word; its results carry their own names (gemm.correctness ...)
    min_level: int  # the lowest --level that runs it
    max_level: int  # the highest (3: every level from min_level up)

    def run(self, ctx: DiagContext, shared: Shared) -> list[TestResult]: ...


class Interrupted(Exception):
    pass


def parallel(ctx: DiagContext, label: str, tasks: dict[int, Callable[[], object]], end: float | None) -> dict:
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
    wait(ctx, label, threads, end)
    return out


def wait(ctx: DiagContext, label: str, threads: list[threading.Thread], end: float | None) -> None:
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
        raise Interrupted() from None


def error_result(name: str, gpu: int | None, exc: BaseException) -> TestResult:
    status = "ERROR"
    text = str(exc) if isinstance(exc, AllocationError) else f"{type(exc).__name__}: {exc}"
    return TestResult(name, gpu, status, text.splitlines()[0][:300] if text else type(exc).__name__)


def gemm_task(ctx: DiagContext, gpu: int, seconds: float | None, measure_plain: bool):
    def task():
        worker = ctx.backend.gemm(ctx.devices[gpu], ctx.opts.gemm.dtype, ctx.opts.gemm.size, ctx.opts.gemm.seed)
        try:
            return gemm_mod.run_gemm(worker, gpu, ctx.opts.gemm, seconds, ctx.stop, measure_plain)
        finally:
            worker.close()
    return task


def window(ctx: DiagContext, since: float, until: float, gpu: int) -> dict | None:
    if ctx.sampler is None:
        return None
    return ctx.sampler.trace(since=since, until=until).summary(gpus=[gpu])


def load_seconds(ctx: DiagContext, shared: Shared) -> float:
    """How long the load phase runs: what is left of --duration, at least opts.min_load_s."""
    opts = ctx.opts
    left = (shared.end - ctx.clock() - RESERVE_S) if shared.end is not None else opts.min_load_s
    if left < opts.min_load_s:
        shared.notes.append(f"the tests before used the budget: load phase stretched to {opts.min_load_s:.0f} s")
        left = opts.min_load_s
    return left


def sampler_errors(ctx: DiagContext) -> list[str]:
    return list(ctx.sampler.trace().errors) if ctx.sampler else ["telemetry not sampled"]


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
