"""The use case behind `gpunode apply`, callable without typer (issue 21, thin commands):
`prepare` checks the request and loads the profile (bad input is an exits.UsageError, said
before anything is locked or written), `run` applies it (or --boot re-applies, or --prove
benches around it) and `trail` logs what was done. The command parses, calls these, renders."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.exits import OWN_ERROR_EXIT, GpunodeError, UsageError


class Stopped(GpunodeError):
    """The apply did not happen (lock held, an unfinished apply, journal not writable, not
    confirmed); the state dir's warnings are worth showing with it."""

    exit_code = OWN_ERROR_EXIT


@dataclass
class ApplyRequest:
    """What `gpunode apply` was asked (--only/--skip already split at commas)."""

    profile: str | None = None
    dry_run: bool = False
    only: list[str] = field(default_factory=list)
    skip: list[str] = field(default_factory=list)
    overlay: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    allow_reboot_settings: bool = False
    no_persist: bool = False
    boot: bool = False
    state_dir: str | None = None
    sysroot: Path | None = None
    config: str | None = None
    yes: bool = False
    prove: bool = False


@dataclass
class ApplyJob:
    """A checked request: the host, its state dir, the profile and the settings to apply."""

    req: ApplyRequest
    host: object
    state: object  # tune.journal.StateDir
    profile: object  # model.profile.Profile
    settings: list
    config: object | None  # None at --boot (no site config is read)
    boot_argv: list[str]

    @property
    def live_change(self) -> bool:
        return self.host.sys.is_live and not self.req.dry_run and not self.req.boot

    @property
    def needs_confirm(self) -> bool:
        return self.live_change and not self.req.yes


def host_for(sysroot: Path | None):
    """The live host, or the files under --sysroot (a UsageError if it is not a directory)."""
    from gpunode.host.seam import live_host, sysroot_host

    if sysroot is None:
        return live_host()
    if not sysroot.is_dir():
        raise UsageError(f"{sysroot}: not a directory")
    return sysroot_host(sysroot.resolve())


def prepare(req: ApplyRequest, environ: Mapping[str, str] = os.environ, make_host=host_for) -> ApplyJob:
    """The job for this request; UsageError (one line) for bad input, before anything is locked.
    make_host(sysroot): the host to change (tests hand in a fixture tree)."""
    from gpunode.state_dir import resolve_state_dir
    from gpunode.tune.journal import StateDir

    try:
        if req.boot and (req.profile or req.only or req.skip or req.overlay or req.sets):
            raise ValueError("--boot re-applies the recorded settings; it takes no --profile/--only/--skip/--overlay/--set")
        host = make_host(req.sysroot)
        state = StateDir(resolve_state_dir(req.state_dir, environ), sysroot=host.sys.root)  # a --sysroot's own
        cfg, profile, settings = _profile(req, host)
    except ValueError as exc:  # ConfigError, ProfileError are ValueErrors
        raise UsageError(" ".join(str(exc).split())) from None  # one line, even for YAML errors
    boot_argv = [sys.executable, "-m", "gpunode", "apply", "--boot"] + (
        ["--state-dir", str(state.root)] if req.state_dir else [])
    job = ApplyJob(req, host, state, profile, settings, cfg, boot_argv)
    _check_may_change(job)
    return job


def _profile(req: ApplyRequest, host):
    from gpunode.audit.run import load_audit_profile
    from gpunode.config import load_config
    from gpunode.tune.plan import select_settings
    from gpunode.tune.profiles import parse_set_options
    from gpunode.tune.session import boot_profile

    if req.boot:
        return None, *boot_profile(host)
    cfg = load_config(req.config)
    profile = load_audit_profile(req.profile or cfg.profile, cfg, overlays=req.overlay, sets=parse_set_options(req.sets))
    return cfg, profile, select_settings(profile, req.only, req.skip)


