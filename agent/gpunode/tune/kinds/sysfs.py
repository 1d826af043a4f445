"""sysfs knobs: a path glob (one CPU's governor, every NVMe queue), active value in [brackets]."""

from __future__ import annotations

from gpunode.tune.kinds.base import Observed


def validate(key: str, target) -> str | None:
    return None


def observe(host, setting) -> list[Observed]:
    paths = host.sys.glob(setting.path) if any(c in setting.path for c in "*?[") else [setting.path]
    return [Observed(p, host.sys.read_active(p)) for p in paths]


def plan(host, setting, wrong: list[Observed], files=None, **_) -> list:
    """Write the knob of each wrong subject (one CPU's governor, one NVMe queue's scheduler)."""
    from gpunode.tune.kinds.base import plan_knob_writes

    return plan_knob_writes(setting, wrong)
