"""Undoing changes: a failed batch (from execute) or a whole earlier apply (`gpunode rollback`).

A value is restored only while it still holds what gpunode wrote (or what a kill in the
middle of gpunode's write left); if someone changed it since, it is left alone and reported.
Restores run in reverse order of the writes. Whatever the verdict, what an interrupted write
can leave besides the value (a temporary file, a directory made for it) is cleaned up.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpunode.host.gpu.control import GpuControlError
from gpunode.tune.kinds.change import Change

from . import actions
from .actions import RESTORABLE, ApplyEnv, ApplyError
from .journal import JournalError, JournalWriteError


@dataclass
class RestoreResult:
    seq: int
    change: Change
    status: str  # restored | not-written | left | error
    detail: str = ""

    def to_json(self) -> dict:
        return {"seq": self.seq, "setting": self.change.setting_id, "subject": self.change.subject,
                "status": self.status, "detail": self.detail}


class LenientJournal:
    """A journal for undoing: a record it cannot write (disk full, I/O error under the state
    dir) is listed with why, and the restores go on. Stopping would leave the host half-restored
    (a state nobody asked for) to keep a record; going on leaves it as before the apply, and a
    later `gpunode rollback` settles the journal from what it finds (each value already back)."""

    def __init__(self, journal) -> None:
        self.journal = journal
        self.unrecorded: list[str] = []  # what could not be written, in order
        self.why = ""  # the first failure

    def append(self, entry: dict) -> None:
        if self.journal is None:
            return
        try:
            self.journal.append(entry)
        except (JournalError, OSError) as exc:
            self.unrecorded.append(describe_record(entry))
            self.why = self.why or str(exc)


class RollbackUnrecorded(JournalWriteError):
    """The rollback ran to its end but its journal could not record all of it: the host is as
    `results` say; the journal still calls the apply unfinished until a rollback settles it."""

    def __init__(self, record, results: list[RestoreResult], journal: LenientJournal) -> None:
        super().__init__(f"the journal could not record {len(journal.unrecorded)} record(s) of the rollback of "
                         f"{record.id}: {journal.why}")
        self.record, self.results = record, results
        self.unrecorded, self.why = journal.unrecorded, journal.why


def rollback_result(results: list[RestoreResult]) -> str:
    """complete: every change is back (restored, or found never written); partial: some were
    left or failed. What the journal could not record is another matter (RollbackUnrecorded)."""
    return "complete" if all(r.status in ("restored", "not-written") for r in results) else "partial"


def describe_record(entry: dict) -> str:
    """A journal record in a few words, for the list of those the journal could not keep."""
    kind = entry.get("type")
    if kind == "restore":
        return f"restore #{entry.get('seq')} {entry.get('setting')} ({entry.get('status')})"
    if kind == "failed":
        return f"failure of #{entry.get('seq')}"
    return {"end": "end of the apply", "rollback": "start of the rollback",
            "rollback-end": "end of the rollback"}.get(kind, str(kind))


def restore_one(env: ApplyEnv, seq: int, change: Change, result: dict | None, force: bool = False) -> RestoreResult:
    """force: the change whose write failed; whatever it left is gpunode's, so put back the old value."""
    try:
        where, now = actions.state(env, change, result)
        if where == "before":
            actions.clean(env, change)
            return RestoreResult(seq, change, "not-written", f"already {now}")
        if where not in RESTORABLE and not force:
            actions.clean(env, change)
            return RestoreResult(seq, change, "left",
                                 f"now {now}, not what gpunode wrote ({change.after_text or change.after}); left as is")
        actions.undo(env, change, result)
        where, now = actions.state(env, change, result)
        if where != "before":
            return RestoreResult(seq, change, "error", f"reads {now} after restoring")
        return RestoreResult(seq, change, "restored", f"back to {change.current_text or change.before}")
    except (OSError, ApplyError, GpuControlError) as exc:
        return RestoreResult(seq, change, "error", str(exc))
    except Exception as exc:  # noqa: BLE001 - an entry the loader let through: this change fails, the others go on
        return RestoreResult(seq, change, "error", f"cannot restore from its journal entry ({type(exc).__name__}: {exc})")


def root_refusal(record, root: str, force: bool = False) -> str | None:
    """Why `record` must not be rolled back onto `root`, or None. Its begin line names the root
    it changed; where that line was lost the root is unknown, and only --force takes it as this one."""
    recorded = record.begin.get("root")
    if recorded is None:
        if force:
            return None
        return (f"apply {record.id} lost its begin line, so the root it changed is unknown; check its journal, "
                f"then pass --force to roll it back onto {root}")
    if recorded == root:
        return None
    if recorded == "/":
        return f"apply {record.id} was made on the live host (no --sysroot)"
    return f"apply {record.id} changed files under {recorded}, not {root}; pass --sysroot {recorded}"


def restore_all(env: ApplyEnv, entries: list[tuple[int, Change, dict | None]], journal=None,
                failing: int | None = None) -> list[RestoreResult]:
    first: dict[tuple[str, str], tuple[int, Change, dict | None]] = {}
    for entry in sorted(entries, key=lambda e: e[0]):
        first.setdefault((entry[1].action, entry[1].target), entry)
    results = []
    for seq, change, result in sorted(entries, key=lambda e: -e[0]):
        outcome = restore_one(env, seq, change, result, force=seq == failing)
        if outcome.status == "left" and _back_before_batch(env, first[(change.action, change.target)], seq):
            outcome = RestoreResult(seq, change, "not-written", "already as before the first change to it")
        if journal is not None:
            journal.append({"type": "restore", **outcome.to_json()})
        results.append(outcome)
    return results


def _back_before_batch(env: ApplyEnv, first: tuple[int, Change, dict | None], seq: int) -> bool:
    """Change `seq` finds its target neither as it left it nor as it found it, but an earlier
    change of the batch wrote the same target and finds it as before: a rollback whose restore
    records the journal could not keep (disk full) already put the target back."""
    first_seq, change, result = first
    if first_seq == seq:
        return False
    try:
        return actions.state(env, change, result)[0] == "before"
    except (OSError, ApplyError, GpuControlError):
        return False


def rollback_record(env: ApplyEnv, record, journal, now_iso: str) -> list[RestoreResult]:
    """Roll back one journaled apply, including changes of an interrupted one that were
    journaled but never marked done (the write may or may not have happened). A journal that
    cannot record the rollback does not stop it (LenientJournal): RollbackUnrecorded at the end."""
    journal = LenientJournal(journal)
    journal.append({"type": "rollback", "time": now_iso})
    # Changes an earlier, killed rollback (or a failed batch) already put back are not judged
    # again: a later restore of an earlier change to the same file has moved that file on since.
    entries = [(seq, change, record.done.get(seq)) for seq, change in record.changes.items()
               if seq not in record.restored]
    results = restore_all(env, entries, journal)
    for seq in sorted(record.restored, reverse=True):
        change = record.changes.get(seq)
        if change is not None:
            actions.clean(env, change)
            results.append(RestoreResult(seq, change, "restored", "by an earlier rollback of this apply"))
    journal.append({"type": "rollback-end", "time": now_iso, "result": rollback_result(results),
                    "left": [r.to_json() for r in results if r.status not in ("restored", "not-written")]})
    if journal.unrecorded:
        raise RollbackUnrecorded(record, results, journal)
    return results
