"""Capabilities before planning (issue 12 items 1-3): what this kernel, mount table, init system
and boot loader can take. A setting that cannot be applied here is "not applicable here: <why>"
in the plan and SKIP with the same why in the audit; it never fails the batch."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from apply_fixtures import make_tree

from gpunode.audit.context import AuditContext
from gpunode.checks.settings import setting_checks
from gpunode.host.facts.boot_loader import BLS_GRUBBY, DEBIAN_GRUB, boot_loader
from gpunode.host.facts.kernel_config import copy_binary_files, module_availability, module_name, parse_config
from gpunode.host.seam import sysroot_host
from gpunode.tune.kinds import assess
from gpunode.tune.kinds.change import PlannedFiles
from gpunode.tune.plan import make_plan, select_settings
from gpunode.tune.profiles import load_profile
from testkit import HOSTS, run, statuses

RELEASE = "6.18.44-fc-v657-gpu"
H200_CONFIG = """#
# Automatically generated file; DO NOT EDIT.
CONFIG_NET_SCHED=y
# CONFIG_NET_SCH_FQ is not set
CONFIG_NET_SCH_FQ_CODEL=y
CONFIG_TCP_CONG_CUBIC=y
# CONFIG_TCP_CONG_BBR is not set
CONFIG_MODULES=y
"""
QDISC, CONGESTION = "sysctl.net.core.default_qdisc", "sysctl.net.ipv4.tcp_congestion_control"


def _tree(tmp_path: Path, files: dict[str, str] | None = None, config_gz: str | None = None) -> Path:
    root = make_tree(tmp_path / "root", {"/proc/sys/kernel/osrelease": RELEASE + "\n", **(files or {})})
    if config_gz is not None:
        (root / "proc/config.gz").write_bytes(gzip.compress(config_gz.encode()))
    return root


def _plan(root: Path, only: list[str] = (), allow_reboot: bool = False, profile: str = "training"):
    host = sysroot_host(root)
    prof = load_profile(profile)
    return host, make_plan(host, prof, select_settings(prof, list(only)), allow_reboot=allow_reboot,
                           files=PlannedFiles(host.sys))


def _audit(host, setting_id: str, profile: str = "training"):
    check = next(c for c in setting_checks(load_profile(profile)) if c.id == setting_id)
    return run(check, host, profile)


def test_kernel_config_parse_and_module_names():
    config = parse_config(H200_CONFIG)
    assert config["CONFIG_NET_SCH_FQ"] == "n" and config["CONFIG_NET_SCH_FQ_CODEL"] == "y"
    assert module_name("kernel/net/sched/sch_fq.ko.zst") == "sch_fq"
    assert module_name("kernel/net/ipv4/tcp-bbr.ko") == "tcp_bbr"


def test_kernel_without_fq_or_bbr_says_not_applicable_in_plan_and_audit(tmp_path):
    """The lent H200: no /lib/modules at all, `# CONFIG_NET_SCH_FQ is not set` in /proc/config.gz."""
    root = _tree(tmp_path, {"/proc/sys/net/ipv4/tcp_available_congestion_control": "reno cubic\n"},
                 config_gz=H200_CONFIG)
    host, plan = _plan(root)
    skipped = dict(plan.skipped)
    assert skipped[QDISC] == (f"not applicable here: qdisc fq is not available: kernel {RELEASE} is built "
                              "without sch_fq (CONFIG_NET_SCH_FQ is not set in /proc/config.gz)")
    assert skipped[CONGESTION].startswith("not applicable here: congestion control bbr is not available")
    assert not any(c.setting_id in (QDISC, CONGESTION) for c in plan.changes)
    assert any(c.setting_id == "sysctl.vm.swappiness" for c in plan.writes)  # the rest is planned
    for setting_id in (QDISC, CONGESTION):
        result = _audit(host, setting_id)
        assert statuses(result) == ["SKIP"] and result[0].message == skipped[setting_id]


@pytest.mark.parametrize(("files", "planned"), [
    # built as a module and installed: the kernel loads it on the write (request_module)
    ({"/boot/config-" + RELEASE: "CONFIG_NET_SCH_FQ=m\n",
      f"/lib/modules/{RELEASE}/modules.dep": "kernel/net/sched/sch_fq.ko.zst:\n",
      f"/lib/modules/{RELEASE}/modules.builtin": "kernel/net/sched/sch_fq_codel.ko\n"}, True),
    # built in (modules.builtin), no config
    ({f"/lib/modules/{RELEASE}/modules.dep": "", f"/lib/modules/{RELEASE}/modules.builtin":
      "kernel/net/sched/sch_fq.ko\n"}, True),
    # already loaded
    ({"/boot/config-" + RELEASE: "# CONFIG_NET_SCH_FQ is not set\n", "/proc/modules": "sch_fq 20480 2 - Live 0x0\n"},
     True),
    # nothing tells: planned, and a write that fails still rolls the batch back
    ({}, True),
    # a module the config says exists, but /lib/modules/<release> is absent
    ({"/boot/config-" + RELEASE: "CONFIG_NET_SCH_FQ=m\n"}, False),
    # modules installed, sch_fq not among them and no config
    ({f"/lib/modules/{RELEASE}/modules.dep": "kernel/net/sched/sch_cake.ko:\n"}, False),
])
def test_qdisc_availability_sources(tmp_path, files, planned):
    root = _tree(tmp_path, files)
    _, plan = _plan(root, [QDISC])
    assert bool(plan.writes) is planned, plan.skipped
    assert bool(plan.skipped) is not planned


def test_module_availability_says_how(tmp_path):
    root = _tree(tmp_path, {"/boot/config-" + RELEASE: "CONFIG_NET_SCH_FQ=m\n",
                            f"/lib/modules/{RELEASE}/modules.dep": "kernel/net/sched/sch_fq.ko.xz: \n"})
    avail = module_availability(sysroot_host(root), "sch_fq", "CONFIG_NET_SCH_FQ")
    assert avail.available is True and avail.how.startswith("loadable")


def test_read_only_proc_sys_makes_sysctls_not_applicable(tmp_path):
    mounts = "proc /proc proc rw,relatime 0 0\nproc /proc/sys proc ro,nosuid,nodev,noexec,relatime 0 0\n"
    root = _tree(tmp_path, {"/proc/mounts": mounts})
    host, plan = _plan(root)
    skipped = dict(plan.skipped)
    assert skipped["sysctl.vm.swappiness"] == "not applicable here: /proc/sys is mounted read-only (/proc/mounts)"
    assert not any(c.setting_id.startswith("sysctl.") for c in plan.changes)
    assert any(c.setting_id == "sysfs.thp.enabled" for c in plan.writes)  # /sys is still writable
    assert "persist.sysctl" not in {c.setting_id for c in plan.changes}
    result = _audit(host, "sysctl.vm.swappiness")
    assert statuses(result) == ["SKIP"] and "read-only" in result[0].message


def test_no_systemd_makes_services_not_applicable(tmp_path):
    host, plan = _plan(_tree(tmp_path), ["service.irqbalance"])
    assert plan.skipped == [("service.irqbalance", "not applicable here: no systemd on this host "
                                                  "(/run/systemd/system is absent and systemctl does not answer)")]


RHEL = {
    "/etc/os-release": 'NAME="Rocky Linux"\nID="rocky"\nID_LIKE="rhel centos fedora"\nVERSION_ID="9.4"\n',
    "/boot/loader/entries/abc-5.14.0-427.el9.x86_64.conf": "title Rocky\nversion 5.14.0\n"
                                                          "options root=/dev/sda1 ro crashkernel=auto\n",
    "/usr/sbin/grubby": "",
}


GRUBBY_INFO = ('index=0\nkernel="/boot/vmlinuz-5.14.0-427.el9.x86_64"\nargs="ro crashkernel=auto iommu=on"\n'
               'root="/dev/sda1"\nindex=1\nkernel="/boot/vmlinuz-0-rescue"\nargs="ro crashkernel=auto iommu=on"\n')


def test_rhel_bls_plans_grubby_not_update_grub(tmp_path):
    from gpunode.host.gpu.source import ReplayGpuSource
    from gpunode.host.runner import ReplayRunner
    from gpunode.host.seam import Facts, Host
    from gpunode.host.sysroot import SysRoot

    root = _tree(tmp_path, RHEL)
    (root / "etc/default/grub").unlink()
    runner = ReplayRunner()
    runner.add(["grubby", "--info=ALL"], stdout=GRUBBY_INFO)
    host = Host(sys=SysRoot(root), gpu=ReplayGpuSource.load(root / "none.json"), runner=runner,
                facts=Facts(is_root=True, hostname="t", now=0.0, live=False))
    assert boot_loader(host).style == BLS_GRUBBY
    prof = load_profile("training")
    plan = make_plan(host, prof, select_settings(prof, ["cmdline.iommu"]), allow_reboot=True,
                     files=PlannedFiles(host.sys))
    (change,) = plan.changes
    assert change.action == "grubby" and change.reboot_required and not change.blocked
    assert change.extra["do"] == ["/usr/sbin/grubby", "--update-kernel=ALL", "--args=iommu=pt"]
    assert change.extra["undo"] == ["/usr/sbin/grubby", "--update-kernel=ALL", "--args=iommu=on"]
    assert (change.before, change.after) == ("iommu=on", "iommu=pt")
    assert not (root / "etc/default/grub.d").exists()
    # entries that disagree, or no grubby answer: planned, shown, not written
    runner.add(["grubby", "--info=ALL"], stdout=GRUBBY_INFO.replace("rescue\"\nargs=\"ro crashkernel=auto iommu=on",
                                                                   "rescue\"\nargs=\"ro"))
    plan = make_plan(host, prof, select_settings(prof, ["cmdline.iommu"]), allow_reboot=True,
                     files=PlannedFiles(host.sys))
    assert "the boot entries differ on iommu" in plan.changes[0].blocked


def test_rhel_without_grubby_is_not_applicable(tmp_path):
    root = _tree(tmp_path, {k: v for k, v in RHEL.items() if "grubby" not in k})
    _, plan = _plan(root, ["cmdline.iommu"], allow_reboot=True)
    assert plan.skipped[0][1].startswith("not applicable here: a RHEL-like host with no grubby")


def test_debian_writes_a_grub_dropin(tmp_path):
    root = _tree(tmp_path, {"/etc/os-release": 'ID=ubuntu\nID_LIKE=debian\n'})
    host = sysroot_host(root)
    assert boot_loader(host).style == DEBIAN_GRUB
    _, plan = _plan(root, ["cmdline.iommu"], allow_reboot=True)
    (change,) = plan.changes
    assert change.target == "/etc/default/grub.d/90-gpunode.cfg" and change.post == [["update-grub"]]
    assert not change.blocked and change.reboot_required


def test_no_boot_loader_is_not_applicable(tmp_path):
    root = _tree(tmp_path)
    (root / "etc/default/grub").unlink()
    _, plan = _plan(root, ["cmdline.iommu"], allow_reboot=True)
    assert plan.skipped[0][1].startswith("not applicable here: no boot loader configuration gpunode can change")


def test_no_iommu_makes_iommu_pt_not_applicable(tmp_path):
    root = _tree(tmp_path)
    shutil.rmtree(root / "sys/kernel/iommu_groups")
    _, plan = _plan(root, ["cmdline.iommu"], allow_reboot=True)
    assert "no IOMMU translates DMA here" in plan.skipped[0][1]


def test_the_recorded_h200_with_its_kernel_config_replays_offline(tmp_path):
    """The snapshot holds /proc/config.gz as recorded; replay finds the same answers."""
    src = HOSTS / "h200-1gpu-capabilities"
    if not src.exists():
        pytest.skip("capability snapshot of the lent H200 not recorded yet")
    from gpunode.host.seam import snapshot_host

    host = snapshot_host(src)
    ctx = AuditContext(host=host, profile=load_profile("training"))
    a = assess(ctx, load_profile("training").get(QDISC))
    assert a.not_applicable.startswith("qdisc fq is not available") and "CONFIG_NET_SCH_FQ" in a.not_applicable


def test_snapshot_copies_the_gzip_config_it_read(tmp_path):
    root = _tree(tmp_path, config_gz=H200_CONFIG)
    files = tmp_path / "snap" / "files"
    assert copy_binary_files(str(root), str(files)) == ["/proc/config.gz"]
    assert gzip.decompress((files / "proc/config.gz").read_bytes()).decode() == H200_CONFIG
    # and a replay of that tree reads it back through the SysRoot
    (files / "proc/sys/kernel").mkdir(parents=True)
    (files / "proc/sys/kernel/osrelease").write_text(RELEASE + "\n")
    assert module_availability(sysroot_host(files), "sch_fq", "CONFIG_NET_SCH_FQ").available is False


def _units_runner(states: dict[str, tuple[str, str, str]]):
    from gpunode.host.runner import ReplayRunner

    runner = ReplayRunner()
    for unit, (load, active, enabled) in states.items():
        runner.add(["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState", unit],
                   stdout=f"LoadState={load}\nActiveState={active}\nUnitFileState={enabled}\n")
    return runner


def test_persistence_through_nvidia_persistenced_where_installed(tmp_path):
    """Planned only (never run on the lent GPU): one service change for all GPUs instead of
    NVML's deprecated per-GPU call, and one change even when service.nvidia-persistenced asks too."""
    import json as _json

    from gpunode.host.gpu.model import GpuInventory
    from gpunode.host.gpu.source import ReplayGpuSource
    from gpunode.host.seam import Facts, Host
    from gpunode.host.sysroot import SysRoot
    from testkit import FIXTURES, with_gpu

    inv = with_gpu(GpuInventory.from_json(_json.loads((FIXTURES / "nvml/h100-sxm-1gpu.json").read_text())),
                   persistence_mode=False)
    root = _tree(tmp_path, {"/run/systemd/system/.keep": ""})

    def host(runner):
        return Host(sys=SysRoot(root), gpu=ReplayGpuSource(inv), runner=runner,
                    facts=Facts(is_root=True, hostname="t", now=0.0, live=False))

    prof = load_profile("training")
    chosen = select_settings(prof, ["gpu.persistence_mode", "service.nvidia-persistenced"])
    daemon = host(_units_runner({"nvidia-persistenced": ("loaded", "inactive", "disabled")}))
    plan = make_plan(daemon, prof, chosen, files=PlannedFiles(daemon.sys))
    assert [(c.setting_id, c.action, c.target) for c in plan.changes] == [
        ("service.nvidia-persistenced", "service", "nvidia-persistenced")]
    plan = make_plan(daemon, prof, select_settings(prof, ["gpu.persistence_mode"]), files=PlannedFiles(daemon.sys))
    (change,) = plan.changes
    assert (change.action, change.after) == ("service", {"active": "active", "enabled": "enabled"})
    assert "nvidia-persistenced" in change.note
    legacy = host(_units_runner({"nvidia-persistenced": ("not-found", "inactive", "")}))
    plan = make_plan(legacy, prof, select_settings(prof, ["gpu.persistence_mode"]), files=PlannedFiles(legacy.sys))
    assert [(c.action, c.subject) for c in plan.changes] == [("gpu", "GPU0")]


