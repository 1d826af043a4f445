"""sysctl settings: /proc/sys/<key with dots as slashes>; persisted in /etc/sysctl.d."""

from __future__ import annotations

import os
import re

from gpunode.host.facts.kernel_config import module_availability
from gpunode.host.facts.procfs import mount_of, parse_mounts
from gpunode.tune.kinds.base import SYSCTL_D, Observed, SettingKind, plan_knob_writes
from gpunode.tune.kinds.values import SettingInvalid, knob_value

_KEY = re.compile(r"^[a-z0-9_][a-z0-9_-]*(\.[A-Za-z0-9_][A-Za-z0-9_:-]*)+$")
# sysctls that take values below zero (kernel/sysctl docs); everywhere else -5 is refused.
SIGNED = frozenset({"kernel.perf_event_paranoid", "kernel.panic", "kernel.sched_rt_runtime_us"})
# Ranges the kernel documents for the sysctls shipped profiles set (admin-guide/sysctl).
RANGES = {"vm.swappiness": (0, 200), "kernel.numa_balancing": (0, 3), "vm.zone_reclaim_mode": (0, 7),
          "net.core.netdev_max_backlog": (1, 2**31 - 1), "net.core.rmem_max": (0, 2**31 - 1),
          "net.core.wmem_max": (0, 2**31 - 1)}
# Qdiscs and congestion control algorithms the kernel always has (not modules).
ALWAYS_QDISCS = ("pfifo_fast", "pfifo", "bfifo", "noqueue", "mq")
ALWAYS_CONGESTION = ("reno",)
_ALGORITHM = re.compile(r"^[a-z][a-z0-9_]*$")


def sysctl_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def qdisc_missing(host, name: str) -> str | None:
    if name in ALWAYS_QDISCS or not _ALGORITHM.match(name):
        return None
    avail = module_availability(host, f"sch_{name}", f"CONFIG_NET_SCH_{name.upper()}")
    return None if avail.available is not False else f"qdisc {name} is not available: {avail.how}"


def congestion_missing(host, name: str) -> str | None:
    listed = (host.sys.read_value("/proc/sys/net/ipv4/tcp_available_congestion_control") or "").split()
    if name in listed or name in ALWAYS_CONGESTION or not _ALGORITHM.match(name):
        return None
    avail = module_availability(host, f"tcp_{name}", f"CONFIG_TCP_CONG_{name.upper()}")
    return None if avail.available is not False else f"congestion control {name} is not available: {avail.how}"


# sysctls whose values name something the kernel must have (a module built in or loadable).
VALUE_SUPPORT = {"net.core.default_qdisc": qdisc_missing, "net.ipv4.tcp_congestion_control": congestion_missing}


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
        if not _KEY.match(key) or ".." in key:
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
        if key in VALUE_SUPPORT and not (isinstance(value, str) and _ALGORITHM.match(value)):
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
        check = VALUE_SUPPORT.get(setting.key)
        why = check(host, str(setting.target)) if check else None
        return why or read_only_mount(host, sysctl_path(setting.key))

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        """Write each wrong sysctl at runtime (/proc/sys); gpunode.tune.persist adds sysctl.d."""
        return plan_knob_writes(setting, wrong)
