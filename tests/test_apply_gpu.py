"""GPU settings: planning and refusal from the real H100 NVML inventory, written through a
fake GPU control (never a real GPU here; on real hardware only --dry-run is ever run)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

import testkit
from gpunode.host.gpu.control import GpuControl, GpuControlError
from gpunode.host.gpu.model import GpuInventory, GpuProcess
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import apply_profile, rollback
from testkit import FIXTURES, tree_host


def h100() -> GpuInventory:
    return GpuInventory.from_json(json.loads((FIXTURES / "nvml" / "h100-sxm-1gpu.json").read_text()))


class FakeGpuControl(GpuControl):
    """GPU state in memory, seeded from the inventory; `fail` makes one key's write raise like NVML."""

    def __init__(self, inv: GpuInventory, fail: str | None = None):
        g = inv.gpus[0]
        self.values = {0: {"persistence_mode": g.persistence_mode, "power_limit": g.power_limit_w,
                           "compute_mode": g.compute_mode, "ecc_mode": g.ecc_mode_pending,
                           "mig_mode": g.mig_mode_pending}}
        self.pids = [p.pid for p in g.processes]
        self.instances = [dict(i) for i in (g.mig_instances or [])]
        self.fail = fail
        self.writes: list[tuple] = []

    def read(self, index, key):
        return self.values[index][key]

    def write(self, index, key, value):
        if key == self.fail:
            raise GpuControlError(f"GPU{index} set {key}={value}: Insufficient Permissions")
        self.writes.append((key, value))
        self.values[index][key] = value

    def processes(self, index):
        return list(self.pids)

    def mig_instances(self, index):
        return [dict(i) for i in self.instances]

    def mig_create(self, index, profile, placement=None):
        slices = int(profile.split("g.")[0])
        used = {s for i in self.instances for s in range(i["start"], i["start"] + i["size"])}
        start = placement["start"] if placement else next(s for s in range(8) if not used & set(range(s, s + slices)))
        inst = {"id": max([i["id"] for i in self.instances], default=0) + 1, "profile": profile, "profile_id": 0,
                "start": start, "size": slices}
        self.instances.append(inst)
        self.writes.append(("mig_create", profile))
        return dict(inst)

    def mig_destroy(self, index, instance_id):
        self.instances = [i for i in self.instances if i["id"] != instance_id]
        self.writes.append(("mig_destroy", instance_id))


def _run(tmp_path, inv, control, only="gpu.*", overlay: str | None = None, **kw):
    host = tree_host(tmp_path / "root", inventory=inv)
    overlays = []
    if overlay:
        (tmp_path / "host.yaml").write_text(overlay)
        overlays = [tmp_path / "host.yaml"]
    profile = load_profile("training", overlays=overlays)
    env = ApplyEnv(host=host, gpu=control)
    state = StateDir(tmp_path / "state")
    return env, state, apply_profile(env, profile, select_settings(profile, [only]), state, **kw)


def _rows(outcome):
    return {(r["setting"], r["subject"]): r for r in outcome.rows}


def test_recorded_h100_is_already_as_the_training_profile_wants(tmp_path):
    inv = h100()
    _, _, out = _run(tmp_path, inv, FakeGpuControl(inv), dry_run=True)
    assert out.result == "nothing-to-change"
    assert sorted(out.plan.satisfied) == ["gpu.compute_mode", "gpu.ecc_mode", "gpu.mig_mode", "gpu.persistence_mode",
                                          "gpu.power_limit"]


def test_plan_apply_and_rollback_of_gpu_settings(tmp_path):
    inv = testkit.with_gpu(h100(), persistence_mode=False, power_limit_w=500.0, compute_mode="exclusive_process",
                           ecc_mode_current=False, ecc_mode_pending=False)
    control = FakeGpuControl(inv)
    _, _, plan = _run(tmp_path / "a", inv, control, dry_run=True)
    rows = _rows(plan)
    assert rows[("gpu.power_limit", "GPU0")]["target"] == "700 W"
    assert rows[("gpu.ecc_mode", "GPU0")]["gpu_reset_required"] is True
    assert rows[("gpu.persistence_mode", "GPU0")]["gpu_reset_required"] is False
    assert control.writes == []  # a dry run never touches the GPU

    env, state, out = _run(tmp_path, inv, control)
    assert out.result == "applied", out.reason
    assert control.values[0] == {"persistence_mode": True, "power_limit": 700.0, "compute_mode": "default",
                                 "ecc_mode": True, "mig_mode": False}
    boot = json.loads((tmp_path / "root/etc/gpunode/apply-boot.json").read_text())
    # runtime-only GPU settings come back at boot; ECC mode is kept by the GPU itself
    assert sorted(s["key"] for s in boot["settings"]) == ["compute_mode", "persistence_mode", "power_limit"]
    record, results = rollback(env, state)
    assert {r.status for r in results} == {"restored"}
    assert control.values[0] == {"persistence_mode": False, "power_limit": 500.0, "compute_mode": "exclusive_process",
                                 "ecc_mode": False, "mig_mode": False}
    assert not (tmp_path / "root/etc").exists()


