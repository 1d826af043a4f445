"""Rules inside the setting kinds that a plan follows, each at its edge: pam_limits' soft/hard
rule, what each kind's target refuses. Plans are made on fixture trees (no apply, no root)."""

from __future__ import annotations

import pytest

from gpunode.tune.kinds.registry import kind_of
from gpunode.tune.kinds.values import SettingInvalid
from gpunode.tune.plan import make_plan
from gpunode.tune.profiles import Profile, Setting
from testkit import tree_host


def limits_plan(tmp_path, conf: str, setting: Setting):
    host = tree_host(tmp_path / "root", {"/etc/security/limits.conf": conf})
    profile = Profile("t", settings={setting.id: setting})
    return make_plan(host, profile, [setting])


def test_a_soft_limit_raised_above_the_hard_one_raises_the_hard_one_too(tmp_path):
    # `<=`: soft 5000 is too high; hard 500 already satisfies; the new soft 1000 would be above it
    plan = limits_plan(tmp_path, "* soft nofile 5000\n* hard nofile 500\n",
                       Setting("limits", "nofile", 1000, op="<="))
    (change,) = plan.changes
    assert change.after_text == "soft 1000, hard 1000" and change.current_text == "soft 5000, hard 500"


def test_the_hard_limit_stays_when_the_new_soft_one_is_within_it(tmp_path):
    plan = limits_plan(tmp_path, "* soft nofile 5000\n* hard nofile 1000\n",
                       Setting("limits", "nofile", 1000, op="<="))
    (change,) = plan.changes
    assert change.after_text == "soft 1000"


def test_an_unset_hard_limit_is_planned_like_the_soft_one(tmp_path):
    plan = limits_plan(tmp_path, "* soft nofile 5000\n", Setting("limits", "nofile", 1000, op="<="))
    (change,) = plan.changes
    assert change.after_text == "soft 1000, hard 1000" and change.current_text == "soft 5000, hard (not set)"


def test_unlimited_soft_raises_a_numeric_hard_limit(tmp_path):
    plan = limits_plan(tmp_path, "* soft memlock 64\n* hard memlock unlimited\n",
                       Setting("limits", "memlock", "unlimited"))
    (change,) = plan.changes
    assert change.after_text == "soft unlimited"


@pytest.mark.parametrize(("a", "b", "bigger"), [
    ("unlimited", "5", True), ("5", "unlimited", False), ("unlimited", "unlimited", False),
    ("6", "5", True), ("5", "5", False), ("4", "5", False), ("x", "5", False)])
def test_which_limit_is_bigger(a, b, bigger):
    from gpunode.tune.kinds.limits import _bigger

    assert _bigger(a, b) is bigger


@pytest.mark.parametrize(("target", "ok"), [(-1, "unlimited"), ("unlimited", "unlimited"), ("infinity", "unlimited"),
                                            (0, 0), (65536, 65536), (-2, None), (True, None), ("lots", None)])
def test_limits_targets(target, ok):
    kind = kind_of(Setting("limits", "nofile", 1))
    if ok is None:
        with pytest.raises(SettingInvalid):
            kind.validate_target("nofile", target)
    else:
        assert kind.validate_target("nofile", target) == ok


# --- audit's judgement of a setting (tune/kinds/__init__.py) ---------------------------------------


def ctx_of(tmp_path, files=None, inventory=None):
    from gpunode.audit.context import AuditContext

    return AuditContext(host=tree_host(tmp_path / "root", files or {}, inventory=inventory), profile=Profile("t"))


GOVERNOR = "/sys/devices/system/cpu/cpu{}/cpufreq/scaling_governor"


def governors(values: list[str]) -> dict[str, str]:
    return {GOVERNOR.format(i): v + "\n" for i, v in enumerate(values)}


def governor_setting() -> Setting:
    return Setting("sysfs", "cpu.governor", "performance", path=GOVERNOR.format("*"))


def test_a_gpu_condition_needs_a_gpu_not_just_a_driver(tmp_path):
    from gpunode.host.gpu.model import GpuInventory
    from gpunode.tune.kinds import condition_holds

    no_gpus = ctx_of(tmp_path, inventory=GpuInventory(available=True, gpus=[]))
    assert condition_holds(no_gpus, "gpu") == (False, "no GPU")
    assert condition_holds(no_gpus, "always") == (True, "")
    assert condition_holds(no_gpus, "someday") == (False, "unknown condition someday")


