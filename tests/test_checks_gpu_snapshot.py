"""The GPU catalogue end to end: `gpunode audit --snapshot` over a bundle made of the real H100
inventory, its sysfs PCI entry and a recorded kernel log (commands replayed by their fixed argv)."""

import json

from gpu_fixtures import H100_JSON, KERNLOG, UPTIME, pci_files
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.host.facts import kernlog
from testkit import NOW, write_files

cli = CliRunner()


def bundle(tmp_path, dmesg_text: str):
    snap = tmp_path / "snap"
    write_files(snap / "files", {**pci_files(["0000:00:06.0"]), "/proc/uptime": UPTIME})
    (snap / "meta.json").write_text(json.dumps({"facts": {"is_root": True, "hostname": "h100-vm", "now": NOW}}))
    (snap / "gpus.json").write_text(H100_JSON.read_text())
    base = {"stderr": "", "duration_s": 0.01, "timed_out": False, "error": None}
    commands = [
        {**base, "argv": list(kernlog.JOURNAL_ARGV), "rc": 0, "stdout": ""},  # no journald on the VM
        {**base, "argv": list(kernlog.DMESG_ARGV), "rc": 0, "stdout": dmesg_text},
    ]
    (snap / "commands.json").write_text(json.dumps(commands))
    return snap


def audit(snap):
    result = cli.invoke(app, ["audit", "--snapshot", str(snap), "--only", "gpu.*", "--only", "nvlink.*", "--json"])
    return result.exit_code, json.loads(result.stdout)


def test_recorded_h100_vm_is_healthy(tmp_path):
    code, doc = audit(bundle(tmp_path, (KERNLOG / "dmesg-iso-debian12.txt").read_text()))
    got = {c["id"]: c["status"] for c in doc["checks"]}
    assert code == 0, doc
    assert got["gpu.xid"] == "PASS" and got["gpu.nvml"] == "PASS" and got["gpu.count"] == "PASS"
    assert got["nvlink.state"] == "SKIP" and got["nvlink.fabric"] == "SKIP"


def test_xid_storm_in_the_replayed_kernel_log_fails_the_audit(tmp_path):
    code, doc = audit(bundle(tmp_path, (KERNLOG / "dmesg-iso-vm-xid119.txt").read_text()))
    xid = next(c for c in doc["checks"] if c["id"] == "gpu.xid")
    assert code == 2 and doc["status"] == "FAIL"
    assert xid["status"] == "FAIL" and xid["subject"] == "GPU0" and xid["remediation"]
    assert "Xid 119" in xid["message"]