def test_reset_settings_refused_while_gpu_processes_run(tmp_path):
    busy = [GpuProcess(4242, "compute", 1 << 30, "python")]
    inv = testkit.with_gpu(h100(), persistence_mode=False, ecc_mode_current=False, ecc_mode_pending=False,
                           mig_mode_current=True, mig_mode_pending=True, mig_instances=[], processes=busy)
    control = FakeGpuControl(inv)
    _, _, out = _run(tmp_path, inv, control)
    rows = _rows(out)
    for key in ("gpu.ecc_mode", "gpu.mig_mode"):
        assert rows[(key, "GPU0")]["status"] == "blocked" and "pids 4242" in rows[(key, "GPU0")]["note"]
    assert rows[("gpu.persistence_mode", "GPU0")]["status"] == "applied"
    assert out.exit_code == 1
    assert control.writes == [("persistence_mode", True)]


def test_process_started_after_the_plan_is_caught_at_write_time(tmp_path):
    inv = testkit.with_gpu(h100(), persistence_mode=False, ecc_mode_current=False, ecc_mode_pending=False)
    control = FakeGpuControl(inv)
    control.pids = [777]  # not in the inventory the plan saw
    _, _, out = _run(tmp_path, inv, control)
    assert out.result == "failed" and "refusing ecc_mode change on GPU0: processes 777" in out.reason
    assert control.values[0]["persistence_mode"] is False  # the batch was rolled back
    assert control.values[0]["ecc_mode"] is False


def test_pending_ecc_is_not_planned_again(tmp_path):
    inv = testkit.with_gpu(h100(), ecc_mode_current=False, ecc_mode_pending=True)
    _, _, out = _run(tmp_path, inv, FakeGpuControl(inv), only="gpu.ecc_mode")
    assert out.result == "nothing-to-change" and out.exit_code == 1
    assert "already pending" in out.rows[0]["note"]


def test_nvml_failure_rolls_back_earlier_gpu_writes(tmp_path):
    inv = testkit.with_gpu(h100(), persistence_mode=False, power_limit_w=500.0, compute_mode="prohibited")
    control = FakeGpuControl(inv, fail="compute_mode")
    _, _, out = _run(tmp_path, inv, control)
    assert out.result == "failed" and "Insufficient Permissions" in out.reason
    assert control.values[0]["persistence_mode"] is False and control.values[0]["power_limit"] == 500.0
    # profile order: persistence (written, restored), compute mode (failed), power limit (never run)
    assert [r.status for r in out.restored] == ["not-written", "restored"]
    assert [r["status"] for r in out.rows][:3] == ["rolled-back", "failed", "not-run"]
    assert control.writes == [("persistence_mode", True), ("persistence_mode", False)]


def test_power_limit_outside_the_gpu_range_is_refused(tmp_path):
    inv = h100()
    _, _, out = _run(tmp_path, inv, FakeGpuControl(inv), only="gpu.power_limit",
                     overlay="settings:\n  - {kind: gpu, key: power_limit, target: 900}\n")
    assert out.rows[0]["status"] == "blocked" and "outside this GPU's range 200.0-700.0 W" in out.rows[0]["note"]


MIG_NOW = [
    {"id": 1, "profile": "3g.40gb", "profile_id": 2, "start": 0, "size": 4},
    {"id": 5, "profile": "1g.10gb", "profile_id": 0, "start": 4, "size": 1},
    {"id": 6, "profile": "1g.10gb", "profile_id": 0, "start": 5, "size": 1},
]
LAYOUT = "settings:\n  - {kind: gpu, key: mig_mode, target: true}\n  - {kind: gpu, key: mig_layout, target: '3g.40gb:1,2g.20gb:1'}\n"


def test_mig_layout_applies_only_the_difference_and_rolls_back(tmp_path):
    inv = testkit.with_gpu(h100(), mig_mode_current=True, mig_mode_pending=True, mig_instances=MIG_NOW)
    control = FakeGpuControl(inv)
    env, state, out = _run(tmp_path, inv, control, only="gpu.mig_*", overlay=LAYOUT)
    assert out.result == "applied", out.reason
    assert [r["subject"] for r in out.rows if r["setting"] == "gpu.mig_layout"] == [
        "GPU0 MIG 1g.10gb #6", "GPU0 MIG 1g.10gb #5", "GPU0 MIG 2g.20gb"]
    assert control.writes == [("mig_destroy", 6), ("mig_destroy", 5), ("mig_create", "2g.20gb")]
    assert sorted(i["profile"] for i in control.instances) == ["2g.20gb", "3g.40gb"]
    _, results = rollback(env, state)
    assert {r.status for r in results} == {"restored"}
    assert sorted((i["profile"], i["start"]) for i in control.instances) == [("1g.10gb", 4), ("1g.10gb", 5), ("3g.40gb", 0)]


