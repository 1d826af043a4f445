"""Audits of the real snapshots recorded on the lent H100 and H200, and misconfigured
variants derived from them: what a support bundle shows must match the live audit there."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.ids import normalise
from testkit import HOSTS, derive_snapshot

cli = CliRunner()
DEVICE = Path(__file__).parent / "fixtures/device"
REAL = ["h100-sxm-1gpu", "h200-1gpu"]


def audit(path, *args):
    result = cli.invoke(app, ["audit", "--snapshot", str(path), "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def by_id(doc):
    return {(c["id"], c["subject"]): c for c in doc["checks"]}


@pytest.mark.parametrize("name, live", [("h100-sxm-1gpu", "audit-h100.json"), ("h200-1gpu", "audit-h200.json")])
def test_replay_matches_the_live_audit_recorded_on_the_device(name, live):
    code, doc = audit(HOSTS / name)
    recorded = json.loads((DEVICE / live).read_text())
    assert code == recorded["exit_code"] == 1  # tunables off profile, hardware healthy
    replayed = {(c["id"], c["subject"]): c["status"] for c in doc["checks"]}
    original = {(normalise(c["id"]), c["subject"]): c["status"] for c in recorded["checks"]}  # recorded: old kind/key ids
    assert replayed == original
    assert "ERROR" not in replayed.values()
    assert not any(c["status"] == "FAIL" for c in doc["checks"])


def test_recorded_gpu_identity():
    _, h100 = audit(HOSTS / "h100-sxm-1gpu", "--only", "gpu.*")
    _, h200 = audit(HOSTS / "h200-1gpu", "--only", "gpu.*")
    assert h100["gpus"]["devices"][0]["name"] == "NVIDIA H100 80GB HBM3"
    assert h100["gpus"]["devices"][0]["pci_device"] == "0x2330"
    assert h200["gpus"]["devices"][0]["name"] == "NVIDIA H200"
    assert h100["gpus"]["driver_version"] == "580.159.04"


@pytest.mark.parametrize(
    "change, check_id, status",
    [
        ({"gpu": {"ecc_mode_current": False, "ecc_mode_pending": False}}, "gpu.ecc_mode", "FAIL"),
        ({"gpu": {"remap_failure": True}}, "gpu.memory.remap", "FAIL"),
        ({"gpu": {"ecc_uncorrected_volatile": 3}}, "gpu.ecc.uncorrectable", "FAIL"),
        ({"gpu": {"pcie_width_current": 8}}, "gpu.pcie.link", "FAIL"),
        ({"gpu": {"clock_event_reasons": 0x8 | 0x40}}, "gpu.throttle", "FAIL"),
        ({"gpu": {"persistence_mode": False}}, "gpu.persistence_mode", "WARN"),
        ({"gpu": {"mig_mode_current": True, "mig_mode_pending": True}}, "gpu.mig_mode", "FAIL"),
        ({"files": {"/sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n"}}, "sysfs.thp.enabled", "PASS"),
        ({"files": {"/proc/sys/vm/swappiness": "10\n"}}, "sysctl.vm.swappiness", "PASS"),
        ({"files": {"/proc/sys/kernel/numa_balancing": "1\n"}}, "sysctl.kernel.numa_balancing", "WARN"),
    ],
)
@pytest.mark.parametrize("name", REAL)
def test_derived_variants(tmp_path, name, change, check_id, status):
    healthy = by_id(audit(HOSTS / name)[1])
    snap = derive_snapshot(name, tmp_path / "snap", **change)
    code, doc = audit(snap)
    results = [c for c in doc["checks"] if c["id"] == check_id]
    assert results and all(r["status"] == status for r in results), results
    if status == "FAIL":
        assert code == 2
    # the one change moves only its own checks
    changed = {k for k, v in by_id(doc).items() if v["status"] != healthy[k]["status"]}
    assert {k[0] for k in changed} <= {check_id, "gpu.nvml", "gpu.ecc_mode", "gpu.ecc.uncorrectable"}


def test_gpu_missing_against_expected_count(tmp_path):
    snap = derive_snapshot("h100-sxm-1gpu", tmp_path / "snap")
    code, doc = audit(snap, "--expected-gpus", "8", "--only", "gpu.count")
    assert code == 2 and doc["checks"][0]["status"] == "FAIL"
    code, doc = audit(snap, "--expected-gpus", "1", "--only", "gpu.count")
    assert code == 0


def test_gate_tagged_subset_on_real_snapshot():
    code, doc = audit(HOSTS / "h100-sxm-1gpu", "--tag", "gate")
    ids = {c["id"] for c in doc["checks"]}
    assert {"gpu.nvml", "gpu.count", "gpu.ecc.uncorrectable", "gpu.memory.remap", "gpu.xid", "gpu.pcie.link",
            "gpu.persistence_mode", "storage.scratch_space"} <= ids
    assert code == 0
