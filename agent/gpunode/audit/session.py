"""The use case behind `gpunode audit`, callable without typer (issue 21, thin commands):
`prepare` checks the request, loads config and profile and picks the checks (bad input, or a
selection that matches nothing, is an exits.UsageError said before any check runs), `run`
audits and builds the document, `keep` puts a live node's audit in its history."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from gpunode.exits import UsageError


@dataclass
class AuditRequest:
    """What `gpunode audit` was asked (selections already split at commas)."""

    profile: str | None = None
    overlay: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    only: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    areas: list[str] = field(default_factory=list)
    skip_areas: list[str] = field(default_factory=list)
    snapshot: Path | None = None
    sysroot: Path | None = None
    expected_gpus: int | None = None
    xid_window: float | None = None
    golden: Path | None = None
    config: str | None = None


@dataclass
class AuditJob:
    host: object
    source: str
    profile: object
    chosen: object  # audit.run.Selection: the checks, and the gate checks left out
    config: object


def prepare(req: AuditRequest) -> AuditJob:
    """The checks to run on which host, with which config; UsageError for bad input."""
    if req.expected_gpus is not None and req.expected_gpus < 0:
        raise UsageError("--expected-gpus must be 0 or more")
    if req.xid_window is not None and not 0 < req.xid_window < float("inf"):
        raise UsageError("--xid-window must be positive (hours)")
    try:
        cfg, profile, host, source = _load(req)
        golden = _golden_checks(req.golden) if req.golden is not None else []
        chosen = _choose(req, profile, cfg, golden)  # a part that matches nothing is an error, never a smaller audit
    except (ValueError, FileNotFoundError) as exc:  # ConfigError, ProfileError, BaselineError ...
        raise UsageError(str(exc)) from None
    if not chosen.checks:
        raise UsageError("no check matches the selection (see `gpunode checks`)")
    overrides = {"expected_gpus": req.expected_gpus, "xid_window_hours": req.xid_window}
    cfg = replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
    return AuditJob(host, source, profile, chosen, cfg)


def _load(req: AuditRequest):
    from gpunode.audit.run import load_audit_profile, make_host
    from gpunode.config import load_config
    from gpunode.tune.profiles import parse_set_options

    cfg = load_config(req.config)
    profile = load_audit_profile(req.profile or cfg.profile, cfg, overlays=req.overlay, sets=parse_set_options(req.sets))
    for path in (req.snapshot, req.sysroot):
        if path is not None and not path.is_dir():
            raise UsageError(f"{path}: not a directory")
    snapshot = str(req.snapshot) if req.snapshot else (cfg.snapshot if not req.sysroot else None)
    host, source = make_host(snapshot, str(req.sysroot) if req.sysroot else None)
    return cfg, profile, host, source


def _golden_checks(path: Path):
    from gpunode.audit.golden import golden_checks

    return golden_checks(path)


def _choose(req: AuditRequest, profile, cfg, golden):
    from gpunode.audit.run import choose

    return choose(profile, only=req.only, skip_ids=req.skip, tags=req.tags, areas=req.areas,
                  skip_areas=req.skip_areas, disabled=cfg.disable_checks, added=golden)


def run(job: AuditJob):
    """-> (the run: results and meta, its document). Error counters are judged on their growth
    since this node's last live audit (state dir); a snapshot or a --sysroot tree is not this
    node: nothing kept, nothing written."""
    from gpunode.audit.report import audit_document
    from gpunode.audit.run import run_audit
    from gpunode.state_dir import resolve_state_dir

    state_dir = resolve_state_dir(None, os.environ) if job.host.sys.is_live else None
    result = run_audit(job.host, job.source, job.profile, job.chosen.checks, job.config, state_dir=state_dir)
    if job.chosen.gate_not_run:
        result.meta["gate_checks_not_run"] = job.chosen.gate_not_run_json()
    return result, audit_document(result.results, result.meta)


def keep(job: AuditJob, document: dict) -> str | None:
    """A live node's audit in its history; a warning worth showing (only root owns the state dir)."""
    if not job.host.sys.is_live:  # a replayed snapshot or a --sysroot tree is not this node's history
        return None
    from gpunode.history import record

    warning = record("audit", document)
    return warning if warning and job.host.facts.is_root else None
