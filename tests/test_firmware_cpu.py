"""Issue 24 item 6: firmware facts (DMI, `ipmitool mc info`, `ethtool -i`) and CPU idle states
judged (cpu.cstates); EPP and turbo as sysfs settings of the training profile. Outputs: real
ones of this Debian machine where it has the tool, else the documented layout
(tests/fixtures/firmware/README.md)."""

from __future__ import annotations

import shutil

import pytest

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.checks.cpu_power import cstates
from gpunode.host.facts.cpuidle import deepest_enabled, idle_states
from gpunode.host.facts.firmware import bmc_firmware, nic_firmware, parse_colon_fields, physical_nics
from gpunode.host.runner import ReplayRunner
from gpunode.host.sysroot import SysRoot
from gpunode.model.profile import Profile
from gpunode.tune.kinds import assess
from gpunode.tune.profiles import load_profile
from testkit import FIXTURES, tree_host

FW = FIXTURES / "firmware"
IDLE = "/sys/devices/system/cpu/cpu{}/cpuidle/state{}/{}"
# intel_idle's Sapphire Rapids table (drivers/idle/intel_idle.c, spr_cstates), as sysfs shows it
SPR = (("POLL", 0), ("C1", 1), ("C1E", 2), ("C6", 290))


def spr_files(cpus: int = 2, disable_c6: tuple[int, ...] = ()) -> dict[str, str]:
    files = {"/sys/devices/system/cpu/cpuidle/current_driver": "intel_idle\n",
             "/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro quiet\n"}
    for cpu in range(cpus):
        for i, (name, latency) in enumerate(SPR):
            files[IDLE.format(cpu, i, "name")] = name + "\n"
            files[IDLE.format(cpu, i, "latency")] = f"{latency}\n"
            files[IDLE.format(cpu, i, "disable")] = "1\n" if name == "C6" and cpu in disable_c6 else "0\n"
    return files


def judge(host):
    (result,) = run_checks([cstates], AuditContext(host=host, profile=Profile("t")))
    return result


def test_recorded_haltpoll_guest_passes_with_its_states():
    host = tree_host(FW / "cpuidle-haltpoll")  # this machine's own cpuidle files
    states = idle_states(host.sys)
    assert [(s.cpu, s.name, s.latency_us) for s in states] == [(0, "POLL", 0), (0, "haltpoll idle", 1),
                                                                (1, "POLL", 0), (1, "haltpoll idle", 1)]
    result = judge(host)
    assert result.status.value == "PASS" and "haltpoll idle 1 us" in result.message and "driver haltpoll" in result.message


def test_c6_enabled_on_a_sapphire_rapids_host_warns_and_names_it(tmp_path):
    result = judge(tree_host(tmp_path, spr_files(cpus=4, disable_c6=(0,))))
    assert result.status.value == "WARN"
    assert result.message.startswith("3 of 4 CPUs may enter C6 (290 us exit latency; driver intel_idle)")


def test_c6_disabled_everywhere_or_limited_on_the_command_line_passes(tmp_path):
    assert judge(tree_host(tmp_path / "a", spr_files(cpus=2, disable_c6=(0, 1)))).status.value == "PASS"
    files = spr_files(cpus=1)
    files["/proc/cmdline"] = "ro intel_idle.max_cstate=1\n"
    for i in (2, 3):  # what the kernel shows with max_cstate=1: the deeper states are disabled
        files[IDLE.format(0, i, "disable")] = "1\n"
    result = judge(tree_host(tmp_path / "b", files))
    assert result.status.value == "PASS" and "intel_idle.max_cstate=1" in result.message


def test_no_cpuidle_skips_with_why(tmp_path):
    result = judge(tree_host(tmp_path, {"/proc/cmdline": "ro processor.max_cstate=1 -- init-arg\n"}))
    assert result.status.value == "SKIP" and "processor.max_cstate=1" in result.message


def test_deepest_enabled_state_per_cpu():
    from gpunode.host.facts.cpuidle import IdleState

    states = [IdleState(0, 1, "C1", 1, False), IdleState(0, 3, "C6", 290, True), IdleState(0, 2, "C1E", 2, False)]
    assert deepest_enabled(states)[0].name == "C1E"


@pytest.mark.parametrize(("key", "path"), [
    ("cpu.epp", "/sys/devices/system/cpu/cpu*/cpufreq/energy_performance_preference"),
    ("cpu.no_turbo", "/sys/devices/system/cpu/intel_pstate/no_turbo"),
    ("cpu.boost", "/sys/devices/system/cpu/cpufreq/boost"),
])
def test_training_profile_sets_epp_and_turbo_where_the_kernel_has_the_knob(tmp_path, key, path):
    setting = load_profile("training").get(f"sysfs.{key}")
    assert setting is not None and setting.path == path
    ctx = AuditContext(host=tree_host(tmp_path / "none"), profile=Profile("t"))
    assert assess(ctx, setting).absent.startswith("knob absent on this host")
    wrong = {"cpu.epp": "balance_power", "cpu.no_turbo": "1", "cpu.boost": "0"}[key]
    files = {path.replace("*", str(i)): wrong + "\n" for i in range(2)}
    a = assess(AuditContext(host=tree_host(tmp_path / "wrong", files), profile=Profile("t")), setting)
    assert len(a.wrong) == (2 if "*" in path else 1) and not a.not_applicable


def test_colon_fields_of_ethtool_and_ipmitool():
    fields = parse_colon_fields((FW / "ipmitool-mc-info.txt").read_text())
    assert fields["Firmware Revision"] == "3.44" and "0x00" not in fields
    assert parse_colon_fields((FW / "ethtool-i-mlx5_core.txt").read_text())["firmware-version"] == \
        "28.39.1002 (MT_0000000838)"


def test_bmc_firmware_from_ipmitool_or_why_not():
    runner = ReplayRunner()
    runner.add(["ipmitool", "mc", "info"], stdout=(FW / "ipmitool-mc-info.txt").read_text())
    assert bmc_firmware(runner) == ("3.44", "")
    no_bmc = ReplayRunner()  # real: this machine has ipmitool and no /dev/ipmi0
    no_bmc.add(["ipmitool", "mc", "info"], rc=1, stderr=(FW / "ipmitool-mc-info-no-bmc.stderr").read_text())
    version, why = bmc_firmware(no_bmc)
    assert version is None and "exited 1" in why and "Could not open device" in why
    assert bmc_firmware(ReplayRunner())[1].startswith("ipmitool: not recorded")


def test_nic_firmware_from_ethtool_or_why_not():
    runner = ReplayRunner()
    runner.add(["ethtool", "-i", "eth0"], stdout=(FW / "ethtool-i-virtio_net.txt").read_text())  # real, empty
    runner.add(["ethtool", "-i", "ens1f0np0"], stdout=(FW / "ethtool-i-mlx5_core.txt").read_text())
    assert nic_firmware(runner, "ens1f0np0") == ("28.39.1002 (MT_0000000838)", "")
    assert nic_firmware(runner, "eth0") == (None, "ethtool -i eth0: no firmware version (exit 0)")


@pytest.mark.skipif(shutil.which("ethtool") is None, reason="ethtool not installed here")
def test_live_ethtool_on_this_machine():
    from gpunode.host.runner import Runner

    live = SysRoot("/")
    for nic in physical_nics(live)[:2]:
        fw, why = nic_firmware(Runner(), nic)
        assert fw or why.startswith(f"ethtool -i {nic}")
