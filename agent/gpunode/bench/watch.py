"""Telemetry in every bench metric: each step runs inside a window of the shared NVML sampler
(host/gpu/telemetry.py), and each metric of the step gets the summary of the GPUs it measured
(Metric.telemetry): foreign processes, clocks, power, temperatures, clock-event reasons, the PCIe
link, ECC/Xid deltas. bench/trust.py judges it."""

from __future__ import annotations

from collections.abc import Callable

from gpunode.bench.results import Metric


def gpus_of(metric: Metric) -> list[int] | None:
    """The GPUs a metric loaded: its own, a P2P pair, or None (node-wide: every GPU sampled)."""
    if metric.gpu is not None:
        return [metric.gpu]
    pair = [metric.conditions.get(k) for k in ("src", "dst")]
    if all(isinstance(g, int) for g in pair):
        return pair  # type: ignore[return-value]
    return None


def attach(metrics: list[Metric], trace) -> None:
    """Give each measured metric the telemetry of its GPUs over `trace` (a telemetry.Trace)."""
    for m in metrics:
        if m.status == "SKIP" or m.telemetry is not None:
            continue
        summary = trace.summary(gpus_of(m))
        if summary is not None:
            m.telemetry = summary


def watched(run: Callable[[], list[Metric]], sampler) -> list[Metric]:
    """Run one step inside a telemetry window (no sampler: just run it)."""
    if sampler is None:
        return run()
    since = sampler.now()
    metrics = run()
    trace = sampler.trace(since=since)
    if not trace.samples:  # a step shorter than one tick: the latest reading stands for it
        full = sampler.trace()
        if full.samples:
            trace = full.between(since=max(s.t for s in full.samples))
    attach(metrics, trace)
    return metrics


def live_sampler():
    """The live NVML sampler, started; None where there is no NVML (the bench runs without)."""
    try:
        from gpunode.host.gpu.telemetry import TelemetrySampler

        sampler = TelemetrySampler.live(process_every=1)  # short windows: read processes every tick
        sampler.start()
        if not sampler.trace().samples:  # no NVML here: say nothing rather than wait on it per step
            sampler.stop()
            return None
    except Exception:  # noqa: BLE001 - telemetry is an addition to the figures, never their failure
        return None
    return sampler
