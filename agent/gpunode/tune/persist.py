"""Making an apply survive a reboot, as ordinary journaled file changes (so rollback undoes
them byte-exact too):

- sysctls gpunode changed -> /etc/sysctl.d/90-gpunode.conf (systemd-sysctl reads it at boot);
- runtime-only settings (THP, governor, NVMe queues, IRQ affinity, GPU persistence/power/
  compute mode, MIG layout) -> /etc/gpunode/apply-boot.json, re-applied at boot by
  gpunode-apply.service (`gpunode apply --boot`), ordered after nvidia-persistenced and
  nvidia-fabricmanager so the GPUs are up;
- limits are files already; services persist through enable/disable; cmdline through GRUB.
"""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import asdict

from gpunode.model.profile import Setting
from gpunode.tune.kinds.base import BOOT_SPEC as BOOT_SPEC_PERSISTED
from gpunode.tune.kinds.base import SYSCTL_D
from gpunode.tune.kinds.change import Change, PlannedFiles
from gpunode.tune.kinds.registry import kind_of

SYSCTL_FILE = "/etc/sysctl.d/90-gpunode.conf"
BOOT_SPEC = "/etc/gpunode/apply-boot.json"
BOOT_SCHEMA = "gpunode.apply-boot/1"
UNIT_NAME = "gpunode-apply.service"
UNIT_FILE = f"/etc/systemd/system/{UNIT_NAME}"
UNIT_WANTS = f"/etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"
HEADER = "# Written by `gpunode apply`; `gpunode rollback` restores the previous state.\n"


def is_runtime_only(setting: Setting) -> bool:
    return kind_of(setting).persistence(setting) == BOOT_SPEC_PERSISTED


def parse_sysctl_conf(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lstrip("-")] = " ".join(value.split())
    return values


def sysctl_conf(values: dict[str, str]) -> str:
    return HEADER + "".join(f"{k} = {v}\n" for k, v in values.items())


def boot_spec_text(settings: dict[str, dict]) -> str:
    return json.dumps({"schema": BOOT_SCHEMA, "settings": list(settings.values())}, indent=1, sort_keys=True) + "\n"


def load_boot_spec(text: str | None) -> list[Setting]:
    """The settings `gpunode apply --boot` re-applies, each validated again by its kind as a
    profile's would be (the file sits in /etc and may have been edited since): ValueError
    naming the file and the setting on anything wrong."""
    from gpunode.inputs import parse_json

    if text is None:
        return []
    data = parse_json(text, BOOT_SPEC)  # InputError is a ValueError: duplicate keys, NaN, depth
    if not isinstance(data, dict) or data.get("schema") != BOOT_SCHEMA:
        schema = data.get("schema") if isinstance(data, dict) else None
        raise ValueError(f"{BOOT_SPEC}: unknown schema {schema!r}")
    raws = data.get("settings", [])
    if not isinstance(raws, list):
        raise ValueError(f"{BOOT_SPEC}: 'settings' is not a list")
    out = []
    for n, raw in enumerate(raws, 1):
        if not isinstance(raw, dict):
            raise ValueError(f"{BOOT_SPEC}: setting {n} is not a mapping")
        raw = dict(raw)
        raw["tags"] = tuple(raw.get("tags", ()))
        try:
            setting = Setting(**raw)
            kind = kind_of(setting)
            valid = kind.validate(setting)
        except KeyError as exc:
            raise ValueError(f"{BOOT_SPEC}: setting {n}: unknown kind {raw.get('kind')!r}") from exc
        except (TypeError, ValueError) as exc:  # a field this version does not know, a bad value
            raise ValueError(f"{BOOT_SPEC}: setting {n} ({raw.get('id', '?')}): {exc}") from exc
        out.append(valid)
    return out


