"""One apply, rollback or boot re-apply from start to end, for the CLI and for tests: plan,
persistence, lock, journal, execute. Printing is the caller's job."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpunode import __version__
from gpunode.model.profile import Profile
from gpunode.outputs import iso_time
from gpunode.tune.kinds.change import PlannedFiles

from .actions import ApplyEnv
from .execute import StopSignals, execute
from .journal import JournalError, StateDir, new_apply_id
from .lock import ApplyLocks
from .persist import BOOT_SPEC, load_boot_spec, plan_persistence
from .plan import Plan, make_plan
from .render import change_rows
from .rollback import RestoreResult, rollback_record, root_refusal


class Refused(RuntimeError):
    """The apply or rollback will not start (lock held, interrupted apply, wrong root)."""


class NothingToRollBack(Refused):
    """No apply holds changes: the host is already as before gpunode (not an error, so that a
    fleet rollback can be run twice)."""


@dataclass
class ApplyOutcome:
    apply_id: str | None
    plan: Plan
    changes: list  # plan.changes + persistence changes, in the order shown
    rows: list[dict]
    result: str  # planned | nothing-to-change | applied | failed | interrupted (rolled back after a signal)
    reason: str = ""
    restored: list[RestoreResult] = field(default_factory=list)
    signal: int | None = None  # SIGINT/SIGTERM that stopped the batch
    unrecorded: list[str] = field(default_factory=list)  # what the journal could not record
    unrecorded_why: str = ""

    @property
    def exit_code(self) -> int:
        if self.signal is not None:
            return signal_exit_code(self.signal)
        if self.result == "failed":
            return 3
        if self.result in ("applied", "nothing-to-change") and any(
                r["status"] == "blocked" or (r["status"] == "applied" and r["reboot_required"]) for r in self.rows):
            return 1  # done, but the host is not yet at the profile (reboot pending, GPU reset, refused)
        return 0


def signal_exit_code(signum: int) -> int:
    """The exit code of a run a signal stopped (and rolled back): as a shell reports a command a signal ended."""
    return 128 + signum


def host_root(host) -> str:
    return str(host.sys.root)


def undo_command(host, state: StateDir, apply_id: str | None) -> str:
    """The rollback command for this root and state dir, safe to paste (never the live host's
    when the apply was made under --sysroot)."""
    import shlex

    argv = ["gpunode", "rollback"] + (["--id", apply_id] if apply_id else [])
    if not host.sys.is_live:
        argv += ["--sysroot", host_root(host)]
    argv += ["--state-dir", str(state.root)]
    return shlex.join(argv)


def apply_profile(env: ApplyEnv, profile: Profile, settings, state: StateDir, *, dry_run: bool = False,
                  allow_reboot: bool = False, persist: bool = True, boot_argv: list[str] | None = None,
                  mode: str = "apply", journaled: bool = True,
                  confirm=None) -> ApplyOutcome:
    """confirm(rows): called under the lock with exactly the plan about to be written; it
    raises to stop (nothing is journaled or written then)."""
    host = env.host
    if dry_run:
        return _plan_only(env, profile, settings, allow_reboot, persist, boot_argv)
    state.ensure()
    with ApplyLocks(host.sys.root, state.root, f"gpunode {mode}"):
        _refuse_unfinished(host, state, journaled)
        plan, changes = plan_changes(env, profile, settings, allow_reboot, persist, boot_argv)
        writes = [c for c in changes if not c.blocked]
        if not writes:
            return ApplyOutcome(None, plan, changes, change_rows(changes, {}), "nothing-to-change")
        if confirm is not None:
            confirm(change_rows(changes, {}))
        seq = state.next_seq()
        apply_id = new_apply_id(host.facts.now, seq) if journaled else None
        with StopSignals() as stop:  # from the journal's first line to the end, a signal rolls back
            journal = _start_journal(state, apply_id, host) if journaled else None
            try:
                if journal is not None:
                    _begin(journal, state, host, {"type": "begin", "id": apply_id, "seq": seq,
                                                  "time": iso_time(host.facts.now), "profile": profile.name,
                                                  "host": host.facts.hostname, "root": host_root(host),
                                                  "mode": mode, "gpunode_version": __version__,
                                                  "settings": [s.id for s in settings]})
                outcome = execute(env, plan, writes, journal, stop)
            finally:
                if journal is not None:
                    journal.close()
    return _outcome(apply_id, plan, changes, writes, outcome)


def _refuse_unfinished(host, state: StateDir, journaled: bool) -> None:
    """A journaled apply waits for an interrupted one (or its rollback) to be undone first."""
    unfinished = [r for r in state.records(repair=True) if r.unfinished]
    if unfinished and journaled:
        what = "its rollback" if unfinished[-1].status == "rollback-interrupted" else "it"
        raise Refused(f"apply {unfinished[-1].id} was interrupted before {what} finished; "
                      f"run `{undo_command(host, state, unfinished[-1].id)}` first")


def _begin(journal, state: StateDir, host, record: dict) -> None:
    """The journal's begin line; failing it, nothing was changed, and the error says so."""
    try:
        journal.append(record)
    except JournalError as exc:
        raise JournalError(f"{exc}; nothing changed on {host_root(host)} "
                           f"(state dir {state.root})") from exc