def _check_may_change(job: ApplyJob) -> None:
    from gpunode.config import DEFAULT_PATH

    if job.live_change and not job.req.profile and job.config.path is None:
        raise UsageError(f"apply changes this host: name the profile with --profile NAME (or set `profile:` in the site "
                         f"config {DEFAULT_PATH}); --dry-run shows the plan")
    if job.host.sys.is_live and not job.req.dry_run and not job.host.facts.is_root:
        raise UsageError("apply changes the host and needs root (use --dry-run to see the plan)")


def gpu_control(host, changes):
    """NVML only when a GPU change is to be written or restored on a live host."""
    from gpunode.host.gpu.control import GpuControlError, NoGpuControl
    from gpunode.tune.actions import REGISTRY

    if not host.sys.is_live or not any(REGISTRY[c.action].needs_gpu for c in changes if c.action in REGISTRY):
        return NoGpuControl("GPU settings can only be changed on a live host")
    try:
        from gpunode.host.gpu.nvml import NvmlGpuControl

        return NvmlGpuControl()
    except Exception as exc:  # noqa: BLE001 - no driver, no library: refuse the GPU changes only
        return NoGpuControl(f"NVML unavailable: {GpuControlError(exc)}")


def run(job: ApplyJob, confirm: Callable[[list[dict]], None] | None = None, control=gpu_control):
    """-> (ApplyOutcome, Proof or None). confirm(rows) is asked under the lock with the plan about
    to be written (it raises a Stopped to refuse). Stopped: the apply did not start."""
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.journal import JournalError
    from gpunode.tune.lock import LockBusy
    from gpunode.tune.session import Refused

    env = ApplyEnv(host=job.host, gpu=NoGpuControl(), run_post=job.host.sys.is_live)
    try:
        return _apply(job, env, confirm, control)
    except (LockBusy, Refused, JournalError) as exc:
        raise Stopped(str(exc)) from exc
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    finally:
        env.gpu.close()


def _apply(job: ApplyJob, env, confirm, control):
    from gpunode.tune.session import apply_profile, boot_reapply, plan_changes

    req = job.req
    if not req.dry_run:  # GPU control only if GPU changes are planned (at boot too: persistence, power)
        _, preview = plan_changes(env, job.profile, job.settings, req.allow_reboot_settings,
                                  not (req.no_persist or req.boot), job.boot_argv)
        env.gpu = control(job.host, preview)
    if req.boot:
        return boot_reapply(env, job.state, dry_run=req.dry_run), None
    kw = {"allow_reboot": req.allow_reboot_settings, "persist": not req.no_persist, "boot_argv": job.boot_argv,
          "confirm": confirm if job.needs_confirm else None}
    if req.prove and not req.dry_run:  # bench, apply, bench; rolled back when a figure got worse
        from gpunode.tune import prove as proving

        proof = proving.prove_apply(env, job.profile, job.settings, job.state, proving.bench_for_prove(job.host), **kw)
        return proof.apply, proof
    return apply_profile(env, job.profile, job.settings, job.state, dry_run=req.dry_run, **kw), None


def trail(job: ApplyJob, outcome, proof=None) -> None:
    """The audit trail (syslog/journal) of an apply that did or tried something; with --prove, what
    the proof kept (a change it rolled back is not left reading "applied")."""
    if job.req.dry_run or outcome.result == "nothing-to-change":
        return
    import signal

    from gpunode.trail import log

    said = proof or outcome
    stopped = proof.signal if proof is not None else None  # a signal stopping the batch is in its reason
    log("apply", {"id": outcome.apply_id, "profile": job.profile.name, "root": str(job.req.sysroot or "/"),
                  "result": said.result, "reason": said.reason,
                  "changes": sum(1 for r in outcome.rows if r["status"] == "applied"),
                  "signal": signal.Signals(stopped).name if stopped else None,
                  "unrecorded": len(proof.unrecorded) if proof is not None and proof.unrecorded else None},
        None if job.req.boot else job.config)


@dataclass
class RollbackJob:
    """`gpunode rollback`: the host and state dir, and which apply to undo (None: the newest)."""

    host: object
    state: object  # tune.journal.StateDir
    apply_id: str | None
    force: bool
    sysroot: Path | None


