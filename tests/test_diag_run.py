"""diag's orchestration (diag/run.py, diag/stress.py) on the numpy CPU backend: every worker is
closed and the backend released however a run ends, the budget and the telemetry windows, and
the results each phase adds. The clock is the test's where the budget matters."""

from __future__ import annotations

import threading

import pytest
from test_diag import MEMORY, by, healthy_trace

from gpunode.bench.backend import Device
from gpunode.diag import run as run_mod
from gpunode.diag.backend_numpy import NumpyDiag
from gpunode.diag.gemm import GemmPlan
from gpunode.diag.results import TestResult
from gpunode.diag.run import DiagContext, DiagOptions, run_diag, run_telemetry_result
from gpunode.diag.stress import CopyRun, copy_loop, start_stress
from gpunode.host.gpu.telemetry import ReplayTelemetrySource, TelemetrySampler


class Recording(NumpyDiag):
    """NumpyDiag that counts workers made and closed, and releases."""

    def __init__(self, *a, **kw):
        super().__init__(*a, memory_bytes=MEMORY, **kw)
        self.made, self.closed, self.releases = 0, 0, 0
        self.release_error: Exception | None = None

    def _track(self, worker):
        self.made += 1
        close = worker.close

        def counted():
            self.closed += 1
            close()

        worker.close = counted
        return worker

    def gemm(self, *a, **kw):
        return self._track(super().gemm(*a, **kw))

    def memtest(self, *a, **kw):
        return self._track(super().memtest(*a, **kw))

    def pcie(self, *a, **kw):
        return self._track(super().pcie(*a, **kw))

    def p2p(self, *a, **kw):
        return self._track(super().p2p(*a, **kw))

    def release(self):
        self.releases += 1
        super().release()
        if self.release_error:
            raise self.release_error


def ctx_of(backend, level=1, gpus=(0,), sampler=True, clock=None, **opts) -> DiagContext:
    opts.setdefault("min_load_s", 0.2)
    if level > 1:
        opts.setdefault("duration", 0.3)
    options = DiagOptions(level=level, gemm=GemmPlan(size=32, batch=4, quick_batches=1), memtest_passes=1,
                          memtest_chunk_bytes=1 << 20, **opts)
    ctx = DiagContext(opts=options, hostname="node1", now_epoch=1.7e9, gpus_meta={}, names={g: "cpu" for g in gpus},
                      devices={g: Device(g, "cpu", None, (0, 0), 0) for g in gpus}, backend=backend,
                      sampler=TelemetrySampler(ReplayTelemetrySource(healthy_trace(gpus)), interval_s=0.01,
                                               ours=lambda pid: pid < 1000) if sampler else None)
    if clock is not None:
        ctx.clock = clock
    return ctx


def test_default_durations_per_level():
    assert DiagOptions(level=1).planned_s is None
    assert DiagOptions(level=2).planned_s == 120.0 and DiagOptions(level=3).planned_s == 540.0
    assert DiagOptions(level=2, duration=60).planned_s == 60
    assert DiagOptions(level=2).passes == 1 and DiagOptions(level=3).passes == 2
    assert DiagOptions(level=3, memtest_passes=5).passes == 5
    for fraction in (0.04, 0.99):
        with pytest.raises(ValueError, match="fraction"):
            DiagOptions(memtest_fraction=fraction)
    assert DiagOptions(memtest_fraction=0.05).memtest_fraction == 0.05
    assert DiagOptions(memtest_fraction=0.98).memtest_fraction == 0.98


@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_worker_is_closed_and_the_backend_released(level):
    backend = Recording()
    doc = run_diag(ctx_of(backend, level, gpus=(0, 1)))
    assert doc.status == "OK", [(r.name, r.status, r.message) for r in doc.results]
    assert backend.made >= 2 and backend.closed == backend.made and backend.releases >= 1


def test_a_failing_release_is_noted_not_raised():
    backend = Recording()
    backend.release_error = RuntimeError("CUDA error: an illegal memory access")
    doc = run_diag(ctx_of(backend, 1))
    assert "releasing GPU memory: CUDA error: an illegal memory access" in doc.notes


def test_no_device_selected_is_an_error_and_no_telemetry_result():
    backend = Recording()
    ctx = ctx_of(backend, 1)
    ctx.devices = {}
    doc = run_diag(ctx)
    assert [(r.name, r.status) for r in doc.results] == [("gpu.kernels", "ERROR")]
    assert by(doc, "gpu.kernels").message == "no GPU selected or visible to the backend" and doc.exit_code == 3
    assert backend.releases == 1


def test_no_backend_releases_nothing_and_judges_no_telemetry():
    ctx = ctx_of(None, 1)
    ctx.backend_why = "torch not installed"
    doc = run_diag(ctx)
    assert [(r.name, r.status) for r in doc.results] == [("gpu.kernels", "ERROR")]