def test_mig_layout_needs_mig_mode_first(tmp_path):
    inv = h100()  # MIG off
    _, _, out = _run(tmp_path, inv, FakeGpuControl(inv), only="gpu.mig_layout", overlay=LAYOUT, dry_run=True)
    assert {r["status"] for r in out.rows} == {"blocked"}
    assert "MIG mode is off on GPU0" in out.rows[0]["note"]


@pytest.mark.parametrize("target", ["3g.40gb:1,3g.40gb:1,1g.10gb:2", "nonsense:1", "1g.10gb:x"])
def test_bad_mig_layouts_are_profile_errors(tmp_path, target):
    from gpunode.tune.profiles import ProfileError

    (tmp_path / "o.yaml").write_text(f"settings:\n  - {{kind: gpu, key: mig_layout, target: '{target}'}}\n")
    with pytest.raises(ProfileError):
        load_profile("inference", overlays=[tmp_path / "o.yaml"])


def test_no_gpu_means_gpu_settings_are_skipped(tmp_path):
    inv = GpuInventory(available=False, error="no NVIDIA driver/NVML (test)")
    _, _, out = _run(tmp_path, inv, FakeGpuControl(replace(h100())), dry_run=True)
    assert out.result == "nothing-to-change" and out.rows == []
    assert all("NVML" in why or "GPU" in why for _, why in out.plan.skipped)


def test_boot_unit_reapplies_gpu_settings_through_nvml(tmp_path, monkeypatch):
    """`gpunode apply --boot` (the boot unit) must get GPU control like an apply does, or a
    lost persistence mode / power limit fails the whole boot batch instead of coming back."""
    from typer.testing import CliRunner

    from gpunode.cli import app, apply_cmd

    inv = testkit.with_gpu(h100(), persistence_mode=False)
    _, _, out = _run(tmp_path, inv, FakeGpuControl(inv), only="gpu.persistence_mode")
    assert out.result == "applied", out.reason
    rebooted = FakeGpuControl(inv)  # persistence mode is off again after a reboot
    monkeypatch.setattr(apply_cmd, "_host", lambda sysroot: tree_host(tmp_path / "root", inventory=inv))
    monkeypatch.setattr(apply_cmd, "_gpu_control", lambda host, changes: rebooted)
    args = ["apply", "--boot", "--sysroot", str(tmp_path / "root"), "--state-dir", str(tmp_path / "state"), "--json"]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and json.loads(dry.stdout)["result"] == "planned"
    assert rebooted.writes == []  # --boot --dry-run changes nothing
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["result"] == "applied"
    assert rebooted.writes == [("persistence_mode", True)]


CLOCKS = "settings:\n  - {kind: gpu, key: applications_clocks, target: %s}\n"


def test_applications_clocks_back_to_default_and_rolled_back(tmp_path):
    inv = testkit.with_gpu(h100(), sm_app_clock_mhz=1500)  # someone ran `nvidia-smi -ac 2619,1500`
    control = FakeGpuControl(inv)
    control.values[0]["applications_clocks"] = "2619,1500"
    env, state, out = _run(tmp_path, inv, control, only="gpu.applications_clocks", overlay=CLOCKS % "default")
    assert out.result == "applied", out.reason
    assert (out.rows[0]["current"], out.rows[0]["target"]) == ("2619,1500 MHz", "2619,1980 MHz")
    assert control.writes == [("applications_clocks", "2619,1980")]
    boot = json.loads((tmp_path / "root/etc/gpunode/apply-boot.json").read_text())
    assert [s["key"] for s in boot["settings"]] == ["applications_clocks"]  # lost at reboot, re-applied
    _, results = rollback(env, state)
    assert {r.status for r in results} == {"restored"} and control.values[0]["applications_clocks"] == "2619,1500"


def test_applications_clocks_above_the_maximum_are_refused_and_bad_ones_rejected(tmp_path):
    from gpunode.tune.profiles import ProfileError

    inv = h100()
    _, _, out = _run(tmp_path, inv, FakeGpuControl(inv), only="gpu.applications_clocks", overlay=CLOCKS % "'2619,2100'")
    assert out.rows[0]["status"] == "blocked" and "above this GPU's maximum clocks 2619,1980 MHz" in out.rows[0]["note"]
    (tmp_path / "bad.yaml").write_text(CLOCKS % "fast")
    with pytest.raises(ProfileError, match="'MEM,SM' in MHz"):
        load_profile("training", overlays=[tmp_path / "bad.yaml"])
