"""The plan: for each selected setting, observe it exactly as the audit does and turn the
subjects that are not satisfied into Changes (each kind's `plan` in gpunode.tune.kinds)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped
from gpunode.ids import matches_any, unmatched
from gpunode.model.profile import Profile, Setting
from gpunode.tune.actions import KnobAction, ServiceAction, action_of
from gpunode.tune.kinds import assess, kind_of
from gpunode.tune.kinds.change import Change, PlannedFiles


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


def select_settings(profile: Profile, only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Setting]:
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
            a = assess(ctx, setting)
        except (CheckSkipped, TimeoutError) as exc:
            plan.skipped.append((setting.id, str(exc)))
            continue
        if a.skip_reason:
            plan.skipped.append((setting.id, a.skip_reason))
            continue
        if not a.wrong:
            plan.satisfied.append(setting.id)
            continue
        changes = kind_of(setting).plan(ctx, setting, a.wrong, files, allow_reboot=allow_reboot)
        for change in changes:
            change.needs_root = change.needs_root and host.sys.is_live
            if isinstance(action_of(change), KnobAction) and not change.blocked and _read_only_here(host, change.target):
                change.blocked = "read-only here (a container or network namespace: the host owns this knob)"
        plan.changes += _new_units(plan.changes, changes)
    return plan


def _new_units(planned: list[Change], changes: list[Change]) -> list[Change]:
    """One change per systemd unit: gpu.persistence_mode through nvidia-persistenced and
    service.nvidia-persistenced would both start the same daemon."""
    units = {c.target for c in planned if isinstance(action_of(c), ServiceAction)}
    return [c for c in changes if not isinstance(action_of(c), ServiceAction) or c.target not in units]
