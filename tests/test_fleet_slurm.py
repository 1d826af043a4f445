"""playbooks/apply.yml with gpunode_slurm_drain on a REAL one-node Slurm (the gate tests'
LocalSlurm: munged, slurmctld, slurmd from Debian's packages): the node is drained before the
apply and resumed after it; a failed apply leaves it drained with gpunode's reason; a node an
operator drained keeps the operator's reason and stays drained."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fleetkit
import pytest
from test_gate_slurm import idle_cluster

import testkit

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def slurm(tmp_path_factory):
    fleetkit.require_ansible()
    with idle_cluster(tmp_path_factory, "fleet-slurm") as cluster:
        yield cluster


def test_apply_drains_and_resumes_only_its_own_drain(tmp_path, slurm):
    root = tmp_path / "root"
    testkit.write_files(root, {"/proc/sys/vm/swappiness": "60\n"})
    own = ["--sysroot", str(root), "--state-dir", str(tmp_path / "journal")]
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"h100": [
        f"n1 gpunode_slurm_node={slurm.node} gpunode_apply_args='{json.dumps([*own, '--only', 'sysctl.vm.swappiness'])}'"
    ]}, fleetkit.local_vars(ansible_python_interpreter=sys.executable, gpunode_slurm_drain="true",
                            gpunode_drain_timeout="30"))
    base = ["apply", "-i", str(inv), "--state-dir", str(tmp_path / "state")]
    env = {"SLURM_CONF": str(slurm.conf)}  # the node's scontrol finds this test cluster

    result, doc = fleetkit.fleet_json([*base, "-e", "gpunode_profile=training"], env=env)
    assert result.rc == 0, result.stderr[-3000:]
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == "10"
    assert slurm.reason() is None and "DRAIN" not in slurm.state()
    ctld_log = (slurm.root / "log" / "slurmctld.log").read_text()
    assert "gpunode: apply training" in ctld_log, "the node was never drained"

    # A failing apply leaves the node drained, with gpunode's reason, for a person to look at.
    result, doc = fleetkit.fleet_json([*base, "-e", f"gpunode_profile={tmp_path / 'missing.yaml'}"], env=env)
    assert result.rc == 3 and doc["hosts"][0]["status"] == "FAILED"
    assert "DRAIN" in slurm.state() and slurm.reason() == f"gpunode: apply {tmp_path / 'missing.yaml'}"
    slurm.resume()

    # An operator's drain: gpunode applies (the node is idle) but neither takes nor clears it.
    slurm.drain("disk swap ticket 123")
    result, doc = fleetkit.fleet_json([*base, "-e", "gpunode_profile=training"], env=env)
    assert result.rc == 0, result.stderr[-3000:]
    assert "DRAIN" in slurm.state() and slurm.reason() == "disk swap ticket 123"


def test_fleet_gate_honours_the_inventorys_expected_gpus_as_audit_does(tmp_path):
    """`gpunode_expected_gpus` reaches the gate as it reaches the audit: a 1-GPU node that the
    inventory says has 8 fails gpu.count; the same node expected with 1 passes."""
    fleetkit.require_ansible()
    snap = fleetkit.make_snapshot(tmp_path / "one-gpu", "gpu-01", files=fleetkit.TUNED_FILES)
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"h100": [
        f"gpu-01 gpunode_snapshot={snap} gpunode_expected_gpus=1",
        f"gpu-02 gpunode_snapshot={snap} gpunode_expected_gpus=8"]}, fleetkit.local_vars())
    result, doc = fleetkit.fleet_json(["gate", "-i", str(inv), "--state-dir", str(tmp_path / "state")])
    hosts = fleetkit.by_host(doc)
    assert hosts["gpu-02"]["status"] == "FAIL", hosts
    assert fleetkit.check_row(doc, "gpu.count")["fail_hosts"] == ["gpu-02"]
    assert hosts["gpu-01"]["status"] != "FAIL", hosts
    gate = json.loads(Path(hosts["gpu-02"]["report"]).read_text())
    assert gate["expected_gpus"] == 8 and result.rc == 2
    # `fleet slurm` reports the same gate verdict after installing the hooks (--check: none written).
    result, doc = fleetkit.fleet_json(["slurm", "-i", str(inv), "--check", "--state-dir", str(tmp_path / "state"),
                                       "-e", f"gpunode_slurm_prefix={tmp_path / 'hooks'}"])
    assert fleetkit.by_host(doc)["gpu-02"]["status"] == "FAIL" and result.rc == 2, doc["hosts"]
