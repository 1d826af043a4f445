"""Telemetry sampler shared by bench and diag: what the GPUs did while gpunode loaded them.

A background thread reads every GPU ~10 times a second through a TelemetrySource (live: NVML in
host/gpu/nvml.py; tests: ReplayTelemetrySource over a recorded trace) and waits for Xid events
between reads. The result is a Trace: plain samples that round-trip through JSON, so a recorded
trace is judged exactly as a live one. `summarize()` turns any slice of a trace into the
per-window summary bench and diag store with their figures.

    sampler = TelemetrySampler(source)          # or TelemetrySampler.live()
    sampler.start()
    t0 = sampler.now()
    ...                                         # load the GPUs
    part = sampler.trace(since=t0)              # a window, while still sampling
    trace = sampler.stop()                      # everything; the thread has ended
    trace.summary(gpus=[0])                     # JSON summary (see summarize)
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from gpunode.host.gpu.sample import Sample

# Clock-event reasons that slow a GPU below what it can do. SW power cap is not one: a
# power-limited GPU under sustained GEMM sits at its cap by design.
THROTTLE_EVENTS = ("hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
DEFAULT_INTERVAL_S = 0.1
PROCESS_EVERY = 5  # process lists cost more than counters: read them every 5th tick (~2 Hz)
MAX_SAMPLES = 200_000  # bound memory on very long runs: ~40 min of 8 GPUs at 10 Hz


class TelemetrySource(Protocol):
    """Where samples come from. open/close bracket one sampling run."""

    def open(self) -> list[int]:
        """Start reading; -> the GPU indices that can be read."""
        ...

    def read(self, gpu: int, now: float, processes: bool) -> Sample: ...

    def wait_events(self, timeout_s: float) -> list[dict]:
        """Sleep up to timeout_s, returning early with Xid events ({"gpu", "xid"}) when any come."""
        ...

    def unavailable(self) -> dict[str, str]:
        """What this source cannot watch here ({"xid": why}), for the report."""
        ...

    def close(self) -> None: ...


@dataclass
class Trace:
    """What the sampler saw: samples, Xid events, GPU processes judged foreign while alive."""

    samples: list[Sample] = field(default_factory=list)
    xids: list[dict] = field(default_factory=list)  # {"t", "gpu", "xid"}
    foreign: dict[int, tuple[str | None, int | None]] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    interval_s: float = DEFAULT_INTERVAL_S

    def summary(self, gpus: Iterable[int] | None = None) -> dict[str, Any] | None:
        return summarize(self, gpus)

    def between(self, since: float | None = None, until: float | None = None) -> Trace:
        def inside(t: float) -> bool:
            return (since is None or t >= since) and (until is None or t <= until)

        samples = [s for s in self.samples if inside(s.t)]
        seen = {p[0] for s in samples for p in s.processes or ()}
        return Trace(samples, [x for x in self.xids if inside(x.get("t", 0.0))],
                     {pid: v for pid, v in self.foreign.items() if pid in seen},
                     dict(self.unavailable), list(self.errors), self.interval_s)

    def to_json(self) -> dict:
        return {"interval_s": self.interval_s, "samples": [s.to_json() for s in self.samples],
                "xids": self.xids, "foreign": {str(pid): list(v) for pid, v in self.foreign.items()},
                "unavailable": self.unavailable, "errors": self.errors}

    @classmethod
    def from_json(cls, data: dict) -> Trace:
        return cls(samples=[Sample.from_json(s) for s in data.get("samples") or []],
                   xids=[dict(x) for x in data.get("xids") or []],
                   foreign={int(pid): (v[0], v[1]) for pid, v in (data.get("foreign") or {}).items()},
                   unavailable=dict(data.get("unavailable") or {}),
                   errors=list(data.get("errors") or []),
                   interval_s=float(data.get("interval_s") or DEFAULT_INTERVAL_S))


def summarize(trace: Trace, gpus: Iterable[int] | None = None) -> dict[str, Any] | None:
    """The telemetry of the given GPUs (None: all) as plain JSON; None when nothing was sampled.

    Keys: samples, duration_s, gpus, foreign_processes [{pid, name, used_bytes}], clock_events
    (every reason seen), throttle_events (the ones in THROTTLE_EVENTS), sm_clock_mhz
    {min, median, max}, mem_clock_mhz {min, median}, power_w {median, max}, temp_c {max},
    mem_temp_c {max}, power_limit_w, pcie {gen, width, max_gen, max_width}, and the growth over the
    window of ecc_uncorrected_delta, ecc_corrected_delta, pcie_replay_delta,
    remap_uncorrectable_delta; remap_pending / remap_failure (seen at any time), xid [...],
    read_errors (samples that failed), unavailable {what: why}.
    """
    wanted = None if gpus is None else set(gpus)
    rows = [s for s in trace.samples if wanted is None or s.gpu in wanted]
    good = [s for s in rows if s.error is None]
    if not rows:
        return None
    out = _overview(trace, rows, good)
    out.update(_levels(good))
    out["pcie"] = _pcie(good)
    out.update(_growth(good))
    out["xid"] = [x for x in trace.xids if wanted is None or x.get("gpu") in wanted]
    failed = [s for s in rows if s.error is not None]
    if failed:
        out["read_errors"] = {"count": len(failed), "first": failed[0].error}
    if trace.unavailable:
        out["unavailable"] = dict(trace.unavailable)
    return out


def _overview(trace: Trace, rows: list[Sample], good: list[Sample]) -> dict[str, Any]:
    """summarize's first keys: how much was sampled, of which GPUs, who else ran, clock events."""
    foreign_pids = {p[0] for s in good for p in s.processes or () if p[0] in trace.foreign}
    events = sorted({e for s in good for e in s.clock_events})
    return {
        "samples": len(rows),
        "duration_s": round(max(s.t for s in rows) - min(s.t for s in rows), 2),
        "gpus": sorted({s.gpu for s in rows}),
        "foreign_processes": [{"pid": pid, "name": trace.foreign[pid][0], "used_bytes": trace.foreign[pid][1]}
                              for pid in sorted(foreign_pids)],
        "clock_events": events,
        "throttle_events": [e for e in events if e in THROTTLE_EVENTS],
    }


