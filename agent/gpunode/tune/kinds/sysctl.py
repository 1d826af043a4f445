"""sysctl settings: /proc/sys/<key with dots as slashes>; persisted in /etc/sysctl.d."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from gpunode.host.facts.procfs import mount_of, parse_mounts
from gpunode.tune.kinds.base import SYSCTL_D, Observed, SettingKind, plan_knob_writes
from gpunode.tune.kinds.values import SettingInvalid, knob_value

if TYPE_CHECKING:
    from gpunode.host.facts.kernel_config import Availability

_KEY = re.compile(r"^[a-z0-9_][a-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_:-]*)+")
# sysctls that take values below zero (kernel/sysctl docs); everywhere else -5 is refused.
SIGNED = frozenset({"kernel.perf_event_paranoid", "kernel.panic", "kernel.sched_rt_runtime_us"})
# Ranges the kernel documents for the sysctls shipped profiles set (admin-guide/sysctl).
RANGES = {"vm.swappiness": (0, 200), "kernel.numa_balancing": (0, 3), "vm.zone_reclaim_mode": (0, 7),
          "net.core.netdev_max_backlog": (1, 2**31 - 1), "net.core.rmem_max": (0, 2**31 - 1),
          "net.core.wmem_max": (0, 2**31 - 1)}
# Qdiscs and congestion control algorithms the kernel always has (not modules).
ALWAYS_QDISCS = ("pfifo_fast", "pfifo", "bfifo", "noqueue", "mq")
ALWAYS_CONGESTION = ("reno",)
_ALGORITHM = re.compile(r"^[a-z][a-z0-9_]*")


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


# sysctls whose values name a kernel module: (what, module prefix, config prefix, always there, listed in)
VALUE_MODULES = {
    "net.core.default_qdisc": ("qdisc", "sch_", "CONFIG_NET_SCH_", ALWAYS_QDISCS, None),
    "net.ipv4.tcp_congestion_control": ("congestion control", "tcp_", "CONFIG_TCP_CONG_", ALWAYS_CONGESTION,
                                        "/proc/sys/net/ipv4/tcp_available_congestion_control"),
}


def value_availability(host, key: str, name: str) -> tuple[str, Availability] | None:
    """(what, availability) of the module a value names (fq -> sch_fq), or None when the key
    names no module. Loadable is enough: the kernel loads sch_*/tcp_* on the sysctl write
    itself (request_module), and again at boot when systemd-sysctl writes it."""
    spec = VALUE_MODULES.get(key)
    if spec is None or not _ALGORITHM.fullmatch(name):
        return None
    from gpunode.host.facts.kernel_config import Availability, module_availability  # apply's question only

    what, prefix, symbol, always, listed_in = spec
    if name in always or (listed_in and name in (host.sys.read_value(listed_in) or "").split()):
        return what, Availability(True, "built in or loaded")
    return what, module_availability(host, prefix + name, symbol + name.upper())


def read_only_mount(host, path: str) -> str | None:
    """Why `path` cannot be written: its mount is read-only (/proc/mounts), or as root on a live
    host the kernel refuses writes (a knob owned by the host in a container or network namespace)."""
    mount = mount_of(parse_mounts(host.sys.read("/proc/mounts") or ""), path)
    if mount is not None and mount.has("ro"):
        return f"{mount.target} is mounted read-only (/proc/mounts)"
    if host.sys.is_live and host.facts.is_root and os.path.exists(path) and not os.access(path, os.W_OK):
        return "read-only here (a container or network namespace: the host owns this knob)"
    return None


class Sysctl(SettingKind):
    name = "sysctl"
    area = "kernel"
    persists_in = SYSCTL_D
    _AREAS = {"vm": "memory", "kernel": "kernel", "net": "net", "fs": "kernel"}

    def validate_key(self, key: str) -> None:
        if not _KEY.fullmatch(key) or ".." in key:
            raise SettingInvalid(f"sysctl key {key!r} must look like vm.swappiness")

    def validate_target(self, key, target):
        value = knob_value(target, "target", signed=key in SIGNED)
        if key in RANGES and not isinstance(value, bool):
            lo, hi = RANGES[key]
            fields = [int(f) for f in str(value).split()] if str(value).lstrip("-").isdigit() else None
            if fields is None:
                raise SettingInvalid(f"target {value!r} must be a whole number in {lo}..{hi}")
            if not all(lo <= f <= hi for f in fields):
                raise SettingInvalid(f"target {value} is out of range {lo}..{hi}")
        if key in VALUE_MODULES and not (isinstance(value, str) and _ALGORITHM.fullmatch(value)):
            raise SettingInvalid(f"target {value!r} must be a name such as fq or bbr")
        return value

    def area_of(self, setting) -> str:
        return setting.area or self._AREAS.get(setting.key.split(".")[0], "kernel")

    def where(self, setting) -> str:
        return sysctl_path(setting.key)

    def observe(self, ctx, setting) -> list[Observed]:
        path = sysctl_path(setting.key)
        return [Observed(path, ctx.host.sys.read_value(path))]

    def cannot_apply(self, ctx, setting, wrong) -> str | None:
        host = ctx.host
        found = value_availability(host, setting.key, str(setting.target))
        if found and found[1].available is False:
            return f"{found[0]} {setting.target} is not available: {found[1].how}"
        return read_only_mount(host, sysctl_path(setting.key))

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        """Write each wrong sysctl at runtime (/proc/sys); gpunode.tune.persist adds sysctl.d."""
        changes = plan_knob_writes(setting, wrong)
        found = value_availability(ctx.host, setting.key, str(setting.target))
        if found and (found[1].available is None or found[1].how.startswith("loadable")):
            for change in changes:  # say what the write depends on
                change.note = f"{found[0]} {setting.target}: {found[1].how}"
        return changes
