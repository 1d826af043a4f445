"""Setting kinds: how each kind of profile setting is validated, observed, judged and planned
(one SettingKind class per kind, by name in gpunode.tune.kinds.registry).

Audit and apply share `assess`, so what apply plans (or calls not applicable here) is exactly
what audit judges (or SKIPs with the same why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpunode.audit.engine import CheckSkipped, Finding, bad, error, ok, skip
from gpunode.host.facts.nvswitch import NVL_TRAY, has_nvswitch, is_nvl_tray
from gpunode.model.profile import Setting, format_value
from gpunode.tune.kinds.base import Observed
from gpunode.tune.kinds.registry import kind_of

NOT_APPLICABLE = "not applicable here"


def condition_holds(ctx, when: str) -> tuple[bool, str]:
    """-> (applies, why not)."""
    if when == "always":
        return True, ""
    host = ctx.host
    if when in ("gpu", "nvswitch", "imex"):
        inv = ctx.inventory()
        if not inv.available or not inv.gpus:
            return False, inv.error or "no GPU"
        if when == "nvswitch" and not has_nvswitch(host.sys, inv.gpus):
            return False, "no NVSwitch on this host"
        if when == "nvswitch" and is_nvl_tray(host.sys, inv.gpus):
            return False, f"{NVL_TRAY}: Fabric Manager runs on the NVLink switch trays"
        if when == "imex" and not is_nvl_tray(host.sys, inv.gpus):
            return False, f"not a {NVL_TRAY} (IMEX serves multi-node NVLink domains)"
        return True, ""
    if when == "infiniband":
        return bool(host.sys.listdir("/sys/class/infiniband")), "no InfiniBand device"
    if when == "nvme":
        return bool(host.sys.glob("/sys/block/nvme*")), "no NVMe device"
    if when == "docker":
        from gpunode.host.facts.docker import DOCKERD

        return any(host.sys.exists(p) for p in DOCKERD), f"Docker is not installed (no {DOCKERD[0]})"
    if when == "mps_unit":
        from gpunode.tune.kinds.unit import UNIT_DIRS

        return any(host.sys.exists(f"{d}/{MPS_UNIT}") for d in UNIT_DIRS), MPS_UNIT_HOW
    return False, f"unknown condition {when}"


# The inference profile runs MPS through this unit where the site installed one; gpunode does
# not write it (ExecStart, user and pipe directory are the site's choice).
MPS_UNIT = "nvidia-mps.service"
MPS_UNIT_HOW = (f"no {MPS_UNIT} on this host; to run MPS as a unit, install one with Type=forking, "
                "ExecStartPre=nvidia-smi -c EXCLUSIVE_PROCESS, ExecStart=nvidia-cuda-mps-control -d, "
                "ExecStop=/bin/sh -c 'echo quit | nvidia-cuda-mps-control' (docs/profiles.md)")


@dataclass
class Assessment:
    """One setting on one host: not applicable (why), absent (why), or its observations and
    the subjects not at the target (`wrong`)."""

    setting: Setting
    not_applicable: str = ""
    absent: str = ""
    observed: list[Observed] = field(default_factory=list)
    wrong: list[Observed] = field(default_factory=list)

    @property
    def skip_reason(self) -> str:
        return f"{NOT_APPLICABLE}: {self.not_applicable}" if self.not_applicable else self.absent


def assess(ctx, setting: Setting) -> Assessment:
    kind = kind_of(setting)
    applies, unmet = condition_holds(ctx, setting.when)
    if not applies:
        return Assessment(setting, not_applicable=unmet)
    why_not = kind.precondition(ctx, setting)
    if why_not:
        return Assessment(setting, not_applicable=why_not)
    observed = kind.observe(ctx, setting)
    readable = [o for o in observed if o.value is not None and not o.extra.get("error")]
    if not readable:
        note = (observed[0].note or observed[0].extra.get("error", "")) if observed else ""
        absent = f"knob absent on this host: {kind.where(setting)}" + (f" ({note})" if note else "")
        return Assessment(setting, absent=absent, observed=observed)
    wrong = [o for o in readable if not kind.satisfied(setting, o)]
    why_not = kind.cannot_apply(ctx, setting, wrong) if wrong else None
    return Assessment(setting, not_applicable=why_not or "", observed=observed, wrong=wrong)


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


def observe(ctx, setting: Setting) -> list[Observed]:
    return kind_of(setting).observe(ctx, setting)


def is_satisfied(setting: Setting, obs: Observed) -> bool:
    return kind_of(setting).satisfied(setting, obs)


__all__ = ["Assessment", "CheckSkipped", "Observed", "assess", "condition_holds", "is_satisfied",
           "judge_setting", "kind_of", "observe"]
