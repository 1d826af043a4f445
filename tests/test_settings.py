"""The generic profile checks: each setting kind read from a fixture tree and judged."""

import json

import pytest

from gpunode.checks.settings import setting_checks
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.runner import ReplayRunner
from gpunode.tune.kinds.base import satisfies
from gpunode.tune.profiles import load_profile
from testkit import FIXTURES, run, statuses, tree_host, with_gpu


def h100():
    return GpuInventory.from_json(json.loads((FIXTURES / "nvml/h100-sxm-1gpu.json").read_text()))


def setting_check(setting_id, profile="training"):
    return next(c for c in setting_checks(load_profile(profile)) if c.id == setting_id)


@pytest.mark.parametrize(
    "op, current, target, expected",
    [
        ("=", "0", 0, True),
        ("=", "1", 0, False),
        ("<=", "10", 10, True),
        ("<=", "60", 10, False),
        (">=", "4096\t131072\t268435456", "4096 87380 268435456", True),
        (">=", "4096 131072 6291456", "4096 87380 268435456", False),
        (">=", "4096 131072", "4096 87380 268435456", False),  # malformed: fewer fields
        ("=", "unlimited", "unlimited", True),
        ("=", "infinity", "unlimited", True),
        (">=", "unlimited", 1048576, True),
        ("=", "65536", "unlimited", False),
        (">=", "(not set)", "unlimited", False),
        ("=", True, True, True),
        ("=", "1", True, False),
        ("=", "bbr", "bbr", True),
    ],
)
def test_satisfies(op, current, target, expected):
    assert satisfies(op, current, target) is expected


def test_sysctl_pass_fail_and_absent(tmp_path):
    c = setting_check("sysctl.vm.swappiness")
    assert statuses(run(c, tree_host(tmp_path / "a", {"/proc/sys/vm/swappiness": "10\n"}))) == ["PASS"]
    failing = run(c, tree_host(tmp_path / "b", {"/proc/sys/vm/swappiness": "60\n"}))
    assert statuses(failing) == ["WARN"] and "60; expected <= 10" in failing[0].message
    assert "gpunode apply --profile training --only sysctl.vm.swappiness" in failing[0].remediation
    absent = run(c, tree_host(tmp_path / "c"))
    assert statuses(absent) == ["SKIP"] and "/proc/sys/vm/swappiness" in absent[0].message


def test_tcp_buffers_compare_each_field(tmp_path):
    c = setting_check("sysctl.net.ipv4.tcp_rmem")
    good = tree_host(tmp_path / "a", {"/proc/sys/net/ipv4/tcp_rmem": "4096\t131072\t536870912\n"})
    bad = tree_host(tmp_path / "b", {"/proc/sys/net/ipv4/tcp_rmem": "4096\t131072\t6291456\n"})
    assert statuses(run(c, good)) == ["PASS"]
    assert statuses(run(c, bad)) == ["WARN"]


def test_sysfs_per_cpu_governor_summarises(tmp_path):
    c = setting_check("sysfs.cpu.governor")
    files = {f"/sys/devices/system/cpu/cpu{i}/cpufreq/scaling_governor": "performance\n" for i in range(4)}
    ok = run(c, tree_host(tmp_path / "a", files))
    assert statuses(ok) == ["PASS"] and ok[0].message == "performance (all 4)"
    files["/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor"] = "powersave\n"
    bad = run(c, tree_host(tmp_path / "b", files))
    assert statuses(bad) == ["WARN"] and "cpu3" in bad[0].message and "powersave" in bad[0].message


def test_thp_active_value_and_profile_difference(tmp_path):
    host = tree_host(tmp_path, {"/sys/kernel/mm/transparent_hugepage/enabled": "always [madvise] never\n"})
    assert statuses(run(setting_check("sysfs.thp.enabled"), host)) == ["WARN"]
    assert statuses(run(setting_check("sysfs.thp.enabled", "inference"), host, "inference")) == ["PASS"]


def test_nvme_settings_skip_without_nvme_and_judge_with(tmp_path):
    c = setting_check("sysfs.nvme.scheduler")
    assert "no NVMe" in run(c, tree_host(tmp_path / "a"))[0].message
    host = tree_host(tmp_path / "b", {"/sys/block/nvme0n1/queue/scheduler": "[none] mq-deadline\n",
                                      "/sys/block/nvme1n1/queue/scheduler": "[mq-deadline] none\n"})
    assert statuses(run(c, host)) == ["WARN"]


def test_limits_from_limits_d_override_limits_conf(tmp_path):
    c = setting_check("limits.memlock")
    files = {"/etc/security/limits.conf": "# comment\n*  soft  memlock  65536\n*  hard memlock 65536\n"}
    assert statuses(run(c, tree_host(tmp_path / "a", files))) == ["WARN"]
    files["/etc/security/limits.d/90-gpunode.conf"] = "*  -  memlock  unlimited\n"
    files["/etc/security/limits.d/README"] = "* - memlock 1\n"  # not a .conf file: ignored
    assert statuses(run(c, tree_host(tmp_path / "b", files))) == ["PASS"]
    files["/etc/security/limits.d/95-site.conf"] = "* hard memlock 1024\n"
    result = run(c, tree_host(tmp_path / "c", files))
    assert statuses(result) == ["WARN"] and "hard memlock: 1024" in result[0].message


