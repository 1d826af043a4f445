"""Rules inside the setting kinds that a plan follows, each at its edge: pam_limits' soft/hard
rule, what each kind's target refuses. Plans are made on fixture trees (no apply, no root)."""

from __future__ import annotations

import pytest

from gpunode.model.profile import Profile, Setting
from gpunode.tune.kinds.registry import kind_of
from gpunode.tune.kinds.values import SettingInvalid
from gpunode.tune.plan import make_plan
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
    ("6", "5", True), ("5", "5", False), ("05", "5", False), ("4", "5", False), ("x", "5", False)])
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
    from gpunode.checks.settings import judge_setting

    six = judge_setting(ctx_of(tmp_path / "a", governors(["powersave"] * 6)), governor_setting())
    assert six[0].message.endswith("cpu3/cpufreq/scaling_governor: powersave and 2 more; expected performance")
    four = judge_setting(ctx_of(tmp_path / "b", governors(["powersave"] * 4)), governor_setting())
    assert "more" not in four[0].message and four[0].message.count("powersave") == 4


def test_one_subject_is_shown_as_its_value_many_as_a_summary(tmp_path):
    from gpunode.checks.settings import judge_setting

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
    ("=", True, "True", False), ("=", "True", True, False),
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


def test_file_states_describe_themselves():
    from gpunode.tune.kinds.change import FileState

    assert FileState(False).describe() == "(absent)"
    assert FileState(True, link="../x").describe() == "-> ../x"
    assert FileState(True, b"abc", 0o644).describe() == "3 bytes"


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


def test_cmdline_parameters_as_shown_and_as_tokens():
    from gpunode.tune.kinds.cmdline import NOT_SET, format_param, param_token

    assert format_param("iommu", True) == "iommu" and format_param("iommu", "pt") == "iommu=pt"
    assert format_param("iommu", None) == "(no iommu)" and format_param("iommu", NOT_SET) == "(no iommu)"
    assert param_token("iommu", True) == "iommu" and param_token("iommu", False) is None
    assert param_token("iommu", "pt") == "iommu=pt"


# --- irq, sysctl, sysfs, service, cmdline edges -------------------------------------------------------


def nic_tree(node: str, irqs=(40, 41), affinity="0-3", node_cpus="0-3") -> dict[str, str]:
    files = {"/sys/class/net/eth0/device/numa_node": node + "\n", "/sys/class/net/eth0/operstate": "up\n",
             "/sys/devices/system/node/node0/cpulist": node_cpus + "\n"}
    for irq in irqs:
        files[f"/sys/class/net/eth0/device/msi_irqs/{irq}"] = ""
        files[f"/proc/irq/{irq}/smp_affinity_list"] = affinity + "\n"
    return files


def test_a_nic_on_numa_node_0_is_judged_and_one_without_a_node_is_not(tmp_path):
    from gpunode.tune.kinds.irq import observe_nics

    (local,) = observe_nics(tree_host(tmp_path / "a", nic_tree("0")))
    assert local.value is True and local.note == "node 0"
    (remote,) = observe_nics(tree_host(tmp_path / "b", nic_tree("0", affinity="4-7")))
    assert remote.value is False and remote.note == "node 0; 2/2 IRQs outside node CPUs"
    (none,) = observe_nics(tree_host(tmp_path / "c", nic_tree("-1")))
    assert none.value is None and "no NUMA node" in none.note
    (no_irqs,) = observe_nics(tree_host(tmp_path / "d", nic_tree("0", irqs=())))
    assert no_irqs.value is None and "no MSI IRQs" in no_irqs.note


@pytest.mark.parametrize(("key", "target", "ok"), [
    ("net.core.netdev_max_backlog", 0, False), ("net.core.netdev_max_backlog", 1, True),
    ("net.core.netdev_max_backlog", 2**31 - 1, True), ("net.core.netdev_max_backlog", 2**31, False),
    ("net.core.rmem_max", 0, True), ("net.core.rmem_max", 2**31 - 1, True), ("net.core.rmem_max", 2**31, False),
    ("net.core.wmem_max", 0, True), ("net.core.wmem_max", 2**31, False),
    ("vm.swappiness", 200, True), ("vm.swappiness", 201, False), ("kernel.numa_balancing", 4, False)])
def test_sysctl_ranges_the_kernel_documents(key, target, ok):
    kind = kind_of(Setting("sysctl", key, target))
    if ok:
        assert kind.validate_target(key, target) == target
    else:
        with pytest.raises(SettingInvalid, match="out of range"):
            kind.validate_target(key, target)


