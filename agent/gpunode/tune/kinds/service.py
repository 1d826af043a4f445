"""systemd services: target `active` (running) or `inactive` (stopped or not installed)."""

from __future__ import annotations

from gpunode.tune.kinds.base import Observed

TARGETS = ("active", "inactive")


def validate(key: str, target) -> str | None:
    if target not in TARGETS:
        return f"service target must be one of {', '.join(TARGETS)}"
    return None


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


def observe(host, setting) -> list[Observed]:
    state = unit_state(host, setting.key)
    if state is None:
        return [Observed(setting.key, None, note="systemctl not available")]
    if state.get("LoadState") == "not-found":
        return [Observed(setting.key, "not-installed")]
    return [Observed(setting.key, state["ActiveState"], note=f"unit file {state.get('UnitFileState', '?')}")]


def service_satisfies(target: str, value: str) -> bool:
    if target == "active":
        return value == "active"
    return value in ("inactive", "failed", "not-installed")


# --- write side: systemctl stop+disable / enable+start, through host.runner -------------------
def plan(host, setting, wrong: list[Observed], files=None, **_) -> list:
    from gpunode.tune.kinds.change import Change

    changes = []
    for obs in wrong:
        state = unit_state(host, setting.key) or {}
        enabled = state.get("UnitFileState", "")
        before = {"active": obs.value, "enabled": enabled}
        if setting.target == "active":
            after = {"active": "active", "enabled": "enabled" if enabled == "disabled" else enabled}
        else:
            after = {"active": "inactive", "enabled": "disabled" if enabled == "enabled" else enabled}
        blocked = ""
        if obs.value == "not-installed":
            blocked = f"{setting.key}.service is not installed"
        elif enabled == "masked":
            blocked = f"{setting.key}.service is masked; unmask it first"
        changes.append(
            Change(setting.id, setting.key, "service", setting.key, before, after,
                   current_text=f"{obs.value} ({enabled or '?'})",
                   after_text=f"{after['active']} ({after['enabled'] or '?'})", blocked=blocked)
        )
    return changes