@dataclass
class RollbackOutcome:
    record: object | None  # the apply undone; None: nothing to roll back (not an error)
    results: list = field(default_factory=list)  # tune.rollback.RestoreResult per change
    nothing: str = ""  # why there was nothing to roll back
    unrecorded: list[str] = field(default_factory=list)  # rollback records the journal could not write
    unrecorded_why: str = ""
    signal: int | None = None  # a SIGINT/SIGTERM/SIGHUP that came during the restores (it waited)

    @property
    def exit_code(self) -> int:
        """0 all restored (or nothing to roll back), 1 some left as someone changed them, 3 errors
        (a journal that could not record the rollback too: it is not settled yet)."""
        if self.unrecorded or any(r.status == "error" for r in self.results):
            return OWN_ERROR_EXIT
        return 1 if any(r.status == "left" for r in self.results) else 0


def prepare_rollback(apply_id: str | None, state_dir: str | None, sysroot: Path | None, force: bool = False,
                     environ: Mapping[str, str] = os.environ, make_host=host_for) -> RollbackJob:
    from gpunode.state_dir import resolve_state_dir
    from gpunode.tune.journal import StateDir

    host = make_host(sysroot)
    state = StateDir(resolve_state_dir(state_dir, environ), sysroot=host.sys.root)  # a --sysroot's own applies
    if host.sys.is_live and not host.facts.is_root:
        raise UsageError("rollback changes the host and needs root")
    return RollbackJob(host, state, apply_id, force, sysroot)


def run_rollback(job: RollbackJob, control=gpu_control) -> RollbackOutcome:
    """Undo the apply; Stopped (exit 3) when it cannot start. A journal that fails during the
    restores does not stop them: the outcome lists what it could not record."""
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.execute import StopSignals
    from gpunode.tune.journal import JournalError, JournalWriteError
    from gpunode.tune.lock import LockBusy
    from gpunode.tune.rollback import RollbackUnrecorded
    from gpunode.tune.session import NothingToRollBack, Refused, rollback

    env = ApplyEnv(host=job.host, gpu=NoGpuControl(), run_post=job.host.sys.is_live)
    stop = StopSignals(undoing=True)
    try:
        if job.state.exists():
            env.gpu = control(job.host, _recorded_changes(job))
        record, results = rollback(env, job.state, job.apply_id, force=job.force, stop=stop)
    except NothingToRollBack as exc:
        return RollbackOutcome(None, nothing=str(exc))
    except RollbackUnrecorded as exc:  # the restores went on; the journal is settled by a later rollback
        return RollbackOutcome(exc.record, exc.results, unrecorded=exc.unrecorded, unrecorded_why=exc.why,
                               signal=stop.signum)
    except JournalWriteError as exc:  # before the first restore: a full disk is not bad input
        raise Stopped(f"{exc}; nothing was restored (root {job.host.sys.root}, state dir {job.state.root}): "
                      "run it again once the state dir can be written") from exc
    except (LockBusy, Refused, JournalError) as exc:
        raise Stopped(str(exc)) from exc
    finally:
        env.gpu.close()
    return RollbackOutcome(record, results, signal=stop.signum)


def _recorded_changes(job: RollbackJob) -> list:
    target = job.state.load(job.apply_id) if job.apply_id else None
    return list(target.changes.values()) if target else [c for r in job.state.records() for c in r.changes.values()]


def rollback_trail(job: RollbackJob, outcome: RollbackOutcome) -> None:
    """The audit trail of a rollback; a signal that waited for the restores is named (SIGHUP:
    the terminal that would have shown the report is gone, this line says what was done)."""
    import signal

    from gpunode.trail import log

    results = outcome.results
    log("rollback", {"id": outcome.record.id, "profile": outcome.record.begin.get("profile"),
                     "root": str(job.sysroot or "/"), "restored": sum(1 for r in results if r.status == "restored"),
                     "left": sum(1 for r in results if r.status in ("left", "error")),
                     "signal": signal.Signals(outcome.signal).name if outcome.signal else None})
