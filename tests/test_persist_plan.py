"""plan_persistence's branches (issue 21 split it): sysctls merged into gpunode's sysctl.d file,
runtime-only settings into the boot spec with its unit, an unreadable boot spec replaced, and
every boot change blocked, the sysctl one not, where no systemd would run the unit."""

from __future__ import annotations

import shutil

import pytest

from gpunode.model.profile import Profile, Setting
from gpunode.tune.persist import BOOT_SPEC, SYSCTL_FILE, UNIT_FILE, UNIT_NAME, plan_persistence
from gpunode.tune.plan import PlannedFiles, make_plan
from testkit import tree_host

THP = "/sys/kernel/mm/transparent_hugepage/enabled"
SETTINGS = [Setting("sysctl", "vm.swappiness", 1), Setting("sysfs", "thp.enabled", "never", path=THP)]
FILES = {"/proc/sys/vm/swappiness": "60\n", THP: "[always] madvise never\n",
         SYSCTL_FILE: "# kept\nnet.core.rmem_max = 1\n"}


def persistence(tmp_path, files=None, settings=SETTINGS):
    host = tree_host(tmp_path / "root", {**FILES, **(files or {})})
    planned = PlannedFiles(host.sys)
    plan = make_plan(host, Profile("t", settings={s.id: s for s in settings}), settings, files=planned)
    return plan_persistence(plan, planned, ["gpunode", "apply", "--boot"])


@pytest.fixture
def systemctl(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")


def test_sysctls_and_runtime_settings_persist(tmp_path, systemctl):
    changes = persistence(tmp_path)
    assert [(c.setting_id, c.subject) for c in changes] == [
        ("persist.sysctl", SYSCTL_FILE), ("persist.boot", BOOT_SPEC), ("persist.boot", UNIT_FILE),
        ("persist.boot", UNIT_NAME)]
    assert changes[0].after_text == "1 sysctl(s) at boot" and changes[1].after_text.startswith("1 runtime setting")
    assert not any(c.blocked for c in changes) and not any(c.needs_root for c in changes)  # not the live root


def test_an_unreadable_boot_spec_is_replaced(tmp_path, systemctl):
    changes = persistence(tmp_path, {BOOT_SPEC: "{not json"})
    (spec,) = [c for c in changes if c.subject == BOOT_SPEC]
    assert not spec.blocked and spec.before["exists"] and spec.after_text.startswith("1 runtime setting")


def test_without_systemctl_the_boot_changes_are_blocked_and_sysctl_is_not(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    changes = persistence(tmp_path)
    blocked = {c.subject: c.blocked for c in changes}
    assert blocked[SYSCTL_FILE] == ""
    why = "no systemctl on this machine to enable the unit under the root: runtime settings will not survive a reboot"
    assert [blocked[s] for s in (BOOT_SPEC, UNIT_FILE, UNIT_NAME)] == [why] * 3


def test_sysctl_only_needs_no_systemd(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    (change,) = persistence(tmp_path, settings=SETTINGS[:1])
    assert change.subject == SYSCTL_FILE and not change.blocked
