"""The `module` setting kind: nvidia_peermem loaded now and at boot (modules-load.d + modprobe),
journaled and rolled back byte-exact; not applicable where DMA-BUF serves instead (net.peermem's rule)."""

from __future__ import annotations

import pytest
from apply_fixtures import picture

from gpunode.audit.context import AuditContext
from gpunode.checks.settings import judge_setting
from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.runner import ReplayRunner
from gpunode.model.profile import Setting
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.kinds import assess
from gpunode.tune.kinds.registry import kind_of
from gpunode.tune.kinds.values import SettingInvalid
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import apply_profile, rollback
from testkit import tree_host

RELEASE = "6.1.0-18-amd64"
# As a Debian host with the proprietary NVIDIA driver (DKMS) and a ConnectX NIC shows them.
PEERMEM_HOST = {
    "/sys/class/infiniband/mlx5_0/ports/1/state": "4: ACTIVE\n",
    "/proc/modules": "nvidia_uvm 1794048 0 - Live 0x0000000000000000 (POE)\n"
                     "nvidia 62242816 1 nvidia_uvm, Live 0x0000000000000000 (POE)\n"
                     "mlx5_ib 466944 0 - Live 0x0000000000000000\n",
    "/proc/driver/nvidia/version": "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.127.05  Tue Oct  8 03:22:07 UTC 2024\n"
                                   "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
    "/proc/sys/kernel/osrelease": f"{RELEASE}\n",
    f"/lib/modules/{RELEASE}/modules.dep": "updates/dkms/nvidia.ko.xz:\n"
                                          "updates/dkms/nvidia-peermem.ko.xz: updates/dkms/nvidia.ko.xz\n"
                                          "kernel/drivers/infiniband/hw/mlx5/mlx5_ib.ko.xz:\n",
    "/etc/modules-load.d/modules.conf": "# /etc/modules: kernel modules to load at boot time.\nloop\n",
}
OPEN_DRIVER = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  550.127.05  Release Build\n"
CONF = "/etc/modules-load.d/gpunode-nvidia_peermem.conf"


def _setting() -> Setting:
    profile = load_profile("training")
    return profile.settings["module.nvidia_peermem"]


def _ctx(tmp_path, files):
    return AuditContext(host=tree_host(tmp_path / "root", files), profile=load_profile("training"))


def test_training_profile_loads_peermem_where_rdma_and_no_dmabuf(tmp_path):
    s = _setting()
    assert (s.kind, s.target, s.when) == ("module", "loaded", "infiniband")
    a = assess(_ctx(tmp_path, PEERMEM_HOST), s)
    assert not a.not_applicable and [o.subject for o in a.wrong] == ["nvidia_peermem", CONF]
    [finding] = judge_setting(_ctx(tmp_path, PEERMEM_HOST), s)
    assert finding.status is None and "expected loaded" in finding.message  # bad(): the check's severity


@pytest.mark.parametrize(("change", "why"), [
    ({"/proc/driver/nvidia/version": OPEN_DRIVER}, "DMA-BUF is available (open kernel module, kernel 6.1.0"),
    ({"/proc/modules": "mlx5_ib 466944 0 - Live 0x0\n"}, "the NVIDIA driver is not loaded"),
    ({"/proc/modules": "nvidia 1 0 - Live 0x0\nnv_peer_mem 1 0 - Live 0x0\n"}, "nv_peer_mem"),
])
def test_not_applicable_where_peermem_is_not_wanted(tmp_path, change, why):
    a = assess(_ctx(tmp_path, {**PEERMEM_HOST, **change}), _setting())
    assert why in a.not_applicable


def test_not_built_for_the_kernel_or_listed_but_not_loaded(tmp_path):
    dep = {f"/lib/modules/{RELEASE}/modules.dep": "updates/dkms/nvidia.ko.xz:\n"}
    a = assess(_ctx(tmp_path / "a", {**PEERMEM_HOST, **dep}), _setting())
    assert "not built for kernel 6.1.0-18-amd64" in a.not_applicable
    listed = {"/usr/lib/modules-load.d/nvidia.conf": "nvidia-peermem\n"}
    a = assess(_ctx(tmp_path / "b", {**PEERMEM_HOST, **listed}), _setting())
    assert "listed in /usr/lib/modules-load.d/nvidia.conf but not loaded" in a.not_applicable


def test_loaded_and_listed_passes(tmp_path):
    files = {**PEERMEM_HOST, "/proc/modules": PEERMEM_HOST["/proc/modules"] + "nvidia_peermem 16384 0 - Live 0x0\n",
             "/etc/modules-load.d/rdma.conf": "# GPUDirect\nnvidia-peermem  # dkms\n"}
    [finding] = judge_setting(_ctx(tmp_path, files), _setting())
    assert finding.status == "PASS"


def test_apply_writes_modules_load_d_runs_modprobe_and_rollback_is_byte_exact(tmp_path):
    runner = ReplayRunner()
    runner.add(["modprobe", "nvidia_peermem"], 0)
    runner.add(["modprobe", "-r", "nvidia_peermem"], 0)
    host = tree_host(tmp_path / "root", PEERMEM_HOST, runner=runner)
    before = picture(tmp_path / "root")
    profile = load_profile("training")
    env = ApplyEnv(host=host, gpu=NoGpuControl(), run_post=True)
    state = StateDir(tmp_path / "state")
    out = apply_profile(env, profile, select_settings(profile, ["module.nvidia_peermem"]), state, persist=False)
    assert out.result == "applied", out.reason
    assert (tmp_path / "root" / CONF.lstrip("/")).read_text().splitlines()[-1] == "nvidia_peermem"
    assert runner.calls == [["modprobe", "nvidia_peermem"]]
    _, results = rollback(env, state)
    assert [r.status for r in results] == ["restored"]
    assert runner.calls[-1] == ["modprobe", "-r", "nvidia_peermem"]  # gpunode loaded it, gpunode unloads it
    assert picture(tmp_path / "root") == before


def test_rollback_leaves_a_module_loaded_before(tmp_path):
    runner = ReplayRunner()
    runner.add(["modprobe", "nvidia_peermem"], 0)
    files = {**PEERMEM_HOST, "/proc/modules": PEERMEM_HOST["/proc/modules"] + "nvidia_peermem 16384 0 - Live 0x0\n"}
    host = tree_host(tmp_path / "root", files, runner=runner)
    profile = load_profile("training")
    env = ApplyEnv(host=host, gpu=NoGpuControl(), run_post=True)
    state = StateDir(tmp_path / "state")
    assert apply_profile(env, profile, select_settings(profile, ["module.nvidia_peermem"]), state,
                         persist=False).result == "applied"
    rollback(env, state)
    assert ["modprobe", "-r", "nvidia_peermem"] not in runner.calls


@pytest.mark.parametrize("key", ["../x", "nvidia peermem", "a" * 57, ""])
def test_module_names_are_validated(key):
    with pytest.raises(SettingInvalid):
        kind_of("module").validate_key(key)
    with pytest.raises(SettingInvalid):
        kind_of("module").validate_target("nvidia_peermem", "unloaded")