def _outcome(apply_id, plan, changes: list, writes: list, outcome) -> ApplyOutcome:
    """What the apply did, each write's status on its row of the whole plan."""
    index = {id(c): i for i, c in enumerate(changes)}
    statuses = {index[id(c)]: s for c, s in zip(writes, outcome.statuses, strict=True)}
    result = "applied" if outcome.ok else "interrupted" if outcome.signal is not None else "failed"
    return ApplyOutcome(apply_id, plan, changes, change_rows(changes, statuses), result, outcome.reason,
                        outcome.restored, outcome.signal, outcome.unrecorded, outcome.unrecorded_why)


def _start_journal(state: StateDir, apply_id: str, host):
    try:
        return state.start(apply_id)
    except OSError as exc:  # no inode left, read-only file system: nothing changed yet
        raise JournalError(f"cannot create the journal in {state.applies}: {exc.strerror or exc}; "
                           f"nothing changed on {host_root(host)}") from exc


def boot_profile(host) -> tuple[Profile, list]:
    """The runtime-only settings recorded in the boot spec, as a profile (ValueError if unreadable)."""
    settings = load_boot_spec(host.sys.read(BOOT_SPEC))
    profile = Profile(name="boot", description=f"runtime settings from {BOOT_SPEC}",
                      settings={s.id: s for s in settings})
    return profile, settings


def boot_reapply(env: ApplyEnv, state: StateDir, dry_run: bool = False) -> ApplyOutcome:
    """`gpunode apply --boot`: re-assert the runtime-only settings recorded in the boot spec.
    Not journaled as an apply of its own: the apply that installed them holds the old values,
    and its rollback restores them (they hold what gpunode wrote, re-written at boot)."""
    profile, settings = boot_profile(env.host)
    return apply_profile(env, profile, settings, state, dry_run=dry_run, persist=False, mode="boot",
                         journaled=False)


def plan_changes(env, profile, settings, allow_reboot, persist, boot_argv):
    """The plan and every change an apply would make (settings, then persistence); nothing is
    written: the preview the command uses to decide whether NVML is needed, and the apply's own."""
    files = PlannedFiles(env.host.sys)
    plan = make_plan(env.host, profile, settings, allow_reboot=allow_reboot, files=files)
    changes = list(plan.changes)
    if persist:
        changes += plan_persistence(plan, files, boot_argv or ["gpunode", "apply", "--boot"])
    return plan, changes


def _plan_only(env, profile, settings, allow_reboot, persist, boot_argv) -> ApplyOutcome:
    plan, changes = plan_changes(env, profile, settings, allow_reboot, persist, boot_argv)
    writes = [c for c in changes if not c.blocked]
    return ApplyOutcome(None, plan, changes, change_rows(changes, {}), "planned" if writes else "nothing-to-change")


def rollback(env: ApplyEnv, state: StateDir, apply_id: str | None = None, force: bool = False,
             stop: StopSignals | None = None):
    """-> (record, results). Restores the newest apply that still holds changes, or `apply_id`.
    force: roll back an apply whose begin line (naming its root) was lost. stop: the caller's
    StopSignals(undoing=True), to learn which signal waited for the restores."""
    if not state.exists():
        if apply_id is not None:
            state.path_of(apply_id)  # JournalError: where else that id is kept (another root's)
            raise Refused(f"no applies recorded in {state.root}")
        raise NothingToRollBack(f"nothing to roll back: no applies recorded in {state.root}")
    state.ensure()
    with ApplyLocks(env.host.sys.root, state.root, "gpunode rollback"):
        records = state.records(repair=True)
        if apply_id is None:
            candidates = [r for r in records if r.needs_rollback]
            if not candidates:
                raise NothingToRollBack(
                    f"nothing to roll back: no apply in {state.root} holds changes (see `gpunode history`)")
            record = candidates[-1]
        else:
            record = state.load(apply_id, repair=True)
        refusal = root_refusal(record, host_root(env.host), force)
        if refusal:
            raise Refused(refusal)
        with stop or StopSignals(undoing=True), state.append_to(record.id) as journal:  # a signal waits for them
            results = rollback_record(env, record, journal, iso_time(env.host.facts.now))
    return record, results
