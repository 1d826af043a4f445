"""Resource limits of one systemd service, set by a drop-in: `{kind: unit, key: slurmd.LimitMEMLOCK,
target: infinity}` writes /etc/systemd/system/slurmd.service.d/90-gpunode.conf.

Slurm batch jobs inherit slurmd's limits, not pam_limits', so unlimited locked memory for jobs
(RDMA, GPUDirect, pinned CUDA memory) is slurmd's own LimitMEMLOCK. The value a unit gets is read
from its unit files the way systemd merges them: the unit file, then drop-ins in name order
(/etc over /run over /usr/lib over /lib for one name), else the manager's DefaultLimitXXX.
"""

from __future__ import annotations

import re

from gpunode.host.facts.systemd_ini import section_values, systemd_manager_setting
from gpunode.tune.kinds.base import VERIFY_ALL, Observed, SettingKind
from gpunode.tune.kinds.values import MAX_INT64, SettingInvalid, whole_number

UNIT_DIRS = ("/etc/systemd/system", "/run/systemd/system", "/usr/local/lib/systemd/system",
             "/usr/lib/systemd/system", "/lib/systemd/system")
PROPERTIES = ("LimitMEMLOCK", "LimitNOFILE", "LimitNPROC", "LimitSTACK", "LimitCORE")
DROPIN_NAME = "90-gpunode.conf"
_UNIT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9:_.@-]{0,120}")
INFINITY = "infinity"
HEADER = "# Written by `gpunode apply`; `gpunode rollback` restores the previous state.\n"


def unit_file_name(unit: str) -> str:
    return unit if unit.endswith(".service") else f"{unit}.service"


def split_key(key: str) -> tuple[str, str]:
    unit, _, prop = key.rpartition(".")
    return unit_file_name(unit), prop


def dropin_path(unit: str) -> str:
    return f"/etc/systemd/system/{unit_file_name(unit)}.d/{DROPIN_NAME}"


def _ordered_dropins(host, unit_file: str) -> list[str]:
    """Drop-in files of a unit in the order systemd applies them (by name; /etc wins a name)."""
    by_name: dict[str, str] = {}
    for directory in reversed(UNIT_DIRS):  # lowest priority first, so /etc overwrites
        d = f"{directory}/{unit_file}.d"
        for name in host.sys.listdir(d) or []:
            if name.endswith(".conf"):
                by_name[name] = f"{d}/{name}"
    return [by_name[n] for n in sorted(by_name)]


def unit_limit(host, unit: str, prop: str) -> tuple[str | None, str]:
    """(value, where it comes from) of `prop` for `unit`; value None when the unit is not installed.
    An unset limit is the manager's Default<prop> (or "(systemd default)")."""
    unit_file = unit_file_name(unit)
    main = next((f"{d}/{unit_file}" for d in UNIT_DIRS if host.sys.read(f"{d}/{unit_file}") is not None), None)
    if main is None:
        return None, f"{unit_file} is not installed"
    value, source = None, ""
    for path in [main, *_ordered_dropins(host, unit_file)]:
        found = section_values(host.sys.read(path) or "", "Service", prop)
        if found:
            value, source = found[-1], path
    if value is None or value == "":
        default, where, _ = systemd_manager_setting(host, "Default" + prop)
        return (default or "(systemd default)"), (where or "systemd's built-in default")
    return value, source


def limit_is(value: str | None, target: str) -> bool:
    """`infinity` or `infinity:infinity` both mean unlimited soft and hard."""
    if value is None:
        return False
    soft, _, hard = value.partition(":")
    return {soft.strip().lower(), (hard or soft).strip().lower()} == {str(target).lower()}


class Unit(SettingKind):
    name = "unit"
    area = "services"
    verify = VERIFY_ALL

    def validate_key(self, key: str) -> None:
        unit, sep, prop = key.rpartition(".")
        if not sep or not _UNIT.fullmatch(unit) or prop not in PROPERTIES:
            raise SettingInvalid(f"unit key {key!r} must be UNIT.PROPERTY, e.g. slurmd.LimitMEMLOCK "
                                 f"(properties: {', '.join(PROPERTIES)})")

    def validate_target(self, key, target):
        if isinstance(target, str) and target.strip().lower() in (INFINITY, "unlimited"):
            return INFINITY
        return whole_number(target, "target", 0, MAX_INT64)

    def where(self, setting) -> str:
        return dropin_path(split_key(setting.key)[0])

    def observe(self, ctx, setting) -> list[Observed]:
        unit, prop = split_key(setting.key)
        value, source = unit_limit(ctx.host, unit, prop)
        return [Observed(f"{unit} {prop}", value, note=source)]

    def precondition(self, ctx, setting) -> str | None:
        from gpunode.tune.kinds.service import SYSTEMD_RUNNING

        if not ctx.host.sys.exists(SYSTEMD_RUNNING):
            return f"no systemd on this host ({SYSTEMD_RUNNING} is absent)"
        unit, prop = split_key(setting.key)
        value, why = unit_limit(ctx.host, unit, prop)
        return why if value is None else None

    def satisfied(self, setting, obs) -> bool:
        if str(setting.target) == INFINITY:
            return limit_is(obs.value, INFINITY)
        return limit_is(obs.value, str(setting.target))

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        unit, prop = split_key(setting.key)
        path = dropin_path(unit)
        values = {p: v for p in PROPERTIES for v in section_values(files.text(path) or "", "Service", p)[-1:]}
        values = {p: v for p, v in values.items() if re.fullmatch(r"infinity|\d{1,19}(:(infinity|\d{1,19}))?", v)}
        values[prop] = str(setting.target)
        text = HEADER + "[Service]\n" + "".join(f"{p}={v}\n" for p, v in values.items())
        change = files.write_text(
            setting.id, path, text, current_text=str(wrong[0].value), after_text=f"{prop}={setting.target}",
            note=f"takes effect when {unit} restarts", post=[["systemctl", "daemon-reload"]])
        return [change] if change else []