def test_many_wrong_subjects_are_listed_four_and_counted(tmp_path):
    from gpunode.tune.kinds import judge_setting

    six = judge_setting(ctx_of(tmp_path / "a", governors(["powersave"] * 6)), governor_setting())
    assert six[0].message.endswith("cpu3/cpufreq/scaling_governor: powersave and 2 more; expected performance")
    four = judge_setting(ctx_of(tmp_path / "b", governors(["powersave"] * 4)), governor_setting())
    assert "more" not in four[0].message and four[0].message.count("powersave") == 4


def test_one_subject_is_shown_as_its_value_many_as_a_summary(tmp_path):
    from gpunode.tune.kinds import judge_setting

    one = judge_setting(ctx_of(tmp_path / "a", governors(["performance"])), governor_setting())
    assert one[0].message == "performance"
    same = judge_setting(ctx_of(tmp_path / "b", governors(["performance"] * 3)), governor_setting())
    assert same[0].message == "performance (all 3)"
    mixed = judge_setting(ctx_of(tmp_path / "c", governors(["performance", "powersave", "performance"])),
                          governor_setting())
    assert mixed[0].observed == "performance ×2, powersave ×1"


# --- shared value rules (tune/kinds/base.py) and planned files (tune/kinds/change.py) -------------


@pytest.mark.parametrize(("op", "current", "target", "expected"), [
    ("=", True, True, True), ("=", 1, True, False), ("=", True, 1, False), ("=", "1", "1", True),
    ("<=", 5, 10, True), ("<=", 11, 10, False), (">=", 5, 10, False), (">=", 10, 10, True), ("=", 5, 5, True),
    ("=", 5, 6, False), ("<=", "4096 87380", "8192 87380", True), ("<=", "a", "b", False)])
def test_satisfies(op, current, target, expected):
    from gpunode.tune.kinds.base import satisfies

    assert satisfies(op, current, target) is expected


@pytest.mark.parametrize(("op", "current", "target", "written"), [
    ("=", "0", True, "1"), ("=", "1", False, "0"), ("=", "5", 7, "7"), (">=", "9", 7, "9"), ("<=", "9", 7, "7"),
    (">=", "4096 1", "1 2", "4096 2")])
def test_value_to_write(op, current, target, written):
    from gpunode.tune.kinds.base import value_to_write

    assert value_to_write(op, current, target) == written


def test_where_a_knob_lives_defaults_to_its_path_else_its_key():
    from gpunode.tune.kinds.base import SettingKind

    assert SettingKind().where(Setting("sysfs", "thp.enabled", "x", path="/sys/kernel/mm/x")) == "/sys/kernel/mm/x"
    assert SettingKind().where(Setting("sysctl", "vm.swappiness", 1)) == "vm.swappiness"


def test_file_states_describe_themselves_and_long_lists_are_cut():
    from gpunode.tune.kinds.change import FileState, format_lines

    assert FileState(False).describe() == "(absent)"
    assert FileState(True, link="../x").describe() == "-> ../x"
    assert FileState(True, b"abc", 0o644).describe() == "3 bytes"
    assert format_lines(["a", "b", "c"]) == "a; b; c"
    assert format_lines(["a", "b", "c", "d"]) == "a; b; c (+1 more)"


def test_a_rewritten_file_keeps_its_mode_a_new_one_or_a_link_gets_the_default(tmp_path):
    import os

    from gpunode.host.sysroot import SysRoot
    from gpunode.tune.kinds.change import FileState, PlannedFiles

    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/kept.conf").write_text("old\n")
    os.chmod(root / "etc/kept.conf", 0o600)
    os.symlink("kept.conf", root / "etc/link.conf")
    files = PlannedFiles(SysRoot(root))
    kept = files.write_text("s", "/etc/kept.conf", "new\n")
    assert FileState.from_json(kept.after).mode == 0o600
    linked = files.write_text("s", "/etc/link.conf", "new\n")
    assert FileState.from_json(linked.after).mode == 0o644
    new = files.write_text("s", "/etc/new.conf", "x\n", mode=0o640)
    assert FileState.from_json(new.after).mode == 0o640
    assert files.write_text("s", "/etc/new.conf", "x\n", mode=0o640) is None  # as planned already: no change