def test_cmdline_parameter(tmp_path):
    c = setting_check("cmdline.iommu")
    ok = tree_host(tmp_path / "a", {"/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 iommu=pt quiet\n"})
    grub_host = {"/proc/cmdline": "BOOT_IMAGE=/vmlinuz root=/dev/sda1 quiet\n", "/etc/default/grub": "",
                 "/sys/kernel/iommu_groups/0/type": "DMA\n"}
    bad = tree_host(tmp_path / "b", grub_host)
    assert statuses(run(c, ok)) == ["PASS"]
    assert statuses(run(c, bad)) == ["WARN"] and "(not set)" in run(c, bad)[0].message
    # nothing here can change the kernel line: SKIP with the why, as the plan says it
    no_loader = run(c, tree_host(tmp_path / "c", {k: v for k, v in grub_host.items() if "grub" not in k}))
    assert statuses(no_loader) == ["SKIP"]
    assert no_loader[0].message.startswith("not applicable here: no boot loader configuration")


def service_runner(unit, load, active):
    runner = ReplayRunner()
    runner.add(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState", unit],
               stdout=f"LoadState={load}\nActiveState={active}\nUnitFileState=enabled\n")
    return runner


def test_service_states(tmp_path):
    c = setting_check("service.irqbalance")
    assert statuses(run(c, tree_host(tmp_path / "a", runner=service_runner("irqbalance", "loaded", "active")))) == ["WARN"]
    assert statuses(run(c, tree_host(tmp_path / "b", runner=service_runner("irqbalance", "loaded", "inactive")))) == ["PASS"]
    assert statuses(run(c, tree_host(tmp_path / "c", runner=service_runner("irqbalance", "not-found", "inactive")))) == ["PASS"]
    no_systemd = run(c, tree_host(tmp_path / "d"))
    assert statuses(no_systemd) == ["SKIP"] and "not applicable here: no systemd" in no_systemd[0].message


def test_fabricmanager_only_on_nvswitch_systems(tmp_path):
    c = setting_check("service.nvidia-fabricmanager")
    plain = tree_host(tmp_path / "a", inventory=h100(), runner=service_runner("nvidia-fabricmanager", "not-found", "inactive"))
    assert "no NVSwitch" in run(c, plain)[0].message
    hgx = tree_host(tmp_path / "b", {"/dev/nvidia-nvswitch0": ""}, inventory=h100(),
                    runner=service_runner("nvidia-fabricmanager", "not-found", "inactive"))
    result = run(c, hgx)
    assert statuses(result) == ["FAIL"] and "not-installed" in result[0].message


def test_gpu_settings_per_gpu_on_real_h100_inventory(tmp_path):
    inv = h100()
    assert statuses(run(setting_check("gpu.persistence_mode"), tree_host(tmp_path / "a", inventory=inv))) == ["PASS"]
    off = with_gpu(inv, persistence_mode=False)
    result = run(setting_check("gpu.persistence_mode"), tree_host(tmp_path / "b", inventory=off))
    assert statuses(result) == ["WARN"] and result[0].subject == "GPU0"
    ecc_pending = with_gpu(inv, ecc_mode_current=False, ecc_mode_pending=True)
    result = run(setting_check("gpu.ecc_mode"), tree_host(tmp_path / "c", inventory=ecc_pending))
    assert statuses(result) == ["FAIL"] and "pending on after a GPU reset" in result[0].message
    capped = with_gpu(inv, power_limit_w=500.0)
    assert statuses(run(setting_check("gpu.power_limit"), tree_host(tmp_path / "d", inventory=capped))) == ["WARN"]
    assert statuses(run(setting_check("gpu.power_limit"), tree_host(tmp_path / "e", inventory=inv))) == ["PASS"]


def test_gpu_settings_skip_without_driver_and_error_per_broken_gpu(tmp_path):
    c = setting_check("gpu.persistence_mode")
    none = run(c, tree_host(tmp_path / "a"))
    assert statuses(none) == ["SKIP"] and "no NVIDIA driver/NVML" in none[0].message
    inv = h100()
    second = with_gpu(inv, 0, index=1, pci_bus_id="00000000:00:07.0")
    two = GpuInventory(**{**inv.__dict__, "gpus": [inv.gpus[0], second.gpus[0]]})
    broken = with_gpu(two, 1, error="cannot open GPU 1: GPU is lost")
    results = run(c, tree_host(tmp_path / "b", inventory=broken))
    assert statuses(results) == ["PASS", "ERROR"] and results[1].subject == "GPU1"
    field_err = with_gpu(inv, persistence_mode=None, field_errors={"persistence_mode": "Insufficient Permissions"})
    assert statuses(run(c, tree_host(tmp_path / "c", inventory=field_err))) == ["ERROR"]


def nic_tree(affinity):
    files = {
        "/sys/class/net/eth0/operstate": "up\n",
        "/sys/class/net/eth0/device/numa_node": "1\n",
        "/sys/class/net/eth0/device/msi_irqs/120": "msix\n",
        "/sys/class/net/eth0/device/msi_irqs/121": "msix\n",
        "/sys/devices/system/node/node0/cpulist": "0-15\n",
        "/sys/devices/system/node/node1/cpulist": "16-31\n",
        "/proc/irq/120/smp_affinity_list": "16-31\n",
        "/proc/irq/121/smp_affinity_list": affinity,
    }
    return files


def test_irq_affinity_numa_local(tmp_path):
    c = setting_check("irq.nic-numa-local")
    host = tree_host(tmp_path / "a", nic_tree("16-23\n"))
    (tmp_path / "a/sys/class/net/lo").mkdir()
    assert statuses(run(c, host)) == ["PASS"]
    result = run(c, tree_host(tmp_path / "b", nic_tree("0-31\n")))
    assert statuses(result) == ["WARN"] and "1/2 IRQs outside node CPUs" in result[0].message