def _levels(good: list[Sample]) -> dict[str, Any]:
    """Clocks, power and temperatures as min/median/max, and the lowest power limit seen."""
    out: dict[str, Any] = {}
    for key, stats in (("sm_clock_mhz", ("min", "median", "max")), ("mem_clock_mhz", ("min", "median")),
                       ("power_w", ("median", "max")), ("temp_c", ("max",)), ("mem_temp_c", ("max",))):
        values = [getattr(s, key) for s in good if getattr(s, key) is not None]
        if values:
            out[key] = {k: round(_STATS[k](values), 1) for k in stats}
    limits = [s.power_limit_w for s in good if s.power_limit_w]
    if limits:
        out["power_limit_w"] = min(limits)
    return out


def _growth(good: list[Sample]) -> dict[str, Any]:
    """The error counters' growth over the window, and whether a row remap was ever pending or failed."""
    out: dict[str, Any] = {}
    for attr, name in (("ecc_uncorrected", "ecc_uncorrected_delta"), ("ecc_corrected", "ecc_corrected_delta"),
                       ("pcie_replay", "pcie_replay_delta"), ("remap_uncorrectable", "remap_uncorrectable_delta")):
        delta = _delta(good, attr)
        if delta is not None:
            out[name] = delta
    for attr in ("remap_pending", "remap_failure"):
        values = [getattr(s, attr) for s in good if getattr(s, attr) is not None]
        if values:
            out[attr] = any(values)
    return out


_STATS: dict[str, Callable[[list], float]] = {"min": min, "max": max, "median": statistics.median}


def _pcie(rows: list[Sample]) -> dict:
    out = {}
    for key, attr, pick in (("gen", "pcie_gen", min), ("width", "pcie_width", min),
                            ("max_gen", "pcie_max_gen", max), ("max_width", "pcie_max_width", max)):
        values = [getattr(s, attr) for s in rows if getattr(s, attr)]
        if values:
            out[key] = pick(values)
    return out


def _delta(rows: list[Sample], attr: str) -> int | None:
    """Growth of a cumulative counter per GPU over the rows, summed over GPUs."""
    total, seen = 0, False
    for gpu in sorted({s.gpu for s in rows}):
        values = [getattr(s, attr) for s in rows if s.gpu == gpu and getattr(s, attr) is not None]
        if values:
            seen = True
            total += max(0, values[-1] - values[0])
    return total if seen else None


def ancestry(pid: int, proc: Path = Path("/proc")) -> list[int]:
    """pid, its parent, grandparent ... up to 1, from /proc/PID/stat; [] once the process is gone."""
    chain: list[int] = []
    seen: set[int] = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        chain.append(pid)
        try:
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            return chain if len(chain) > 1 else []
        rest = stat[stat.rfind(")") + 2:].split()  # comm may hold spaces and parentheses
        try:
            pid = int(rest[1])
        except (IndexError, ValueError):
            break
    return chain


def own_process_test(me: int | None = None, proc: Path = Path("/proc")) -> Callable[[int], bool]:
    """ours(pid): this process or one it started (nccl-tests, torch.distributed workers)."""
    me = os.getpid() if me is None else me

    def ours(pid: int) -> bool:
        return pid == me or me in ancestry(pid, proc)

    return ours