class FakeGrubby:
    """grubby over two boot entries held in memory (the Runner seam: argv in, output out)."""

    def __init__(self, args: str):
        self.entries = [args.split(), args.split()]
        self.calls: list[list[str]] = []

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        from gpunode.host.runner import CommandResult

        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[0].endswith("grubby") and argv[1] == "--info=ALL":
            out = "".join(f'index={i}\nargs="{" ".join(e)}"\n' for i, e in enumerate(self.entries))
            return CommandResult(argv, 0, out, "")
        if argv[0].endswith("grubby") and argv[1] == "--update-kernel=ALL":
            for entry in self.entries:
                op, _, token = argv[2].partition("=")
                key = token.partition("=")[0]
                entry[:] = [t for t in entry if t.partition("=")[0] != key]
                if op == "--args":
                    entry.append(token)
            return CommandResult(argv, 0, "", "")
        return CommandResult(argv, 127, "", "", error="not found")


def test_grubby_apply_and_rollback_on_a_bls_host(tmp_path):
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.host.gpu.source import ReplayGpuSource
    from gpunode.host.seam import Facts, Host
    from gpunode.host.sysroot import SysRoot
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.journal import StateDir
    from gpunode.tune.session import apply_profile, rollback

    root = _tree(tmp_path, RHEL)
    (root / "etc/default/grub").unlink()
    grubby = FakeGrubby("ro crashkernel=auto iommu=on")
    host = Host(sys=SysRoot(root), gpu=ReplayGpuSource.load(root / "none.json"), runner=grubby,
                facts=Facts(is_root=True, hostname="t", now=0.0, live=False))
    prof = load_profile("training")
    env = ApplyEnv(host=host, gpu=NoGpuControl("none"))
    state = StateDir(tmp_path / "state")
    out = apply_profile(env, prof, select_settings(prof, ["cmdline.iommu"]), state, allow_reboot=True)
    assert out.result == "applied", out.reason
    assert out.exit_code == 1  # waits for a reboot
    assert all("iommu=pt" in e and "iommu=on" not in e for e in grubby.entries)
    rollback(env, state)
    assert grubby.entries == [["ro", "crashkernel=auto", "iommu=on"]] * 2