def test_without_a_sampler_telemetry_is_said_not_sampled():
    doc = run_diag(ctx_of(Recording(), 1, sampler=False))
    tel = by(doc, "telemetry")
    assert tel.status == "WARN" and "telemetry not sampled" in tel.message and doc.telemetry is None


def test_the_sampler_is_stopped_and_its_summary_kept_per_gpu():
    ctx = ctx_of(Recording(), 1, gpus=(0, 1))
    doc = run_diag(ctx)
    assert ctx.sampler._thread is None and sorted(doc.telemetry) == ["0", "1"]


class Clock:
    """A clock that moves only when told, or by `step` on every read."""

    def __init__(self, step=0.0):
        self.now, self.step = 1000.0, step

    def __call__(self):
        self.now += self.step
        return self.now


def test_the_load_phase_is_stretched_to_its_minimum_only_below_it():
    # constant clock: the budget left for the load phase is duration - RESERVE_S exactly
    exact = run_diag(ctx_of(Recording(), 2, clock=Clock(), duration=run_mod.RESERVE_S + 0.25, min_load_s=0.25))
    assert not any("stretched" in n for n in exact.notes), exact.notes
    short = run_diag(ctx_of(Recording(), 2, clock=Clock(), duration=run_mod.RESERVE_S + 0.125, min_load_s=0.25))
    assert "the tests before used the budget: load phase stretched to 0 s" in short.notes


def test_progress_is_reported_every_progress_interval_while_waiting():
    seen = []
    ctx = ctx_of(Recording(), 1, clock=Clock(step=run_mod.PROGRESS_EVERY_S))
    ctx.progress = lambda text, left: seen.append((text, left))
    threads = [threading.Thread(target=lambda: threading.Event().wait(0.6))]
    threads[0].start()
    run_mod._wait(ctx, "memtest", threads, end=None)
    assert ("memtest", None) in seen
    quiet = []
    ctx = ctx_of(Recording(), 1, clock=Clock(step=run_mod.PROGRESS_EVERY_S / 4))
    ctx.progress = lambda text, left: quiet.append(text)
    threads = [threading.Thread(target=lambda: threading.Event().wait(0.6))]
    threads[0].start()
    run_mod._wait(ctx, "memtest", threads, end=None)
    assert quiet == []


def test_telemetry_result_counts_xid_events_and_its_samples():
    result = run_telemetry_result(0, {"samples": 12, "xid": [{"xid": 79}, {"xid": 48}]}, [])
    assert result.status == "FAIL" and result.figures["xid_events"] == 2
    clean = run_telemetry_result(0, {"samples": 12, "ecc_uncorrected_delta": 0}, [])
    assert clean.status == "PASS" and clean.message.endswith("(12 samples)")
    assert clean.figures == {"ecc_uncorrected_delta": 0, "xid_events": 0}


def test_an_error_result_keeps_its_first_line():
    result = run_mod._error("gemm.correctness", 0, RuntimeError("CUDA error\nstack"))
    assert result == TestResult("gemm.correctness", 0, "ERROR", "RuntimeError: CUDA error")


# --- stress -------------------------------------------------------------------------------------------


def test_stress_closes_every_worker_and_copies_only_between_several_gpus():
    backend = Recording()
    stop = threading.Event()
    one, workers = start_stress(backend, {0: Device(0, "cpu", None, (0, 0), 0)}, GemmPlan(size=32, batch=2), 0.0, stop)
    for w in workers:
        w.thread.join()
    assert [c.name for c in one.copies] == ["pcie.copy"] and backend.closed == backend.made == 2
    assert one.copies[0].rounds == 1 and one.copies[0].nbytes == 2 * MEMORY  # there and back, once
    two, workers = start_stress(backend, {g: Device(g, "cpu", None, (0, 0), 0) for g in (0, 1)},
                                GemmPlan(size=32, batch=2), 0.0, stop, copies=False)
    for w in workers:
        w.thread.join()
    assert two.copies == [] and sorted(two.gemm) == [0, 1]


def test_a_copy_worker_that_cannot_be_made_is_an_error_and_one_that_breaks_is_closed():
    run = CopyRun("GPU0 host<->device", "pcie.copy", 0)

    def broken():
        raise RuntimeError("cudaHostAlloc failed")

    copy_loop(broken, run, deadline=0.0, stop=threading.Event())
    assert run.error == "RuntimeError: cudaHostAlloc failed" and run.rounds == 0

    class Breaks:
        closed = False

        def round(self):
            raise OSError("gone")

        def close(self):
            Breaks.closed = True

    run = CopyRun("x", "pcie.copy", 0)
    copy_loop(Breaks, run, deadline=0.0, stop=threading.Event())
    assert run.error == "OSError: gone" and Breaks.closed
