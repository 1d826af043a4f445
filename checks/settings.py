"""One generic check per profile setting, judged by its kind (gpunode.tune.kinds): the kind says
what is observed and whether it satisfies the setting (assess, shared with apply); this module
turns that into the audit's findings."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import Check, Finding, bad, error, ok, skip
from gpunode.model.profile import Profile, Setting, format_value
from gpunode.tune.kinds import Observed, assess
from gpunode.tune.kinds.registry import kind_of


def area_of(setting: Setting) -> str:
    return kind_of(setting).area_of(setting)


def _runner(setting: Setting):
    def run(ctx: AuditContext):
        return judge_setting(ctx, setting)

    return run


def setting_checks(profile: Profile) -> list[Check]:
    checks = []
    for setting in profile.settings.values():
        checks.append(
            Check(
                id=setting.id,
                title=f"{setting.key} {setting.target_text}",
                area=area_of(setting),
                func=_runner(setting),
                severity=setting.severity,
                tags=frozenset({"profile", *setting.tags}),
                remediation=(f"gpunode apply --profile {profile.name} --only {setting.id}"
                             + (f"  ({setting.why})" if setting.why else "")),
                needs_gpu=kind_of(setting).needs_gpu,
            )
        )
    return checks


def judge_setting(ctx, setting: Setting) -> list[Finding]:
    """The audit of one setting: one finding, or one per GPU for gpu settings."""
    a = assess(ctx, setting)
    kind = kind_of(setting)
    expected = setting.target_text
    if kind.needs_gpu and a.observed and not a.not_applicable:  # errors, "not supported": per GPU
        return [_judge_one(setting, o, expected) for o in a.observed]
    if a.skip_reason:
        return [skip(a.skip_reason)]
    readable = [o for o in a.observed if o.value is not None]
    values = _summarize(readable)
    if not a.wrong:
        return [ok(f"{values}", observed=values, expected=expected)]
    shown = [f"{format_value(o.value)}{' (' + o.note + ')' if o.note else ''}" for o in a.wrong]
    if len(readable) == 1:
        return [bad(f"{shown[0]}; expected {expected}", observed=values, expected=expected)]
    detail = "; ".join(f"{o.subject}: {text}" for o, text in zip(a.wrong[:4], shown, strict=False))
    more = f" and {len(a.wrong) - 4} more" if len(a.wrong) > 4 else ""
    return [bad(f"{detail}{more}; expected {expected}", observed=values, expected=expected)]


def _judge_one(setting: Setting, o: Observed, expected: str) -> Finding:
    kind = kind_of(setting)
    if o.extra.get("error"):
        return error(f"cannot read: {o.extra['error']}", subject=o.subject)
    if o.value is None:
        return skip("not supported on this GPU", subject=o.subject)
    value = kind.show(setting, o)
    note = f" ({o.note})" if o.note else ""
    if kind.satisfied(setting, o):
        return ok(f"{value}{note}", observed=o.value, expected=expected, subject=o.subject)
    return bad(f"{value}{note}; expected {expected}", observed=o.value, expected=expected, subject=o.subject)


def _summarize(observed: list[Observed]) -> str:
    """One line for many subjects: 'performance' or 'performance ×126, powersave ×2'."""
    if len(observed) == 1:
        return format_value(observed[0].value)
    counts: dict[str, int] = {}
    for o in observed:
        counts[format_value(o.value)] = counts.get(format_value(o.value), 0) + 1
    if len(counts) == 1:
        return f"{next(iter(counts))} (all {len(observed)})"
    return ", ".join(f"{v} ×{n}" for v, n in counts.items())
