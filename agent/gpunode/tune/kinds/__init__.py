"""Setting kinds: how each kind of profile setting is read and judged (and, for apply, written).

Audit and apply use the same `observe` and `is_satisfied`, so what apply sets is exactly what
audit verifies.
"""

from __future__ import annotations

from gpunode.audit.engine import CheckSkipped, Finding, bad, error, ok, skip
from gpunode.tune.kinds import cmdline, gpu, irq, limits, service, sysctl, sysfs
from gpunode.tune.kinds.base import Observed, satisfies
from gpunode.tune.profiles import Setting, format_value

_VALIDATORS = {
    "sysctl": sysctl.validate,
    "sysfs": sysfs.validate,
    "limits": limits.validate,
    "cmdline": cmdline.validate,
    "service": service.validate,
    "gpu": gpu.validate,
    "irq": irq.validate,
}


def validate_key(kind: str, key: str, target) -> str | None:
    return _VALIDATORS[kind](key, target)


def condition_holds(ctx, when: str) -> tuple[bool, str]:
    """-> (applies, why not)."""
    if when == "always":
        return True, ""
    host = ctx.host
    if when in ("gpu", "nvswitch"):
        inv = ctx.inventory()
        if not inv.available or not inv.gpus:
            return False, inv.error or "no GPU"
        if when == "nvswitch" and not has_nvswitch(ctx):
            return False, "no NVSwitch on this host"
        return True, ""
    if when == "infiniband":
        return bool(host.sys.listdir("/sys/class/infiniband")), "no InfiniBand device"
    if when == "nvme":
        return bool(host.sys.glob("/sys/block/nvme*")), "no NVMe device"
    return False, f"unknown condition {when}"


def has_nvswitch(ctx) -> bool:
    """NVSwitch systems show nvidia-nvswitch device nodes, or GPUs that take part in a fabric."""
    if any(n.startswith("nvidia-nvswitch") for n in ctx.host.sys.listdir("/dev") or []):
        return True
    inv = ctx.inventory()
    return any(g.fabric_state not in (None, "not_supported") for g in inv.gpus)


def observe(ctx, setting: Setting) -> list[Observed]:
    host = ctx.host
    if setting.kind == "gpu":
        return gpu.observe(host, setting, ctx.gpus())
    module = {"sysctl": sysctl, "sysfs": sysfs, "limits": limits, "cmdline": cmdline, "service": service, "irq": irq}[
        setting.kind
    ]
    return module.observe(host, setting)


def is_satisfied(setting: Setting, obs: Observed) -> bool:
    if setting.kind == "gpu":
        return gpu.gpu_satisfies(setting, obs)
    if setting.kind == "service":
        return service.service_satisfies(setting.target, obs.value)
    if setting.kind == "irq":
        return obs.value is True
    return satisfies(setting.op, obs.value, setting.target)


def judge(ctx, setting: Setting) -> list[Finding]:
    """The audit of one setting: one finding, or one per GPU for gpu settings."""
    applies, why_not = condition_holds(ctx, setting.when)
    if not applies:
        return [skip(f"not applicable: {why_not}")]
    observed = observe(ctx, setting)
    if not observed:
        return [skip(_absent_reason(setting))]
    expected = setting.target_text
    if setting.kind == "gpu":
        return [_judge_one(setting, o, expected) for o in observed]
    readable = [o for o in observed if o.value is not None]
    if not readable:
        note = observed[0].note
        return [skip(_absent_reason(setting) + (f" ({note})" if note else ""))]
    wrong = [o for o in readable if not is_satisfied(setting, o)]
    values = _summarize(readable)
    if not wrong:
        return [ok(f"{values}", observed=values, expected=expected)]
    if len(readable) == 1:
        o = wrong[0]
        return [bad(f"{format_value(o.value)}{' (' + o.note + ')' if o.note else ''}; expected {expected}",
                    observed=values, expected=expected)]
    detail = "; ".join(f"{o.subject}: {format_value(o.value)}{' (' + o.note + ')' if o.note else ''}" for o in wrong[:4])
    more = f" and {len(wrong) - 4} more" if len(wrong) > 4 else ""
    return [bad(f"{detail}{more}; expected {expected}", observed=values, expected=expected)]


def _judge_one(setting: Setting, o: Observed, expected: str) -> Finding:
    if o.extra.get("error"):
        return error(f"cannot read: {o.extra['error']}", subject=o.subject)
    if o.value is None:
        return skip("not supported on this GPU", subject=o.subject)
    value = format_value(o.value) + (" W" if setting.key == "power_limit" else "")
    note = f" ({o.note})" if o.note else ""
    if is_satisfied(setting, o):
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


def _absent_reason(setting: Setting) -> str:
    where = setting.path or (sysctl.sysctl_path(setting.key) if setting.kind == "sysctl" else setting.key)
    return f"knob absent on this host: {where}"


__all__ = ["CheckSkipped", "Observed", "condition_holds", "is_satisfied", "judge", "observe", "validate_key"]
