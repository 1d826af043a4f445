"""systemd services: target `active` (running) or `inactive` (stopped or not installed)."""

from __future__ import annotations

import re

from gpunode.tune.kinds.base import VERIFY_ALL, Observed, SettingKind
from gpunode.tune.kinds.values import SettingInvalid

TARGETS = ("active", "inactive")
UNIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]{0,127}")
SYSTEMD_RUNNING = "/run/systemd/system"  # sd_booted(3): exists when systemd is PID 1


def unit_state(host, unit: str) -> dict[str, str] | None:
    """{'LoadState':..., 'ActiveState':..., 'UnitFileState':...} or None without systemd."""
    result = host.runner.run(
        ["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState", unit], timeout=5
    )
    if not result.ok:
        return None
    state = {}
    for line in result.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            state[key.strip()] = value.strip()
    return state if "ActiveState" in state else None


def service_satisfies(target: str, value: str) -> bool:
    if target == "active":
        return value == "active"
    return value in ("inactive", "failed", "not-installed")


class Service(SettingKind):
    name = "service"
    area = "services"
    verify = VERIFY_ALL

    def validate_key(self, key: str) -> None:
        if not UNIT_NAME.fullmatch(key):
            raise SettingInvalid(f"service key {key!r} must be a systemd unit name such as irqbalance")

    def validate_target(self, key, target):
        if target not in TARGETS:
            raise SettingInvalid(f"service target must be one of {', '.join(TARGETS)}, got {target!r}")
        return target

    def precondition(self, ctx, setting) -> str | None:
        return no_systemd(ctx.host, setting.key)

    def observe(self, ctx, setting) -> list[Observed]:
        state = unit_state(ctx.host, setting.key)
        if state is None:
            return [Observed(setting.key, None, note="systemctl not available")]
        if state.get("LoadState") == "not-found":
            return [Observed(setting.key, "not-installed")]
        return [Observed(setting.key, state["ActiveState"], note=f"unit file {state.get('UnitFileState', '?')}")]

    def satisfied(self, setting, obs) -> bool:
        return service_satisfies(setting.target, obs.value)

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        """systemctl stop+disable / enable+start, through host.runner (action "service")."""
        return [service_change(ctx.host, setting.id, setting.key, setting.target, obs.value) for obs in wrong]


def no_systemd(host, unit: str) -> str | None:
    """Why systemd units cannot be managed here (not booted with systemd, no systemctl), or None."""
    if host.sys.exists(SYSTEMD_RUNNING) or unit_state(host, unit) is not None:
        return None
    return f"no systemd on this host ({SYSTEMD_RUNNING} is absent and systemctl does not answer)"


def service_change(host, setting_id: str, unit: str, target: str, active):
    """The Change that takes `unit` to `target` (active: enable+start; inactive: stop+disable)."""
    from gpunode.tune.kinds.change import Change

    state = unit_state(host, unit) or {}
    enabled = state.get("UnitFileState", "")
    before = {"active": active, "enabled": enabled}
    if target == "active":
        after = {"active": "active", "enabled": "enabled" if enabled == "disabled" else enabled}
    else:
        after = {"active": "inactive", "enabled": "disabled" if enabled == "enabled" else enabled}
    blocked = ""
    if active == "not-installed":
        blocked = f"{unit}.service is not installed"
    elif enabled == "masked":
        blocked = f"{unit}.service is masked; unmask it first"
    return Change(setting_id, unit, "service", unit, before, after,
                  current_text=f"{active} ({enabled or '?'})",
                  after_text=f"{after['active']} ({after['enabled'] or '?'})", blocked=blocked)
