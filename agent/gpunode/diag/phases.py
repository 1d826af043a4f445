"""diag's phases in run order, one class each (the Phase protocol: diag/phase.py). A new phase
is a class here (or in its own module) and one entry in PHASES; diag/run.py runs every phase
whose levels include --level, in this order, and stops at the first that was interrupted.

Level 1: a short correctness GEMM on every GPU (with the gate's checks before, in run.py).
Level 2: + HBM memory test + sustained checked GEMM + did the clocks reach their target.
Level 3: + all GPUs under GEMM at once with verified copies beside it, instead of the sustained GEMM.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpunode.diag import gemm as gemm_mod
from gpunode.diag.memtest import run_memtest
from gpunode.diag.phase import (
    WARMUP_S,
    Phase,
    Shared,
    error_result,
    gemm_task,
    load_result,
    load_seconds,
    parallel,
    sampler_errors,
    wait,
    window,
)
from gpunode.diag.results import TestResult
from gpunode.diag.stress import copy_result, start_stress

if TYPE_CHECKING:
    from gpunode.diag.run import DiagContext


class CorrectnessGemm:
    """A short GEMM on every GPU checked against a reference, and the GPUs against each other."""

    name, min_level, max_level = "correctness GEMM", 1, 3

    def run(self, ctx: DiagContext, shared: Shared) -> list[TestResult]:
        gpus = sorted(ctx.devices)
        ctx.progress(f"correctness GEMM on {len(gpus)} GPU(s)", shared.left(ctx))
        quick = parallel(ctx, "gemm", {g: gemm_task(ctx, g, None, False) for g in gpus}, shared.end)
        out, refs = [], {}
        for g in gpus:
            r = quick[g]
            if isinstance(r, BaseException):
                out.append(error_result("gemm.correctness", g, r))
                continue
            out.append(gemm_mod.gemm_result(r))
            refs[g] = r.reference
        cross = gemm_mod.cross_gpu_result(refs, ctx.names)
        return out + ([cross] if cross is not None else [])


class Memtest:
    """Patterns written and read back over most of each GPU's free HBM."""

    name, min_level, max_level = "HBM memory test", 2, 3

    def run(self, ctx: DiagContext, shared: Shared) -> list[TestResult]:
        opts, backend, gpus = ctx.opts, ctx.backend, sorted(ctx.devices)
        ctx.progress(f"HBM memory test, {opts.passes} pass(es)", shared.left(ctx))

        def memtest(g: int):
            return lambda: run_memtest(backend, ctx.devices[g], g, opts.passes, ctx.stop,
                                       fraction=opts.memtest_fraction, chunk_bytes=opts.memtest_chunk_bytes)

        mem = parallel(ctx, "memtest", {g: memtest(g) for g in gpus}, shared.end)
        return [mem[g] if isinstance(mem[g], TestResult) else error_result("hbm.memtest", g, mem[g]) for g in gpus]


class SustainedGemm:
    """Level 2's load: the checked GEMM on every GPU for what is left of --duration."""

    name, min_level, max_level = "sustained checked GEMM", 2, 2

    def run(self, ctx: DiagContext, shared: Shared) -> list[TestResult]:
        left = load_seconds(ctx, shared)
        errors = sampler_errors(ctx)
        gpus = sorted(ctx.devices)
        ctx.progress(f"sustained checked GEMM, {left:.0f} s", left)
        runs = parallel(ctx, "sustained", {g: gemm_task(ctx, g, left, True) for g in gpus}, shared.end)
        out = []
        for g in gpus:
            r = runs[g]
            if isinstance(r, BaseException):
                out.append(error_result("gemm.sustained", g, r))
                continue
            out.append(gemm_mod.gemm_result(r, "gemm.sustained"))
            shared.load[g] = (r.started + min(WARMUP_S, 0.2 * r.seconds), r.ended)
            out.append(load_result("load.gemm", g, window(ctx, *shared.load[g], g), ctx.floors, errors))
        return out


