"""sysfs knobs: a path glob (one CPU's governor, every NVMe queue), active value in [brackets].
Runtime only: re-applied at boot from the boot spec."""

from __future__ import annotations

import os
import re
from dataclasses import replace

from gpunode.tune.kinds.base import BOOT_SPEC, Observed, SettingKind, plan_knob_writes
from gpunode.tune.kinds.sysctl import read_only_mount
from gpunode.tune.kinds.values import SettingInvalid, one_line

_PATH = re.compile(r"^/sys(/[A-Za-z0-9_.:+@*?\[\]-]+)+")
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*")


def normalise_path(path) -> str:
    """An absolute glob that stays under /sys once normalised (`/sys/a/../../x` is /x: refused)."""
    if not isinstance(path, str) or not path:
        raise SettingInvalid("a sysfs setting needs 'path', an absolute glob under /sys/")
    one_line(path, "path")
    if not path.startswith("/"):
        raise SettingInvalid(f"path {path!r} must be absolute, under /sys/")
    normal = os.path.normpath(path)
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    if not _PATH.fullmatch(normal) or any(part in (".", "..") for part in normal.split("/")):
        raise SettingInvalid(f"path {path!r} must stay under /sys/ (normalised: {normal!r}) and hold only "
                             "letters, digits, _.:+@- and the glob characters *?[]")
    return normal


class Sysfs(SettingKind):
    name = "sysfs"
    area = "host"
    persists_in = BOOT_SPEC

    def validate(self, setting):
        if not _KEY.fullmatch(setting.key):
            raise SettingInvalid(f"sysfs key {setting.key!r} must be a name such as thp.enabled")
        return replace(setting, path=normalise_path(setting.path),
                       target=self.validate_target(setting.key, setting.target))

    def observe(self, ctx, setting) -> list[Observed]:
        sys = ctx.host.sys
        paths = sys.glob(setting.path) if any(c in setting.path for c in "*?[") else [setting.path]
        return [Observed(p, sys.read_active(p)) for p in paths]

    def cannot_apply(self, ctx, setting, wrong) -> str | None:
        return read_only_mount(ctx.host, wrong[0].subject) if wrong else None

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        """Write the knob of each wrong subject (one CPU's governor, one NVMe queue's scheduler)."""
        return plan_knob_writes(setting, wrong)
