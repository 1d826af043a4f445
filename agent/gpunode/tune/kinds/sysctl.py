"""sysctl settings: /proc/sys/<key with dots as slashes>."""

from __future__ import annotations

from gpunode.tune.kinds.base import Observed


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def validate(key: str, target) -> str | None:
    if "/" in key or " " in key or ".." in key:
        return f"sysctl key {key!r} must look like vm.swappiness"
    return None


def observe(host, setting) -> list[Observed]:
    path = sysctl_path(setting.key)
    return [Observed(path, host.sys.read_value(path))]


def plan(host, setting, wrong: list[Observed], files=None, **_) -> list:
    """Write each wrong sysctl at runtime (/proc/sys); persistence is planned by gpunode.tune."""
    from gpunode.tune.kinds.base import plan_knob_writes

    return plan_knob_writes(setting, wrong)