def test_a_congestion_control_the_kernel_lists_is_available(tmp_path):
    from gpunode.tune.kinds.sysctl import value_availability

    host = tree_host(tmp_path, {"/proc/sys/net/ipv4/tcp_available_congestion_control": "reno cubic bbr\n"})
    what, found = value_availability(host, "net.ipv4.tcp_congestion_control", "bbr")
    assert what == "congestion control" and found.available
    assert value_availability(host, "net.ipv4.tcp_congestion_control", "reno")[1].available
    assert value_availability(host, "vm.swappiness", "bbr") is None


def test_sysfs_paths_are_normalised_and_one_line():
    from gpunode.tune.kinds.sysfs import normalise_path

    assert normalise_path("//sys/kernel/mm/x") == "/sys/kernel/mm/x"
    with pytest.raises(SettingInvalid, match="control character"):
        normalise_path("/sys/kernel\n/mm")
    for missing in ("", None):
        with pytest.raises(SettingInvalid, match="needs 'path'"):
            normalise_path(missing)


@pytest.mark.parametrize(("target", "enabled", "after"), [
    ("active", "disabled", {"active": "active", "enabled": "enabled"}),
    ("active", "static", {"active": "active", "enabled": "static"}),
    ("inactive", "enabled", {"active": "inactive", "enabled": "disabled"}),
    ("inactive", "static", {"active": "inactive", "enabled": "static"})])
def test_service_changes_enable_or_disable_only_what_can_be(tmp_path, target, enabled, after):
    from gpunode.host.runner import ReplayRunner
    from gpunode.tune.kinds.service import service_change

    runner = ReplayRunner()
    runner.add(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState", "nvidia-dcgm"],
               stdout=f"LoadState=loaded\nActiveState=inactive\nUnitFileState={enabled}\n")
    change = service_change(tree_host(tmp_path, runner=runner), "service.nvidia-dcgm", "nvidia-dcgm", target, "inactive")
    assert change.after == after and not change.blocked


def test_a_grubby_host_whose_entries_hold_a_token_gpunode_would_not_write_is_blocked(tmp_path):
    from gpunode.host.runner import ReplayRunner
    from gpunode.tune.kinds.cmdline import entries_token

    runner = ReplayRunner()
    runner.add(["grubby", "--info=ALL"], stdout='index=0\nargs="ro iommu=$(id)"\n')
    token, why = entries_token(tree_host(tmp_path / "a", runner=runner), "iommu")
    assert token is None and "which gpunode would not write back" in why
    runner = ReplayRunner()
    runner.add(["grubby", "--info=ALL"], stdout='index=0\nargs="ro iommu=pt"\nindex=1\nargs="ro"\n')
    token, why = entries_token(tree_host(tmp_path / "b", runner=runner), "iommu")
    assert token is None and "the boot entries differ on iommu" in why
    runner = ReplayRunner()
    runner.add(["grubby", "--info=ALL"], stdout='index=0\nargs="ro iommu=pt"\n')
    assert entries_token(tree_host(tmp_path / "c", runner=runner), "iommu") == ("iommu=pt", "")