class TelemetrySampler:
    """Samples every GPU of `source` in its own thread until stop()."""

    def __init__(self, source: TelemetrySource, gpus: Iterable[int] | None = None,
                 interval_s: float = DEFAULT_INTERVAL_S, ours: Callable[[int], bool] | None = None,
                 clock: Callable[[], float] = time.monotonic, max_samples: int = MAX_SAMPLES,
                 process_every: int = PROCESS_EVERY):
        self.source = source
        self.wanted = None if gpus is None else list(gpus)
        self.interval_s = interval_s
        self.ours = ours or own_process_test()
        self.clock = clock
        self.max_samples = max_samples
        self.process_every = max(1, process_every)  # bench: 1, its windows last under a second
        self._trace = Trace(interval_s=interval_s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gpus: list[int] = []
        self._started = False

    @classmethod
    def live(cls, xid_events: bool = True, **kwargs) -> TelemetrySampler:
        from gpunode.host.gpu.nvml import NvmlTelemetrySource

        return cls(NvmlTelemetrySource(xid_events=xid_events), **kwargs)

    def now(self) -> float:
        return self.clock()

    @property
    def started(self) -> bool:
        return self._started

    def start(self) -> TelemetrySampler:
        self._started = True
        try:
            found = self.source.open()
        except Exception as exc:  # noqa: BLE001 - no telemetry is reported, never fatal
            self._trace.errors.append(f"telemetry unavailable: {exc}")
            return self
        self._gpus = [g for g in found if self.wanted is None or g in self.wanted]
        self._trace.unavailable.update(self.source.unavailable())
        self._tick()  # one sample before returning: a window that starts now has a first row
        self._thread = threading.Thread(target=self._loop, name="gpunode-telemetry", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Trace:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._tick()  # a last sample: a window that ends now has its final counters
            self._thread = None
        try:
            self.source.close()
        except Exception as exc:  # noqa: BLE001
            self._trace.errors.append(f"telemetry close: {exc}")
        return self.trace()

    def trace(self, since: float | None = None, until: float | None = None) -> Trace:
        """A copy of what was sampled so far (or between two of now()'s readings)."""
        with self._lock:
            return self._trace.between(since, until)

    def __enter__(self) -> TelemetrySampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _loop(self) -> None:
        ticks = 1
        while not self._stop.is_set():
            due = self.clock() + self.interval_s
            while not self._stop.is_set():
                left = due - self.clock()
                if left <= 0:
                    break
                self._events(self.source.wait_events(min(left, 0.5)))
            if self._stop.is_set():
                break
            self._tick(processes=ticks % self.process_every == 0)
            ticks += 1

    def _events(self, events: list[dict]) -> None:
        if not events:
            return
        now = self.clock()
        with self._lock:
            for ev in events:
                self._trace.xids.append({"t": round(now, 3), **ev})

    def _tick(self, processes: bool = True) -> None:
        rows = []
        for gpu in self._gpus:
            try:
                rows.append(self.source.read(gpu, self.clock(), processes))
            except Exception as exc:  # noqa: BLE001 - one failed read is a sample with an error
                rows.append(Sample(t=self.clock(), gpu=gpu, error=f"{type(exc).__name__}: {exc}"))
        fresh = {p[0]: (p[1], p[2]) for s in rows for p in s.processes or ()}
        # decide foreignness while the process lives: it may be gone when the window closes
        foreign = {pid: v for pid, v in fresh.items() if not self.ours(pid)}
        with self._lock:
            if len(self._trace.samples) + len(rows) <= self.max_samples:
                self._trace.samples.extend(rows)
            elif "truncated" not in self._trace.unavailable:
                self._trace.unavailable["truncated"] = f"more than {self.max_samples} samples; later ones dropped"
            self._trace.foreign.update(foreign)


class ReplayTelemetrySource:
    """Plays a recorded (or hand-made) trace back: each read of a GPU returns its next recorded
    sample (the last one repeats), with the time of the read. Xid events of the trace come back
    from the first wait_events. Tests build fault traces with it (HW slowdown, an Xid, ECC)."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self._next: dict[int, int] = {}
        self._xids = [{k: v for k, v in x.items() if k != "t"} for x in trace.xids]

    @classmethod
    def load(cls, path: Path) -> ReplayTelemetrySource:
        from gpunode.inputs import load_json  # bounded: a recorded trace is input like any other

        return cls(Trace.from_json(load_json(path)))

    def open(self) -> list[int]:
        return sorted({s.gpu for s in self.trace.samples})

    def read(self, gpu: int, now: float, processes: bool) -> Sample:
        mine = [s for s in self.trace.samples if s.gpu == gpu]
        i = self._next.get(gpu, 0)
        self._next[gpu] = i + 1
        sample = mine[min(i, len(mine) - 1)]
        data = sample.to_json()
        data["t"] = now
        out = Sample.from_json(data)
        if not processes:
            out.processes = None
        return out

    def wait_events(self, timeout_s: float) -> list[dict]:
        if self._xids:
            out, self._xids = self._xids, []
            return out
        time.sleep(max(0.0, min(timeout_s, 0.05)))
        return []

    def unavailable(self) -> dict[str, str]:
        return dict(self.trace.unavailable)

    def close(self) -> None:
        pass
