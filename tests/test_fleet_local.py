"""`gpunode fleet` for real: ansible-runner runs the playbooks over inventory hosts that are this
machine (ansible_connection=local), each one a different node: its own snapshot (audit, gate), its
own fixture root and journal (apply, rollback), its own fio directory (bench)."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path

import fleetkit
import pytest

import testkit

H200_GPU = {"name": "NVIDIA H200", "pci_device_id": fleetkit.H200_PCI_DEVICE_ID,
            "uuid": "GPU-3f0c2a9e-0000-4000-8000-000000000200"}


@pytest.fixture(autouse=True)
def _ansible():
    fleetkit.require_ansible()


def test_fleet_audit_names_failing_hosts_and_checks(tmp_path):
    testkit.require(shutil.which("ssh") is not None, "openssh-client (ssh) not installed")
    snaps = tmp_path / "snaps"
    ok = fleetkit.make_snapshot(snaps / "ok", "gpu-h100-01", files=fleetkit.TUNED_FILES)
    bad = fleetkit.make_snapshot(snaps / "bad", "gpu-h100-02",
                                 files={**fleetkit.TUNED_FILES, "/proc/sys/vm/swappiness": "60\n"},
                                 gpu={"ecc_mode_current": False, "ecc_mode_pending": False})
    h200 = fleetkit.make_snapshot(snaps / "h200", "gpu-h200-01", files=fleetkit.TUNED_FILES, gpu=H200_GPU)
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {
        "h100": [f"h100-ok gpunode_snapshot={ok}", f"h100-bad gpunode_snapshot={bad}",
                 # nothing listens on port 1: this node is down
                 f"h100-dark gpunode_snapshot={ok} ansible_connection=ssh ansible_host=127.0.0.1 ansible_port=1"],
        "h200": [f"h200-a gpunode_snapshot={h200}"],
    }, fleetkit.local_vars(gpunode_audit_args='["--tag", "profile"]'))
    state = tmp_path / "state"
    page = tmp_path / "audit.html"
    result, doc = fleetkit.fleet_json(["audit", "-i", str(inv), "--state-dir", str(state), "--forks", "4",
                                       "--html", str(page)])
    assert result.rc == 2, result.stderr[-3000:]  # a FAIL in the fleet
    assert doc["schema"] == "gpunode.fleet/1" and doc["kind"] == "audit" and doc["status"] == "FAIL"
    hosts = fleetkit.by_host(doc)
    assert {h: r["status"] for h, r in hosts.items()} == {
        "h100-ok": "OK", "h100-bad": "FAIL", "h100-dark": "UNREACHABLE", "h200-a": "OK"}
    assert {h: r["sku"] for h, r in hosts.items()} == {"h100-ok": "h100", "h100-bad": "h100", "h100-dark": "h100",
                                                       "h200-a": "h200"}
    # Ansible words a refused connection as ssh's "connect to host 127.0.0.1 port 1: Connection
    # refused" or, at times, "Data could not be sent to remote host '127.0.0.1' ... Broken pipe":
    # both name the address.
    assert "127.0.0.1" in hosts["h100-dark"]["message"] and hosts["h100-dark"]["run"] == "unreachable"
    assert hosts["h200-a"]["gpu_names"] == ["NVIDIA H200"] and hosts["h100-ok"]["gpu_names"] == ["NVIDIA H100 80GB HBM3"]
    assert hosts["h100-bad"]["reported_host"] == "gpu-h100-02"  # the node's own report, not a copy
    assert hosts["h100-bad"]["failing"] == ["gpu.ecc_mode"]
    assert '<td>h100-bad</td><td>h100</td><td class="FAIL">FAIL</td>' in page.read_text()
    assert '<td class="failing">gpu.ecc_mode</td>' in page.read_text()  # the page names it per host
    ecc = fleetkit.check_row(doc, "gpu.ecc_mode")
    assert ecc["fail_hosts"] == ["h100-bad"] and ecc["details"]["h100-bad"][0]["subject"] == "GPU0"
    assert fleetkit.check_row(doc, "sysctl.vm.swappiness")["warn_hosts"] == ["h100-bad"]
    assert doc["ansible"]["status"] == "failed" and doc["ansible"]["stats"]["dark"] == {"h100-dark": 1}

    # What stays on the controller: private per-host reports, the run, the fleet report.
    reports = Path(doc["report_dir"])
    assert sorted(p.name for p in reports.iterdir()) == ["h100-bad.audit.json", "h100-ok.audit.json",
                                                         "h200-a.audit.json"]
    assert stat.S_IMODE(reports.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in reports.iterdir())
    artifact = Path(doc["artifact_dir"])
    assert json.loads((artifact / "fleet.json").read_text())["status"] == "FAIL"
    assert stat.S_IMODE((state / "fleet").stat().st_mode) == 0o700

    # The table for people; live per-host lines on stderr; check mode still audits (read-only);
    # --keep 1 rotates the first run's artifacts away.
    again = fleetkit.fleet(["audit", "-i", str(inv), "--state-dir", str(state), "--limit", "h100-bad",
                            "--check", "--keep", "1"])
    assert again.rc == 2, again.stderr[-3000:]
    assert "h100-bad" in again.stdout and "gpu.ecc_mode" in again.stdout and "FAIL (exit 2)" in again.stdout
    assert "[1/1] h100-bad FAIL" in again.stderr and "check mode" in again.stderr
    assert not artifact.exists()
    assert len(list((state / "fleet" / "audit" / "artifacts").iterdir())) == 1


def _apply_hosts(tmp_path: Path, names: list[str]) -> dict[str, Path]:
    roots = {}
    for name in names:
        root = tmp_path / name / "root"
        testkit.write_files(root, {"/proc/sys/vm/swappiness": "60\n"})
        roots[name] = root
    return roots


def _apply_inventory(tmp_path: Path, roots: dict[str, Path], profiles: dict[str, str] | None = None) -> Path:
    lines = []
    for name, root in roots.items():
        own = ["--sysroot", str(root), "--state-dir", str(root.parent / "journal")]
        apply_args = json.dumps([*own, "--only", "sysctl.vm.swappiness"])
        profile = (profiles or {}).get(name, "training")
        lines.append(f"{name} gpunode_profile={profile} gpunode_apply_args='{apply_args}' "
                     f"gpunode_rollback_args='{json.dumps(own)}'")
    return fleetkit.write_inventory(tmp_path / "inv.ini", {"h100": lines}, fleetkit.local_vars())


def test_fleet_apply_canary_batches_check_mode_and_rollback(tmp_path):
    roots = _apply_hosts(tmp_path, ["n1", "n2", "n3"])
    swappiness = {n: r / "proc/sys/vm/swappiness" for n, r in roots.items()}
    state = ["--state-dir", str(tmp_path / "state")]

    # --check: gpunode apply --dry-run on every node; nothing changes.
    inv = _apply_inventory(tmp_path, roots)
    result, doc = fleetkit.fleet_json(["apply", "-i", str(inv), "--check", *state])
    assert result.rc == 0, result.stderr[-3000:]
    for host in doc["hosts"]:
        report = json.loads(Path(host["report"]).read_text())
        assert report["dry_run"] is True and report["result"] == "planned", report
        assert host["status"] == "OK" and host["message"] == "planned: 2 planned"  # the sysctl and its /etc/sysctl.d file
    assert all(p.read_text() == "60\n" for p in swappiness.values())
    # ... and says per host what would change, from -> to, the hosts alike in one compressed list
    swap = next(c for c in doc["changes"] if c["setting"] == "sysctl.vm.swappiness")
    assert (swap["hostlist"], swap["from"], swap["to"], swap["status"]) == ("n[1-3]", "60", "10", "planned")
    shown = fleetkit.fleet(["report", doc["artifact_dir"]]).stdout
    assert any("n[1-3]" in line and "sysctl.vm.swappiness" in line and "60 -> 10" in line for line in shown.splitlines())

    # A canary that fails stops the rollout: the other nodes are listed as not run, untouched.
    inv = _apply_inventory(tmp_path, roots, profiles={"n1": str(tmp_path / "no-such-profile.yaml")})
    result, doc = fleetkit.fleet_json(["apply", "-i", str(inv), *state])
    assert result.rc == 3, result.stderr[-3000:]
    hosts = fleetkit.by_host(doc)
    assert hosts["n1"]["status"] == "FAILED" and "no-such-profile.yaml" in hosts["n1"]["message"]
    assert hosts["n2"]["status"] == hosts["n3"]["status"] == "NOT_RUN"
    assert all(p.read_text() == "60\n" for p in swappiness.values())

    # Canary, then batches of one: all applied; then the fleet rollback restores every node.
    inv = _apply_inventory(tmp_path, roots)
    result, doc = fleetkit.fleet_json(["apply", "-i", str(inv), "--batch", "1", *state])
    assert result.rc == 0, result.stderr[-3000:]
    assert {h["host"]: h["message"] for h in doc["hosts"]} == {n: "applied: 2 applied" for n in roots}
    assert doc["ansible"]["stats"]["changed"] == {"n1": 1, "n2": 1, "n3": 1}
    assert all(p.read_text().strip() == "10" for p in swappiness.values())
    assert all((r / "etc/sysctl.d/90-gpunode.conf").exists() for r in roots.values())

    result, doc = fleetkit.fleet_json(["rollback", "-i", str(inv), *state])
    assert result.rc == 0, result.stderr[-3000:]
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {n: "OK" for n in roots}
    assert all(p.read_text() == "60\n" for p in swappiness.values())
    assert not any((r / "etc/sysctl.d/90-gpunode.conf").exists() for r in roots.values())


def test_fleet_bench_fetches_results_and_compares_peers(tmp_path):
    testkit.require(shutil.which("fio") is not None, "fio not installed (Debian package fio)")
    lines = []
    for name in ("b1", "b2", "b3"):
        (tmp_path / name).mkdir()
        args = json.dumps(["--only", "fio", "--fio-dir", str(tmp_path / name)])
        lines.append(f"{name} gpunode_bench_args='{args}' gpunode_node_dir={tmp_path / name / 'out'}")
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"vm": lines}, fleetkit.local_vars())
    # Three fio runs share this machine's disk: which is slowest is luck, so no outlier is asserted.
    result, doc = fleetkit.fleet_json(["bench", "-i", str(inv), "--state-dir", str(tmp_path / "state"),
                                       "--margin", "0.99"], timeout=300)
    assert result.rc == 0, result.stderr[-3000:]
    assert {h["host"]: h["status"] for h in doc["hosts"]} == {"b1": "OK", "b2": "OK", "b3": "OK"}
    rows = {r["metric"]: r for r in doc["metrics"]}
    assert sorted(rows) == ["fio.rand_read.iops", "fio.rand_read.p99_us", "fio.seq_read", "fio.seq_write"]
    for row in rows.values():
        assert row["sku"] == "vm" and row["peers"] == 3 and row["median"] > 0
        assert all(0 < e["ratio"] for e in row["hosts"])
    assert rows["fio.rand_read.p99_us"]["lower_is_better"] is True
    for name in ("b1", "b2", "b3"):  # fetched from the node's own results file
        node_file = tmp_path / name / "out" / "bench.json"
        assert json.loads(node_file.read_text()) == json.loads((Path(doc["report_dir"]) / f"{name}.bench.json").read_text())

    # --check: a benchmark is not a dry-runnable change; nothing runs, every host says so.
    result, doc = fleetkit.fleet_json(["bench", "-i", str(inv), "--state-dir", str(tmp_path / "state"), "--check"])
    assert result.rc == 0 and {h["status"] for h in doc["hosts"]} == {"SKIPPED"}


def test_fleet_gate_and_slurm_check_mode(tmp_path):
    ok = fleetkit.make_snapshot(tmp_path / "ok", "gpu-01", files=fleetkit.TUNED_FILES)
    gone = fleetkit.make_snapshot(tmp_path / "gone", "gpu-02", files=fleetkit.TUNED_FILES,
                                  gpu={"remap_failure": True, "remap_pending": True})
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"h100": [
        f"gpu-01 gpunode_snapshot={ok}", f"gpu-02 gpunode_snapshot={gone}"]},
        fleetkit.local_vars(gpunode_slurm_prefix=str(tmp_path / "hooks")))
    state = ["--state-dir", str(tmp_path / "state")]
    result, doc = fleetkit.fleet_json(["gate", "-i", str(inv), *state])
    hosts = fleetkit.by_host(doc)
    assert hosts["gpu-02"]["status"] == "FAIL", hosts
    assert "gpu-02" in fleetkit.check_row(doc, "gpu.memory.remap")["fail_hosts"]
    assert "gpu-01" not in [h for r in doc["checks"] for h in r["fail_hosts"]]
    assert json.loads(Path(hosts["gpu-02"]["report"]).read_text())["schema"] == "gpunode.gate/1"
    assert result.rc == 2

    # slurm --check: `gpunode slurm install --dry-run` writes no hook; the gate verdict is the report.
    result, doc = fleetkit.fleet_json(["slurm", "-i", str(inv), "--check", *state, "--limit", "gpu-01"])
    assert [h["host"] for h in doc["hosts"]] == ["gpu-01"] and doc["hosts"][0]["status"] in ("OK", "WARN", "UNKNOWN")
    assert json.loads(Path(doc["hosts"][0]["report"]).read_text())["schema"] == "gpunode.gate/1"
    assert not (tmp_path / "hooks").exists()
