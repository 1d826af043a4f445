"""`gpunode fleet diag` for real: ansible-runner runs playbooks/diag.yml over inventory hosts that
are this machine (no GPU here: every host's diag is UNKNOWN with gpu.kernels ERROR, which the fleet
report must show per host, never as OK), and a report built from recorded H200 diag documents."""

from __future__ import annotations

import json
from pathlib import Path

import fleetkit
import pytest

from gpunode.fleet.report import check_list

FIX = Path(__file__).parent / "fixtures" / "diag"


@pytest.fixture()
def _ansible():
    fleetkit.require_ansible()


def test_fleet_diag_fetches_each_hosts_results(tmp_path, _ansible):
    lines = []
    for name in ("d1", "d2"):
        args = json.dumps(["--no-history"])
        lines.append(f"{name} gpunode_diag_args='{args}' gpunode_node_dir={tmp_path / name / 'out'}")
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"vm": lines}, fleetkit.local_vars())
    result, doc = fleetkit.fleet_json(["diag", "-i", str(inv), "--state-dir", str(tmp_path / "state"), "--level", "1"],
                                      timeout=300)
    assert result.rc == 3, result.stderr[-3000:]  # nothing could be tested here: UNKNOWN, not OK
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {"d1": "UNKNOWN", "d2": "UNKNOWN"}
    row = fleetkit.check_row(doc, "gpu.kernels")
    assert row["error_hosts"] == ["d1", "d2"]
    for name in ("d1", "d2"):
        node = json.loads((tmp_path / name / "out" / "diag.json").read_text())
        assert node["schema"] == "gpunode.diag/1" and node["level"] == 1
    result, doc = fleetkit.fleet_json(["diag", "-i", str(inv), "--state-dir", str(tmp_path / "state"), "--check"])
    assert result.rc == 0 and {h["status"] for h in doc["hosts"]} == {"SKIPPED"}


def test_fleet_rejects_a_bad_diag_level(tmp_path, _ansible):
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"vm": ["d1 gpunode_diag_level=4"]}, fleetkit.local_vars())
    result = fleetkit.fleet(["diag", "-i", str(inv), "--state-dir", str(tmp_path / "state")])
    assert result.rc == 3 and "gpunode_diag_level" in result.stderr


def test_diag_results_read_as_fleet_check_rows():
    rows = check_list(json.loads((FIX / "h200-l2-hog.json").read_text()))
    tel = next(r for r in rows if r["id"] == "telemetry")
    assert tel == {"id": "telemetry", "title": "telemetry", "status": "WARN", "subject": "GPU0",
                   "message": tel["message"]} and "pid" in tel["message"]
    assert check_list({"checks": [{"id": "x"}]}) == [{"id": "x"}] and check_list({}) is None
