"""Small pieces of apply: never-lower targets, the journal reader, services (GRUB drop-in: tests/test_kinds.py)."""

from __future__ import annotations

import json

import pytest

from gpunode.host.facts.cpulist import format_cpulist, read_cpulist
from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.runner import CommandResult, Runner
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import JournalError, StateDir, parse_journal
from gpunode.tune.kinds.base import value_to_write
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import apply_profile, rollback
from testkit import tree_host


@pytest.mark.parametrize(
    ("op", "current", "target", "written"),
    [
        (">=", "4096\t131072\t6291456", "4096 87380 268435456", "4096 131072 268435456"),
        (">=", "8192 16384 4194304", "4096 65536 268435456", "8192 65536 268435456"),
        ("<=", "60", 10, "10"),
        ("<=", "5", 10, "5"),
        (">=", "(not set)", 1048576, "1048576"),
        ("=", "1", 0, "0"),
        ("=", "madvise", "always", "always"),
    ],
)
def test_value_to_write_never_moves_a_field_further_than_needed(op, current, target, written):
    assert value_to_write(op, current, target) == written


def test_cpulists_round_trip():
    assert format_cpulist(read_cpulist("0-3,8,10-11")) == "0-3,8,10-11"
    assert format_cpulist({5}) == "5"


def test_journal_reads_past_a_torn_last_line_and_a_corrupt_middle():
    begin = json.dumps({"type": "begin", "seq": 1, "profile": "training"})
    record = parse_journal("x", begin + '\n{"type": "cha')
    assert record.torn and record.status == "empty" and record.begin["profile"] == "training"
    record = parse_journal("x", '{"type": "beg\n' + begin + '\n{"type": "change"}\n[1]\n')
    assert not record.torn and record.begin["profile"] == "training"
    assert [(n, why.split(":")[0]) for n, _, why in record.bad_lines] == [
        (1, "not JSON"), (3, "KeyError"), (4, "TypeError")]


def test_state_dir_rejects_path_ids(tmp_path):
    with pytest.raises(JournalError, match="not an apply id"):
        StateDir(tmp_path).path_of("../etc/passwd")


class FakeSystemd(Runner):
    """systemctl show/stop/start/enable/disable over an in-memory unit table."""

    def __init__(self, units: dict[str, dict]):
        self.units = units
        self.calls: list[list[str]] = []

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        verb, unit = argv[1], argv[-1]
        state = self.units.get(unit)
        if verb == "show":
            if state is None:
                return CommandResult(argv, 0, "LoadState=not-found\nActiveState=inactive\nUnitFileState=\n")
            return CommandResult(argv, 0, f"LoadState=loaded\nActiveState={state['active']}\nUnitFileState={state['enabled']}\n")
        if state is None:
            return CommandResult(argv, 5, stderr=f"Failed to {verb} {unit}.service: Unit not found.\n")
        state.update({"stop": {"active": "inactive"}, "start": {"active": "active"},
                      "enable": {"enabled": "enabled"}, "disable": {"enabled": "disabled"}}[verb])
        return CommandResult(argv, 0)


def test_services_stop_disable_and_come_back(tmp_path):
    systemd = FakeSystemd({"irqbalance": {"active": "active", "enabled": "enabled"},
                           "nvidia-persistenced": {"active": "inactive", "enabled": "disabled"}})
    host = tree_host(tmp_path / "root", runner=systemd)
    profile = load_profile("training")
    env = ApplyEnv(host=host, gpu=NoGpuControl())
    state = StateDir(tmp_path / "state")
    out = apply_profile(env, profile, select_settings(profile, ["service.irqbalance"]), state)
    assert out.result == "applied"
    assert systemd.units["irqbalance"] == {"active": "inactive", "enabled": "disabled"}
    assert [c[1] for c in systemd.calls if c[1] != "show"] == ["stop", "disable"]
    again = apply_profile(env, profile, select_settings(profile, ["service.irqbalance"]), state)
    assert again.result == "nothing-to-change"
    _, results = rollback(env, state)
    assert [r.status for r in results] == ["restored"]
    assert systemd.units["irqbalance"] == {"active": "active", "enabled": "enabled"}
    assert [c[1] for c in systemd.calls if c[1] != "show"][-2:] == ["enable", "start"]


def test_service_not_installed_is_refused_and_a_failing_systemctl_rolls_back(tmp_path):
    systemd = FakeSystemd({"irqbalance": {"active": "active", "enabled": "enabled"}})
    host = tree_host(tmp_path / "root", runner=systemd)
    (tmp_path / "o.yaml").write_text("settings:\n  - {kind: service, key: ghost, target: active}\n")
    profile = load_profile("training", overlays=[tmp_path / "o.yaml"])
    env = ApplyEnv(host=host, gpu=NoGpuControl())
    out = apply_profile(env, profile, select_settings(profile, ["service.ghost"]), StateDir(tmp_path / "s"))
    assert out.rows[0]["status"] == "blocked" and "not installed" in out.rows[0]["note"]

    original = systemd.run

    def broken_disable(argv, **kw):
        if argv[1] == "disable":
            return CommandResult(list(argv), 1, stderr="Failed to disable unit: Access denied\n")
        return original(argv, **kw)

    systemd.run = broken_disable
    out = apply_profile(env, profile, select_settings(profile, ["service.irqbalance"]), StateDir(tmp_path / "s2"))
    assert out.result == "failed" and "systemctl disable irqbalance failed: Failed to disable unit: Access denied" in out.reason
    assert systemd.units["irqbalance"] == {"active": "active", "enabled": "enabled"}  # started again


class _LiveLike:
    """A fixture tree that claims to be the live root, to test what only happens on live hosts."""

    def __init__(self, sysroot):
        self._sys = sysroot

    is_live = True

    def __getattr__(self, name):
        return getattr(self._sys, name)


def test_boot_unit_is_blocked_not_failed_without_systemd(tmp_path):
    from gpunode.tune.kinds.change import PlannedFiles
    from gpunode.tune.persist import plan_persistence

    host = tree_host(tmp_path, {"/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n"})
    setting = load_profile("training").get("sysfs.thp.enabled")
    plan = type("Plan", (), {"settings": [setting], "writes": [type("W", (), {"setting_id": setting.id, "after": "always"})()]})()
    without = plan_persistence(plan, PlannedFiles(_LiveLike(host.sys)), ["gpunode", "apply", "--boot"])
    boot = [c for c in without if c.setting_id == "persist.boot"]
    assert boot and all("no systemd" in c.blocked for c in boot)
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    with_systemd = plan_persistence(plan, PlannedFiles(_LiveLike(host.sys)), ["gpunode", "apply", "--boot"])
    assert all(not c.blocked for c in with_systemd if c.setting_id == "persist.boot")
