"""The plan: for each selected setting, observe it exactly as the audit does and turn the
subjects that are not satisfied into Changes (each kind's `plan` in gpunode.tune.kinds)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped
from gpunode.ids import matches_any, unmatched
from gpunode.tune.kinds import (
    cmdline,
    condition_holds,
    gpu,
    irq,
    is_satisfied,
    limits,
    observe,
    service,
    sysctl,
    sysfs,
)
from gpunode.tune.kinds.change import Change, PlannedFiles
from gpunode.tune.profiles import Profile, Setting

_PLANNERS = {"sysctl": sysctl, "sysfs": sysfs, "limits": limits, "cmdline": cmdline, "service": service, "irq": irq}


@dataclass
class Plan:
    profile: Profile
    settings: list[Setting]
    changes: list[Change] = field(default_factory=list)
    satisfied: list[str] = field(default_factory=list)  # setting ids already as wanted
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (setting id, why not planned)

    @property
    def writes(self) -> list[Change]:
        return [c for c in self.changes if not c.blocked]

    @property
    def blocked(self) -> list[Change]:
        return [c for c in self.changes if c.blocked]

    def setting(self, setting_id: str) -> Setting | None:
        return next((s for s in self.settings if s.id == setting_id), None)


def select_settings(profile: Profile, only: list[str] = (), skip: list[str] = ()) -> list[Setting]:
    """--only / --skip KIND.KEY globs ("sysctl.net.*", "gpu", "sysfs.thp.*"; old "gpu/*" too)."""
    for pattern in unmatched(list(profile.settings), [*only, *skip]):
        raise ValueError(f"no setting of profile {profile.name} matches {pattern!r} (ids look like sysctl.vm.swappiness)")
    chosen = [s for s in profile.settings.values() if not only or matches_any(s.id, only)]
    return [s for s in chosen if not matches_any(s.id, skip)]


def _read_only_here(host, path: str) -> bool:
    """As root on a live host, a knob the kernel will not let us write (0444 in a child
    network namespace, a read-only /sys in a container) is refused at plan time."""
    return host.sys.is_live and host.facts.is_root and not os.access(host.sys.path(path), os.W_OK)


def make_plan(host, profile: Profile, settings: list[Setting], allow_reboot: bool = False,
              files: PlannedFiles | None = None) -> Plan:
    ctx = AuditContext(host=host, profile=profile)
    files = files or PlannedFiles(host.sys)
    plan = Plan(profile, settings)
    for setting in settings:
        try:
            applies, why_not = condition_holds(ctx, setting.when)
            if not applies:
                plan.skipped.append((setting.id, f"not applicable: {why_not}"))
                continue
            observed = observe(ctx, setting)
        except (CheckSkipped, TimeoutError) as exc:
            plan.skipped.append((setting.id, str(exc)))
            continue
        readable = [o for o in observed if o.value is not None and not o.extra.get("error")]
        if not readable:
            note = observed[0].note if observed else ""
            plan.skipped.append((setting.id, "absent on this host" + (f" ({note})" if note else "")))
            continue
        wrong = [o for o in readable if not is_satisfied(setting, o)]
        if not wrong:
            plan.satisfied.append(setting.id)
            continue
        if setting.kind == "gpu":
            changes = gpu.plan(host, setting, wrong, ctx.gpus())
        else:
            changes = _PLANNERS[setting.kind].plan(host, setting, wrong, files, allow_reboot=allow_reboot)
        for change in changes:
            change.needs_root = change.needs_root and host.sys.is_live
            if change.action == "knob" and not change.blocked and _read_only_here(host, change.target):
                change.blocked = "read-only here (a container or network namespace: the host owns this knob)"
        plan.changes += changes
    return plan
