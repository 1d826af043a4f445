"""Running an audit: pick the host, the profile and the checks, run them, describe the run."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from gpunode import __version__
from gpunode.audit.context import AuditContext
from gpunode.audit.counters import CounterStore
from gpunode.audit.engine import Check, Result, Selection, run_checks, selection
from gpunode.config import Config
from gpunode.host.gpu.source import GpuSource
from gpunode.host.seam import Host, live_host, snapshot_host, sysroot_host
from gpunode.model.profile import Profile
from gpunode.outputs import iso_time
from gpunode.tune.profiles import load_profile


@dataclass
class AuditRun:
    """The results of one audit and what describes the run (host, profile, time, GPUs)."""

    results: list[Result]
    meta: dict


def make_host(snapshot: str | None = None, sysroot: str | None = None,
              gpu: GpuSource | None = None) -> tuple[Host, str]:
    """The host to audit and how to name it. `gpu`: a live NVML source already started."""
    if snapshot and sysroot:
        raise ValueError("give --snapshot or --sysroot, not both")
    if snapshot:
        return snapshot_host(snapshot), f"snapshot:{snapshot}"
    if sysroot:
        return sysroot_host(sysroot), f"sysroot:{sysroot}"
    host = live_host()
    return (replace(host, gpu=gpu) if gpu is not None else host), "live"


def choose_checks(profile: Profile, only=(), skip_ids=(), tags=(), areas=(), skip_areas=()) -> list[Check]:
    return choose(profile, only, skip_ids, tags, areas, skip_areas).checks


class SelectionError(ValueError):
    """An --only/--skip pattern, --tag, --area or disable_checks entry that matches no check."""


def choose(profile: Profile, only=(), skip_ids=(), tags=(), areas=(), skip_areas=(), disabled=(),
           added=()) -> Selection:
    """The checks of a selection; SelectionError when a part of it matches nothing. `added`:
    checks asked for besides the catalogue (--golden), chosen by id patterns only."""
    from gpunode.checks import AREA_MODULES, GATE_MODULES, all_checks

    modules = GATE_MODULES if set(tags) == {"gate"} else AREA_MODULES
    chosen = selection(all_checks(profile, modules), only, skip_ids, tags, areas, skip_areas, disabled, added)
    if chosen.unmatched and modules != AREA_MODULES:  # it may name a check the gate's modules do not hold
        chosen = selection(all_checks(profile, AREA_MODULES), only, skip_ids, tags, areas, skip_areas, disabled,
                           added)
    if chosen.unmatched:
        raise SelectionError("; ".join(chosen.unmatched))
    return chosen


def run_audit(
    host: Host,
    source: str,
    profile: Profile,
    checks: list[Check],
    cfg: Config,
    check_timeout: float = 10.0,
    total_timeout: float | None = None,
    on_result=None,
    state_dir: Path | None = None,
) -> AuditRun:
    """state_dir: where error counters' previous readings are kept (live audits only; None for
    snapshots and sysroots, whose audits must not write the live node's state)."""
    counters = CounterStore.load(state_dir, host)
    ctx = AuditContext(host=host, profile=profile, config=cfg, counters=counters)
    started = time.monotonic()
    results = run_checks(checks, ctx, check_timeout=check_timeout, total_timeout=total_timeout, on_result=on_result)
    duration = time.monotonic() - started
    meta = {
        "gpunode_version": __version__,
        "host": host.facts.hostname,
        "time": iso_time(host.facts.now),
        "time_epoch": host.facts.now,
        "source": source,
        "profile": profile.name,
        "duration_s": round(duration, 3),
        "gpus": _gpu_summary(ctx),
    }
    warnings = [w for w in (counters.problem, counters.save()) if w]
    if warnings:
        meta["warnings"] = warnings
    return AuditRun(results, meta)


def _gpu_summary(ctx: AuditContext) -> dict:
    """Identity of the GPUs, for reports and baseline selection (never blocks past the NVML wait)."""
    try:
        return ctx.inventory().summary()
    except TimeoutError as exc:
        return {"available": False, "error": str(exc)}


def load_audit_profile(name: str, config: Config, overlays=(), sets=None, cache=None) -> Profile:
    return load_profile(name, overlays=[*config.overlays, *overlays], sets=sets, cache=cache)