class Stress:
    """Level 3's load: GEMM on all GPUs at once with verified host<->device and GPU->GPU copies."""

    name, min_level, max_level = "stress", 3, 3

    def run(self, ctx: DiagContext, shared: Shared) -> list[TestResult]:
        left = load_seconds(ctx, shared)
        errors = sampler_errors(ctx)
        ctx.progress(f"stress: GEMM + verified copies on all GPUs, {left:.0f} s", left)
        stress, workers = start_stress(ctx.backend, ctx.devices, ctx.opts.gemm, left, ctx.stop, copies=ctx.opts.copies)
        wait(ctx, "stress", [w.thread for w in workers], shared.end)
        stress.ended = ctx.clock()
        out = []
        for g in sorted(ctx.devices):
            if g in stress.gemm_errors:
                out.append(TestResult("stress.gemm", g, "ERROR", stress.gemm_errors[g]))
            elif g in stress.gemm:
                out.append(gemm_mod.gemm_result(stress.gemm[g], "stress.gemm"))
            shared.load[g] = (stress.started + min(WARMUP_S, 0.2 * (stress.ended - stress.started)), stress.ended)
            out.append(load_result("load.stress", g, window(ctx, *shared.load[g], g), ctx.floors, errors))
        return out + [copy_result(c) for c in stress.copies]


CLOCK_SHARE = 0.95  # of the application clock: the median under load may sit a boost bin below it
# Reasons the driver gives for clocks below target that load.* already judges (a power cap is normal
# under a full GEMM; a thermal or hardware slowdown FAILs there).
EXPLAINED = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")


def clock_result(gpu: int, target_mhz: int | None, tel: dict | None) -> TestResult:
    """Did the GPU reach its application SM clock under full load? Held below it with no reason
    the driver names (a clock locked low by someone, a stuck P-state), it computes slower than
    its siblings and raises no throttle flag: only this says so."""
    sm = ((tel or {}).get("sm_clock_mhz") or {}).get("median")
    if sm is None:
        return TestResult("clocks.load", gpu, "SKIP", "no SM clock sampled in the load window", telemetry=tel)
    if not target_mhz:
        return TestResult("clocks.load", gpu, "SKIP", "the driver reports no application clock to compare with")
    figures = {"sm_clock_mhz": sm, "app_clock_mhz": target_mhz, "ratio": round(sm / target_mhz, 3)}
    if sm >= CLOCK_SHARE * target_mhz:
        return TestResult("clocks.load", gpu, "PASS", f"SM clock {sm:.0f} MHz (median) under load reaches its "
                                                      f"application clock {target_mhz} MHz", figures)
    why = [e for e in (tel or {}).get("clock_events") or [] if e in EXPLAINED]
    if why:
        return TestResult("clocks.load", gpu, "PASS", f"SM clock {sm:.0f} MHz (median), below its application clock "
                                                      f"{target_mhz} MHz, held by {', '.join(why)} (judged by load.*)",
                          figures)
    return TestResult("clocks.load", gpu, "WARN", f"SM clock {sm:.0f} MHz (median) under full load, below its "
                                                  f"application clock {target_mhz} MHz, and the driver names no power "
                                                  "or thermal reason: a clock locked low? (nvidia-smi -q -d CLOCK)",
                      figures)


class Clocks:
    """After the load phase: each GPU's SM clock in its full-load window against its application clock."""

    name, min_level, max_level = "clocks", 2, 3

    def run(self, ctx: DiagContext, shared: Shared) -> list[TestResult]:
        return [clock_result(g, ctx.app_clocks.get(g), window(ctx, *shared.load[g], g))
                for g in sorted(ctx.devices) if g in shared.load]


PHASES: tuple[Phase, ...] = (CorrectnessGemm(), Memtest(), SustainedGemm(), Stress(), Clocks())