def unit_text(boot_argv: list[str]) -> str:
    return (
        "# Written by `gpunode apply`; `gpunode rollback` removes it.\n"
        "[Unit]\n"
        "Description=gpunode: re-apply runtime tuning (THP, governor, IRQ affinity, GPU settings)\n"
        "After=nvidia-persistenced.service nvidia-fabricmanager.service systemd-sysctl.service network.target\n"
        "ConditionPathExists=" + BOOT_SPEC + "\n"
        "\n[Service]\nType=oneshot\nRemainAfterExit=yes\n"
        f"ExecStart={shlex.join(boot_argv)}\n"
        "\n[Install]\nWantedBy=multi-user.target\n"
    )


def no_systemd_why(sysroot) -> str | None:
    """Why the boot unit cannot be installed here, or None. Live: not booted with systemd (a
    container, the lent GPU VMs). Another root: no systemctl here to enable it with."""
    if sysroot.is_live:
        return None if sysroot.exists("/run/systemd/system") else "no systemd"
    return None if shutil.which("systemctl") else "no systemctl on this machine to enable the unit under the root"


def plan_persistence(plan, files: PlannedFiles, boot_argv: list[str]) -> list[Change]:
    """File changes (and enabling the boot unit) that make the plan's writes last across a reboot."""
    writes = plan.writes
    changes = _sysctl_changes(plan.settings, writes, files)
    runtime_ids = {c.setting_id for c in writes}
    runtime = [s for s in plan.settings if s.id in runtime_ids and is_runtime_only(s)]
    if runtime:
        changes += _boot_changes(runtime, files, boot_argv)
    no_systemd = no_systemd_why(files.sys) if runtime else None
    if no_systemd:
        # A unit would never run, and daemon-reload would fail the whole batch.
        # Say so instead of pretending to persist.
        for change in changes:
            if change.setting_id == "persist.boot":
                change.blocked = f"{no_systemd}: runtime settings will not survive a reboot"
    for change in changes:
        change.needs_root = files.sys.is_live
    return changes


def _sysctl_changes(settings, writes: list[Change], files: PlannedFiles) -> list[Change]:
    """The sysctl values written now, merged into gpunode's sysctl.d file."""
    by_id = {s.id: s for s in settings}
    sysctls = {by_id[c.setting_id].key: str(c.after) for c in writes
               if c.setting_id in by_id and kind_of(by_id[c.setting_id]).persistence(by_id[c.setting_id]) == SYSCTL_D}
    if not sysctls:
        return []
    values = parse_sysctl_conf(files.text(SYSCTL_FILE) or "")
    values.update(sysctls)
    change = files.write_text("persist.sysctl", SYSCTL_FILE, sysctl_conf(values),
                              current_text="(runtime only)", after_text=f"{len(sysctls)} sysctl(s) at boot")
    return [change] if change else []


def _boot_changes(runtime: list[Setting], files: PlannedFiles, boot_argv: list[str]) -> list[Change]:
    """Runtime-only settings: into the boot spec, with the oneshot unit that re-applies it, enabled."""
    changes: list[Change] = []
    spec: dict[str, dict] = {}
    try:
        spec = {s.id: _setting_dict(s) for s in load_boot_spec(files.text(BOOT_SPEC))}
    except (ValueError, TypeError, KeyError):
        spec = {}  # unreadable: replace it (the old bytes are journaled)
    spec.update({s.id: _setting_dict(s) for s in runtime})
    for change in (
        files.write_text("persist.boot", BOOT_SPEC, boot_spec_text(spec), mode=0o600,
                         current_text="(runtime only)",
                         after_text=f"{len(runtime)} runtime setting(s) re-applied at boot"),
        files.write_text("persist.boot", UNIT_FILE, unit_text(boot_argv), current_text="",
                         after_text=f"{UNIT_NAME} (oneshot at boot)", post=[["systemctl", "daemon-reload"]]),
    ):
        changes += [change] if change else []
    if not files.sys.exists(UNIT_WANTS):
        changes.append(Change("persist.boot", UNIT_NAME, "enable", UNIT_NAME, "disabled", "enabled",
                              current_text="disabled", after_text=f"{UNIT_NAME} enabled",
                              extra={"link": UNIT_WANTS}))
    return changes


def _setting_dict(setting: Setting) -> dict:
    data = asdict(setting)
    data["tags"] = list(setting.tags)
    return data
