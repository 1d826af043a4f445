"""Writing a plan: journal each change (fsync) before writing it, verify it after, and on
any failure roll the whole batch back in reverse order."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpunode.audit.context import AuditContext
from gpunode.host.gpu.control import GpuControlError
from gpunode.tune.kinds import is_satisfied, kind_of, observe
from gpunode.tune.kinds.base import VERIFY_ALL, VERIFY_NONE
from gpunode.tune.kinds.change import Change

from . import actions
from .actions import ApplyEnv, ApplyError
from .rollback import RestoreResult, restore_all


@dataclass
class Outcome:
    ok: bool
    statuses: list[str] = field(default_factory=list)  # per plan.writes entry
    reason: str = ""
    restored: list[RestoreResult] = field(default_factory=list)


def execute(env: ApplyEnv, plan, writes: list[Change], journal=None) -> Outcome:
    outcome = Outcome(ok=True, statuses=["not-run"] * len(writes))
    done: list[tuple[int, Change, dict | None]] = []
    for n, change in enumerate(writes, 1):
        actions.prepare(env, change)
        if journal is not None:
            journal.append({"type": "change", "seq": n, "change": change.to_json()})
        try:
            result = actions.write(env, change)
            where, now = actions.state(env, change, result)
            if where != "after":
                raise ApplyError(f"reads {now or '(empty)'} after writing {change.after_text or change.after}")
            done.append((n, change, result))
            if _last_of_setting(writes, n):
                _verify_setting(env, plan, change.setting_id, {c.subject for _, c, _ in done if c.setting_id == change.setting_id})
        except (OSError, ApplyError, GpuControlError) as exc:
            reason = f"{change.setting_id} {change.subject}: {_reason(exc)}"
            if journal is not None:
                journal.append({"type": "failed", "seq": n, "reason": reason})
            outcome.ok, outcome.reason = False, reason
            outcome.statuses[n - 1] = "failed"
            pending = done if any(d[0] == n for d in done) else [*done, (n, change, None)]
            outcome.restored = restore_all(env, [(seq, c, r) for seq, c, r in pending], journal, failing=n)
            for seq, _, _ in done:
                outcome.statuses[seq - 1] = "rolled-back"
            if journal is not None:
                journal.append({"type": "end", "result": "failed", "reason": reason})
            return outcome
        if journal is not None:
            journal.append({"type": "done", "seq": n, "result": result})
        outcome.statuses[n - 1] = "applied"
    if journal is not None:
        journal.append({"type": "end", "result": "applied"})
    return outcome


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
    return str(exc)