def test_a_loadable_module_is_planned_and_says_the_kernel_loads_it(tmp_path):
    root = _tree(tmp_path, {"/boot/config-" + RELEASE: "CONFIG_NET_SCH_FQ=m\n",
                            f"/lib/modules/{RELEASE}/modules.dep": "kernel/net/sched/sch_fq.ko.zst:\n"})
    _, plan = _plan(root, [QDISC])
    (change,) = plan.writes
    assert change.note == "qdisc fq: loadable (the kernel loads it on first use)"


def test_a_gpu_setting_no_gpu_can_read_is_not_planned_as_satisfied(tmp_path):
    from gpunode.host.gpu.model import GpuInventory
    from gpunode.host.gpu.source import ReplayGpuSource
    from gpunode.host.seam import Facts, Host
    from gpunode.host.sysroot import SysRoot
    from testkit import FIXTURES, with_gpu

    inv = GpuInventory.from_json(__import__("json").loads((FIXTURES / "nvml/h100-sxm-1gpu.json").read_text()))
    inv = with_gpu(inv, power_limit_w=None, field_errors={"power_limit_w": "NVML: Unknown Error"})
    root = _tree(tmp_path)
    host = Host(sys=SysRoot(root), gpu=ReplayGpuSource(inv), runner=_units_runner({}),
                facts=Facts(is_root=True, hostname="t", now=0.0, live=False))
    prof = load_profile("training")
    plan = make_plan(host, prof, select_settings(prof, ["gpu.power_limit"]), files=PlannedFiles(host.sys))
    assert plan.satisfied == [] and plan.changes == []
    assert plan.skipped[0][0] == "gpu.power_limit" and "NVML: Unknown Error" in plan.skipped[0][1]
    result = _audit(host, "gpu.power_limit")
    assert statuses(result) == ["ERROR"] and "Unknown Error" in result[0].message
