"""Apply fixes what audit flags (issue 12 item 2): after `apply --profile training` on a fixture
root, the audit shows no WARN/FAIL among the settings apply manages, except those not applicable
here or waiting for a reboot; slurmd's LimitMEMLOCK is managed and checked the same way."""

from __future__ import annotations

from pathlib import Path

from apply_fixtures import make_tree, picture

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.checks import memory
from gpunode.checks.settings import setting_checks
from gpunode.config import Config
from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.seam import sysroot_host
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.kinds.registry import kind_of
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import apply_profile, rollback

RELEASE = "6.1.0-28-amd64"
SLURMD_UNIT = "[Unit]\nDescription=Slurm node daemon\n\n[Service]\nType=notify\nExecStart=/usr/sbin/slurmd\n" \
              "LimitNOFILE=131072\nLimitMEMLOCK=infinity\nLimitSTACK=infinity\n"
# Debian's slurmd.service sets LimitMEMLOCK=infinity itself; a site drop-in lowered it.
SITE_DROPIN = "[Service]\nLimitMEMLOCK=64M\n"


def _root(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "root", {
        "/proc/sys/kernel/osrelease": RELEASE + "\n",
        f"/boot/config-{RELEASE}": "CONFIG_NET_SCH_FQ=m\nCONFIG_TCP_CONG_BBR=m\n",
        f"/lib/modules/{RELEASE}/modules.dep": "kernel/net/sched/sch_fq.ko:\nkernel/net/ipv4/tcp_bbr.ko:\n",
        "/proc/sys/net/ipv4/tcp_available_congestion_control": "reno cubic\n",
        "/lib/systemd/system/slurmd.service": SLURMD_UNIT,
        "/etc/systemd/system/slurmd.service.d/50-site.conf": SITE_DROPIN,
        "/run/systemd/system/.keep": "",  # booted with systemd
    })


def _audit(root: Path):
    host = sysroot_host(root)
    profile = load_profile("training")
    ctx = AuditContext(host=host, profile=profile, config=Config())
    checks = [*setting_checks(profile), memory.memlock_systemd]
    return {r.id: r for r in run_checks(checks, ctx)}


def test_apply_then_audit_leaves_nothing_to_flag_among_managed_settings(tmp_path):
    root = _root(tmp_path)
    before = _audit(root)
    assert before["unit.slurmd.LimitMEMLOCK"].status.value == "WARN"
    assert "64M" in before["unit.slurmd.LimitMEMLOCK"].message
    assert before["memory.memlock.systemd"].status.value == "WARN"
    assert before["sysctl.net.core.default_qdisc"].status.value == "WARN"
    original = picture(root)

    host = sysroot_host(root)
    profile = load_profile("training")
    state = StateDir(tmp_path / "state")
    env = ApplyEnv(host=host, gpu=NoGpuControl("no GPU in a fixture"))
    out = apply_profile(env, profile, select_settings(profile), state, allow_reboot=True)
    assert out.result == "applied", out.reason

    after = _audit(root)
    flagged = {i: r.message for i, r in after.items() if r.status.value in ("WARN", "FAIL", "ERROR")}
    # only the kernel command line is left, and it says it waits for the reboot
    assert list(flagged) == ["cmdline.iommu"], flagged
    assert "reboot pending" in flagged["cmdline.iommu"]
    assert after["unit.slurmd.LimitMEMLOCK"].status.value == "PASS"
    assert after["memory.memlock.systemd"].status.value == "PASS"
    assert "90-gpunode.conf" in after["memory.memlock.systemd"].message
    dropin = (root / "etc/systemd/system/slurmd.service.d/90-gpunode.conf").read_text()
    assert dropin.endswith("[Service]\nLimitMEMLOCK=infinity\n")
    host_settings = {s.id for s in load_profile("training").settings.values() if not kind_of(s).needs_gpu}
    skipped = {i: r.message for i, r in after.items() if r.status.value == "SKIP" and i in host_settings}
    assert all(m.startswith(("not applicable", "knob absent")) for m in skipped.values()), skipped

    rollback(env, state)
    assert picture(root) == original


def test_memlock_check_reads_slurmds_own_limit_not_only_the_default(tmp_path):
    root = make_tree(tmp_path / "a", {
        "/run/systemd/system/.keep": "",
        "/etc/systemd/system.conf": "[Manager]\nDefaultLimitMEMLOCK=infinity\n",
        "/lib/systemd/system/slurmd.service": "[Service]\nExecStart=/usr/sbin/slurmd\nLimitMEMLOCK=8M\n",
    })
    result = _audit(root)["memory.memlock.systemd"]
    assert result.status.value == "WARN" and "slurmd LimitMEMLOCK=8M" in result.message
    no_slurm = make_tree(tmp_path / "b", {"/etc/systemd/system.conf": "[Manager]\nDefaultLimitMEMLOCK=infinity\n",
                                          "/run/systemd/system/.keep": ""})
    assert _audit(no_slurm)["memory.memlock.systemd"].status.value == "PASS"
    assert _audit(no_slurm)["unit.slurmd.LimitMEMLOCK"].message == (
        "not applicable here: slurmd.service is not installed")