DEBIAN_GRUB = {"/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', "/etc/default/grub.d/.keep": ""}


def test_the_grub_dropin_is_planned_0644_and_a_parameter_from_elsewhere_is_left(tmp_path):
    from gpunode.tune.kinds.change import FileState

    host = tree_host(tmp_path / "a", {**DEBIAN_GRUB, "/proc/cmdline": "BOOT_IMAGE=/vmlinuz ro quiet\n"})
    setting = Setting("cmdline", "pcie_aspm", "off")
    (change,) = make_plan(host, Profile("t", settings={setting.id: setting}), [setting], allow_reboot=True).changes
    assert FileState.from_json(change.after).mode == 0o644 and not change.blocked
    host = tree_host(tmp_path / "b", {**DEBIAN_GRUB, "/proc/cmdline": "BOOT_IMAGE=/vmlinuz ro quiet pcie_aspm=off\n"})
    off = Setting("cmdline", "pcie_aspm", False)
    (change,) = make_plan(host, Profile("t", settings={off.id: off}), [off], allow_reboot=True).changes
    assert "comes from the boot loader's own configuration" in change.blocked


def test_whole_numbers_and_text_at_their_bounds():
    from gpunode.tune.kinds.values import MAX_TEXT, knob_value, one_line

    kind = kind_of(Setting("limits", "nofile", 1))
    assert kind.validate_target("nofile", 2**63 - 1) == 2**63 - 1
    with pytest.raises(SettingInvalid, match="out of range"):
        kind.validate_target("nofile", 2**63)
    assert knob_value(2**64 - 1, "target") == 2**64 - 1
    with pytest.raises(SettingInvalid, match="out of range"):
        knob_value(2**64, "target")
    assert MAX_TEXT == 512 and one_line("x" * 512, "target") == "x" * 512
    with pytest.raises(SettingInvalid, match="513 characters long"):
        one_line("x" * 513, "target")


def test_a_sysfs_knob_on_a_read_only_mount_is_not_applicable(tmp_path):
    from gpunode.audit.context import AuditContext
    from gpunode.tune.kinds import assess

    host = tree_host(tmp_path, {"/proc/mounts": "sysfs /sys sysfs ro,nosuid,nodev,noexec 0 0\n",
                                "/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n"})
    setting = Setting("sysfs", "thp.enabled", "never", path="/sys/kernel/mm/transparent_hugepage/enabled")
    a = assess(AuditContext(host=host, profile=Profile("t")), setting)
    assert a.wrong and "read-only" in a.not_applicable


def test_unit_limit_targets_and_judgement():
    from gpunode.tune.kinds.base import Observed

    kind = kind_of(Setting("unit", "slurmd.LimitMEMLOCK", 1))
    assert kind.validate_target("slurmd.LimitMEMLOCK", 0) == 0
    assert kind.validate_target("slurmd.LimitMEMLOCK", "unlimited") == "infinity"
    for bad in (-1, True, "lots"):
        with pytest.raises(SettingInvalid):
            kind.validate_target("slurmd.LimitMEMLOCK", bad)
    number = Setting("unit", "slurmd.LimitNOFILE", 65536)
    assert kind.satisfied(number, Observed("slurmd LimitNOFILE", "65536"))
    assert not kind.satisfied(number, Observed("slurmd LimitNOFILE", "1024"))
    endless = Setting("unit", "slurmd.LimitMEMLOCK", "infinity")
    assert kind.satisfied(endless, Observed("slurmd LimitMEMLOCK", "infinity"))
    assert not kind.satisfied(endless, Observed("slurmd LimitMEMLOCK", "65536"))


# --- the plan (tune/plan.py) ---------------------------------------------------------------------------


def test_a_plan_lists_satisfied_settings_and_plans_knob_writes_unblocked(tmp_path):
    host = tree_host(tmp_path, {"/proc/sys/vm/swappiness": "60\n", "/proc/sys/kernel/numa_balancing": "0\n"})
    wrong, right = Setting("sysctl", "vm.swappiness", 10), Setting("sysctl", "kernel.numa_balancing", 0)
    plan = make_plan(host, Profile("t", settings={s.id: s for s in (wrong, right)}), [wrong, right])
    assert plan.satisfied == ["sysctl.kernel.numa_balancing"]
    (change,) = plan.changes
    assert change.target == "/proc/sys/vm/swappiness" and change.blocked == "" and plan.writes == [change]
    assert change.needs_root is False  # a fixture root is the operator's own tree
    assert plan.setting("sysctl.vm.swappiness") is wrong and plan.setting("sysctl.vm.nothing") is None


def test_a_parameter_in_gpunodes_own_dropin_is_removed_not_blocked(tmp_path):
    dropin = "/etc/default/grub.d/90-gpunode.cfg"
    from gpunode.tune.kinds.cmdline import render_dropin

    host = tree_host(tmp_path, {**DEBIAN_GRUB, dropin: render_dropin(["pcie_aspm=off"]),
                                "/proc/cmdline": "BOOT_IMAGE=/vmlinuz ro quiet pcie_aspm=off\n"})
    off = Setting("cmdline", "pcie_aspm", False)
    (change,) = make_plan(host, Profile("t", settings={off.id: off}), [off], allow_reboot=True).changes
    assert not change.blocked and change.target == dropin



def test_a_unit_limit_lives_in_the_units_own_dropin():
    setting = Setting("unit", "slurmd.LimitMEMLOCK", "infinity")
    assert kind_of(setting).where(setting) == "/etc/systemd/system/slurmd.service.d/90-gpunode.conf"
