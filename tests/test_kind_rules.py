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
