"""playbooks/install.yml for real through `gpunode fleet install`: a wheel built from this
checkout goes into a fresh venv on the node (dependencies from the configured index), a second
run changes nothing, and a rebuilt wheel of the same version is reinstalled."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import fleetkit

from gpunode.host.runner import Runner

REPO = Path(__file__).resolve().parent.parent


def _wheel(dest: Path) -> Path:
    result = Runner().run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           "-w", str(dest), str(REPO)], timeout=180)
    assert result.ok, result.stderr[-2000:]
    (wheel,) = dest.glob("gpunode-*.whl")
    return wheel


def test_fleet_install_from_a_controller_wheel_is_idempotent(tmp_path):
    fleetkit.require_ansible()
    wheel = _wheel(tmp_path / "dist")
    venv, link = tmp_path / "node" / "venv", tmp_path / "node" / "bin" / "gpunode"
    link.parent.mkdir(parents=True)
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"h100": [f"n1 gpunode_venv={venv} gpunode_link={link}"]},
                                   {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                                    "gpunode_python": sys.executable})
    args = ["install", "-i", str(inv), "--wheel", str(wheel), "--state-dir", str(tmp_path / "state")]
    # --check on a node without gpunode: a finding (WARN), nothing made, no failed task.
    result, doc = fleetkit.fleet_json([*args, "--check"], timeout=300)
    assert result.rc == 1, result.stderr[-3000:]
    assert doc["hosts"][0]["status"] == "WARN" and doc["hosts"][0]["message"] == "not installed yet (check mode)"
    assert not venv.exists() and not link.is_symlink()

    result, doc = fleetkit.fleet_json(args, timeout=300)
    assert result.rc == 0, result.stderr[-3000:]
    (host,) = doc["hosts"]
    assert host["status"] == "OK" and host["message"] == "gpunode 0.1.0"
    assert json.loads(Path(host["report"]).read_text())["venv"] == str(venv)
    assert os.readlink(link) == str(venv / "bin" / "gpunode")
    version = Runner().run([str(link), "--version"], timeout=60)
    assert version.ok and version.stdout.strip() == "gpunode 0.1.0"
    assert doc["ansible"]["stats"]["changed"]["n1"] >= 3  # venv, wheel copied, installed, link

    result, doc = fleetkit.fleet_json(args, timeout=300)
    assert result.rc == 0 and doc["hosts"][0]["status"] == "OK"
    assert doc["ansible"]["stats"]["changed"] == {}, "a second install must change nothing"

    # Same version, new content: the copied wheel differs, so it is force-reinstalled.
    rebuilt = tmp_path / "dist2"
    rebuilt.mkdir()
    other = rebuilt / wheel.name
    other.write_bytes(wheel.read_bytes() + b"\0")  # a zip tolerates trailing bytes
    result, doc = fleetkit.fleet_json([*args[:3], "--wheel", str(other), *args[5:]], timeout=300)
    assert result.rc == 0, result.stderr[-3000:]
    assert doc["ansible"]["stats"]["changed"]["n1"] >= 2  # copy + reinstall
