"""Writing a plan: journal each change (fsync) before writing it, verify it after, and on
any failure roll the whole batch back in reverse order.

gpunode's own failures end the batch the same way: a journal record that cannot be made
durable (disk full, I/O error under the state dir) and SIGINT/SIGTERM/SIGHUP (Ctrl-C, a kill,
a closed ssh terminal) stop it before its next step and roll back what it changed. The
rollback goes on when the journal cannot record it (the host matters more than its record;
what went unrecorded is reported) and signals that come during it only wait. SIGKILL is left
to the journal: `gpunode rollback` finishes it."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field

from gpunode.audit.context import AuditContext
from gpunode.host.gpu.control import GpuControlError
from gpunode.tune.kinds import is_satisfied, kind_of, observe
from gpunode.tune.kinds.base import VERIFY_ALL, VERIFY_NONE
from gpunode.tune.kinds.change import Change

from . import actions
from .actions import ApplyEnv, ApplyError
from .journal import JournalError
from .rollback import LenientJournal, RestoreResult, restore_all

BACK = ("restored", "not-written")  # restore statuses that leave the host as before


@dataclass
class Outcome:
    ok: bool
    statuses: list[str] = field(default_factory=list)  # per plan.writes entry
    reason: str = ""
    restored: list[RestoreResult] = field(default_factory=list)
    signal: int | None = None  # the SIGINT/SIGTERM/SIGHUP that stopped the batch
    unrecorded: list[str] = field(default_factory=list)  # journal records that could not be written
    unrecorded_why: str = ""


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP (the operator's ssh terminal closed: the most common way an
    apply dies) while a batch runs are noted, never raised in the middle of a step
    (a half-written file, a journal line without its fsync): the batch looks between steps,
    stops and rolls back; during a rollback they only wait. Handlers are put back on exit.
    Only the main thread can take signals; elsewhere this notes nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, undoing: bool = False) -> None:
        self.signum: int | None = None
        self.undoing = undoing  # a rollback runs: a signal only waits for it
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup and `cmd &` stay immune
                    self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _note(self, signum: int, _frame) -> None:
        first, self.signum = self.signum is None, self.signum or signum
        what = ("stopping after the current step, then undoing what this run changed" if first and not self.undoing
                else "the rollback finishes first (SIGKILL stops at once; `gpunode rollback` then finishes it)")
        try:  # os.write: a print here could land inside another print
            os.write(2, f"gpunode: {signal.Signals(signum).name}: {what}\n".encode())
        except OSError:
            pass


class _Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _Book:
    """The journal as a batch uses it. `record`: a forward record; when it cannot be written
    the batch stops (JournalError). `append`: a record of the rollback (restore_all calls it);
    when it cannot be written it is listed in the outcome and the rollback goes on."""

    def __init__(self, journal, outcome: Outcome):
        self.journal, self.outcome = journal, outcome
        self.lenient = LenientJournal(journal)
        outcome.unrecorded = self.lenient.unrecorded

    def record(self, entry: dict) -> None:
        if self.journal is not None:
            self.journal.append(entry)

    def append(self, entry: dict) -> None:
        self.lenient.append(entry)
        self.outcome.unrecorded_why = self.lenient.why


def execute(env: ApplyEnv, plan, writes: list[Change], journal=None, stop: StopSignals | None = None) -> Outcome:
    outcome = Outcome(ok=True, statuses=["not-run"] * len(writes))
    book = _Book(journal, outcome)
    done: list[tuple[int, Change, dict | None]] = []
    step = "the first change"
    try:
        for n, change in enumerate(writes, 1):
            step = f"change {n} of {len(writes)}"
            _check(stop)
            actions.prepare(env, change)
            book.record({"type": "change", "seq": n, "change": change.to_json()})
            try:
                result = actions.write(env, change)
                where, now = actions.state(env, change, result)
                if where != "after":
                    raise ApplyError(f"reads {now or '(empty)'} after writing {change.after_text or change.after}")
                done.append((n, change, result))
                if _last_of_setting(writes, n):
                    _verify_setting(env, plan, change.setting_id,
                                    {c.subject for _, c, _ in done if c.setting_id == change.setting_id})
            except Exception as exc:  # noqa: BLE001 - whatever stopped gpunode's write, the batch is undone
                reason = f"{change.setting_id} {change.subject}: {_reason(exc)}"
                book.append({"type": "failed", "seq": n, "reason": reason})
                outcome.statuses[n - 1] = "failed"
                pending = done if any(d[0] == n for d in done) else [*done, (n, change, None)]
                _roll_back(env, outcome, book, pending, done, reason, failing=n, stop=stop)
                return outcome
            step = f"the end of change {n} of {len(writes)}"
            book.record({"type": "done", "seq": n, "result": result})
            outcome.statuses[n - 1] = "applied"
        step = "the end of the apply"
        _check(stop)
        book.record({"type": "end", "result": "applied"})
    except JournalError as exc:  # the journal cannot hold what comes next: undo what it holds
        _roll_back(env, outcome, book, done, done, f"{exc} (recording {step})", stop=stop)
    except _Stopped as stopped:
        outcome.signal = stopped.signum
        _roll_back(env, outcome, book, done, done,
                   f"stopped by {signal.Signals(stopped.signum).name} before {step}", stop=stop)
    except Exception as exc:  # noqa: BLE001 - gpunode's own bug before a write (prepare): still undone
        _roll_back(env, outcome, book, done, done, f"{_reason(exc)} (at {step})", stop=stop)
    return outcome


def _check(stop: StopSignals | None) -> None:
    if stop is not None and stop.signum is not None:
        raise _Stopped(stop.signum)


def _roll_back(env, outcome: Outcome, book: _Book, pending, done, reason: str, failing: int | None = None,
               stop: StopSignals | None = None) -> None:
    if stop is not None:
        stop.undoing = True
    outcome.ok, outcome.reason = False, reason
    outcome.restored = restore_all(env, list(pending), book, failing=failing)
    status = {r.seq: r.status for r in outcome.restored}
    for seq, _, _ in done:
        outcome.statuses[seq - 1] = "rolled-back" if status.get(seq) in BACK else "not-rolled-back"
    book.append({"type": "end", "result": "failed", "reason": reason})


def _last_of_setting(writes: list[Change], n: int) -> bool:
    return n == len(writes) or writes[n].setting_id != writes[n - 1].setting_id


def _verify_setting(env: ApplyEnv, plan, setting_id: str, subjects: set[str]) -> None:
    """Audit's own judgement after the writes: apply sets exactly what audit verifies."""
    setting = plan.setting(setting_id)
    if setting is None or kind_of(setting).verify == VERIFY_NONE:
        return
    observed = observe(AuditContext(host=env.host, profile=plan.profile), setting)
    if kind_of(setting).verify == VERIFY_ALL:
        subjects = {o.subject for o in observed}  # one file or unit covers every subject
    wrong = [o for o in observed if o.subject in subjects and o.value is not None and not is_satisfied(setting, o)]
    if wrong:
        o = wrong[0]
        raise ApplyError(f"after writing, the audit still reads {o.subject} = {o.value} (wanted {setting.target_text})")


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    if not isinstance(exc, (OSError, ApplyError, GpuControlError)):
        return f"internal error: {type(exc).__name__}: {exc}"  # a bug: name it, as the CLI's guard would
    return str(exc)
