"""Golden config drift: record the facts of a host, check them, and every kind of difference is a
finding. Hosts are fixture trees with the recorded H100 NVML inventory and a recorded os-release."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from baseline_fixtures import h100_inventory, inventory_like
from typer.testing import CliRunner

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.audit.golden import (
    collect,
    golden_checks,
    golden_yaml,
    header_version,
    load_golden,
    nccl_installs,
)
from gpunode.cli import app
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.runner import ReplayRunner
from gpunode.outputs import iso_time
from gpunode.tune.profiles import load_profile
from testkit import FIXTURES, statuses, tree_host, with_gpu

OS_RELEASE = (FIXTURES / "proc" / "os-release-debian12.txt").read_text()
# The format nv-fabricmanager prints (as shown in NVIDIA's docs and in public CI logs); not
# recorded here: the lent GPU machines have no NVSwitch and no Fabric Manager.
FM_OUTPUT = "Fabric Manager version is : 580.159.04\n"
NCCL_H = """\
#ifndef NCCL_H_
#define NCCL_H_

#include <cuda_runtime.h>
#include <cuda_fp16.h>

#define NCCL_MAJOR 2
#define NCCL_MINOR 28
#define NCCL_PATCH 9
#define NCCL_SUFFIX ""

#define NCCL_VERSION_CODE 22809
#define NCCL_VERSION(X,Y,Z) (((X) <= 2 && (Y) <= 8) ? (X) * 1000 + (Y) * 100 + (Z) : (X) * 10000 + (Y) * 100 + (Z))
"""
FILES = {
    "/proc/sys/kernel/osrelease": "6.1.0-28-amd64\n",
    "/etc/os-release": OS_RELEASE,
    "/sys/class/infiniband/mlx5_0/fw_ver": "28.39.1002\n",
    "/sys/class/infiniband/mlx5_1/fw_ver": "28.39.1002\n",
    "/usr/lib/x86_64-linux-gnu/libnccl.so.2.28.9": "",
    "/usr/include/nccl.h": NCCL_H,
    "/usr/local/lib/python3.12/dist-packages/nvidia_nccl_cu13-2.28.9.dist-info/METADATA": "Name: nvidia-nccl-cu13\n",
    "/sys/class/dmi/id/bios_version": "2.1.1\n",
    "/sys/class/dmi/id/bios_date": "03/14/2024\n",
    "/sys/class/dmi/id/product_name": "SYS-821GE-TNHR\n",
    "/sys/class/dmi/id/board_name": "X13DEG-OAD\n",
    "/sys/class/net/eth0/device/vendor": "0x15b3\n",  # a NIC with a device: ethtool -i is asked
    "/sys/class/net/lo/operstate": "unknown\n",  # no device: not a NIC of the golden file
}
FIRMWARE = FIXTURES / "firmware"


def fm_runner(stdout: str | None = FM_OUTPUT, rc: int = 0, ethtool: str = "ethtool-i-mlx5_core.txt") -> ReplayRunner:
    """Fabric Manager (None: not installed), the BMC and eth0's ethtool -i as recorded/documented."""
    runner = ReplayRunner()
    if stdout is not None:
        runner.add(["nv-fabricmanager", "--version"], rc=rc, stdout=stdout)
    runner.add(["ipmitool", "mc", "info"], stdout=(FIRMWARE / "ipmitool-mc-info.txt").read_text())
    runner.add(["ethtool", "-i", "eth0"], stdout=(FIRMWARE / ethtool).read_text())
    return runner


def host(tmp_path, files=None, inventory=None, runner=None, drop=()):
    merged = {k: v for k, v in {**FILES, **(files or {})}.items() if k not in drop}
    return tree_host(tmp_path / "root", files=merged, inventory=inventory or h100_inventory(),
                     runner=runner if runner is not None else fm_runner())


def golden_file(tmp_path, **changes) -> Path:
    base = {
        "schema": "gpunode.golden/1", "driver_version": "580.159.04", "cuda_driver_version": "13.0",
        "vbios": "96.00.DA.00.0C", "kernel_release": "6.1.0-28-amd64",
        "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "version_id": "12"}, "nccl_version": "2.28.9",
        "fabric_manager_version": "580.159.04", "gpu_count": 1,
        "nic_firmware": {"mlx5_0": "28.39.1002", "mlx5_1": "28.39.1002"},
        "eth_firmware": {"eth0": "28.39.1002 (MT_0000000838)"}, "bmc_firmware": "3.44",
        "bios": {"bios_version": "2.1.1", "bios_date": "03/14/2024"}, "platform": {"product_name": "SYS-821GE-TNHR"},
    }
    base.update(changes)
    path = tmp_path / "golden.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in base.items() if v is not None}))
    return path


def run_golden(path, h):
    ctx = AuditContext(host=h, profile=load_profile("training"))
    return run_checks(golden_checks(path), ctx)


def by_id(results):
    out: dict[str, list[str]] = {}
    for r in results:
        out.setdefault(r.id, []).append(r.status.value)
    return out


def test_a_host_that_matches_its_golden_file_passes(tmp_path):
    results = run_golden(golden_file(tmp_path), host(tmp_path))
    assert set(statuses(results)) == {"PASS"}, [(r.id, r.subject, r.message) for r in results if r.status.value != "PASS"]
    assert set(by_id(results)) == {f"golden.{k}" for k in (
        "driver_version", "cuda_driver_version", "vbios", "kernel_release", "os", "nccl_version",
        "fabric_manager_version", "gpu_count", "nic_firmware", "eth_firmware", "bmc_firmware", "bios", "platform")}
    assert by_id(results)["golden.nccl_version"] == ["PASS"] * 3  # library, header, wheel
    assert all(r.area == "golden" and "golden" in r.tags for r in results)


@pytest.mark.parametrize(("change", "host_kw", "check_id", "message"), [
    ({"driver_version": "570.86.15"}, {}, "golden.driver_version", "driver 580.159.04, golden 570.86.15"),
    ({"cuda_driver_version": ["12.8", "12.9"]}, {}, "golden.cuda_driver_version", "CUDA driver 13.0, golden 12.8 or 12.9"),
    ({"vbios": "96.00.99.00.01"}, {}, "golden.vbios", "VBIOS 96.00.DA.00.0C, golden 96.00.99.00.01"),
    ({"kernel_release": "6.8.0-84-generic"}, {}, "golden.kernel_release", "kernel 6.1.0-28-amd64, golden 6.8.0-84-generic"),
    ({"os": {"version_id": "22.04"}}, {}, "golden.os", "version_id '12' (golden 22.04)"),
    ({"nccl_version": "2.21.5"}, {}, "golden.nccl_version", "NCCL 2.28.9, golden 2.21.5"),
    ({"fabric_manager_version": "570.86.15"}, {}, "golden.fabric_manager_version", "Fabric Manager 580.159.04, golden 570.86.15"),
    ({"gpu_count": 8}, {}, "golden.gpu_count", "1 GPU(s), golden 8"),
    ({"nic_firmware": {"mlx5_0": "28.39.1002", "mlx5_1": "28.40.1000"}}, {}, "golden.nic_firmware",
     "firmware 28.39.1002, golden 28.40.1000"),
    ({}, {"files": {"/sys/class/infiniband/mlx5_2/fw_ver": "28.39.1002\n"}}, "golden.nic_firmware",
     "this NIC is not in the golden file"),
    ({}, {"drop": ("/sys/class/infiniband/mlx5_1/fw_ver",)}, "golden.nic_firmware", "mlx5_1 absent"),
    ({}, {"runner": fm_runner(None)}, "golden.fabric_manager_version", "Fabric Manager version unknown"),
    # issue 24 item 6: BIOS, board, BMC and every NIC's firmware drift
    ({"bios": {"bios_version": "2.3.0"}}, {}, "golden.bios", "bios_version '2.1.1' (golden 2.3.0)"),
    ({"platform": {"board_name": "X14DBG-AP"}}, {}, "golden.platform", "board_name 'X13DEG-OAD' (golden X14DBG-AP)"),
    ({}, {"drop": ("/sys/class/dmi/id/bios_date",)}, "golden.bios", "bios_date 'unknown' (golden 03/14/2024)"),
    ({"bmc_firmware": "3.50"}, {}, "golden.bmc_firmware", "BMC firmware 3.44, golden 3.50"),
    ({}, {"runner": fm_runner(ethtool="ethtool-i-virtio_net.txt")}, "golden.eth_firmware",
     "firmware unknown (ethtool -i eth0: no firmware version (exit 0))"),
    ({"eth_firmware": {"eth0": "28.40.1000"}}, {}, "golden.eth_firmware",
     "firmware 28.39.1002 (MT_0000000838), golden 28.40.1000"),
    ({"eth_firmware": {"eth1": "28.39.1002"}}, {}, "golden.eth_firmware", "eth1 absent"),
    ({}, {"runner": fm_runner("nv-fabricmanager: error while loading shared libraries\n", rc=127)},
     "golden.fabric_manager_version", "exited 127 without a version"),
    ({}, {"drop": tuple(k for k in FILES if "nccl" in k)}, "golden.nccl_version", "no NCCL found"),
])
def test_each_difference_is_a_finding(tmp_path, change, host_kw, check_id, message):
    results = run_golden(golden_file(tmp_path, **change), host(tmp_path, **host_kw))
    bad = [r for r in results if r.status.value != "PASS"]
    assert bad and {r.id for r in bad} == {check_id}, [(r.id, r.message) for r in bad]
    assert any(message in r.message for r in bad), [r.message for r in bad]
    assert all(r.status.value == "WARN" for r in bad)  # severity warning by default


def test_no_driver_differs_from_every_pinned_gpu_fact(tmp_path):
    results = run_golden(golden_file(tmp_path), host(tmp_path, inventory=GpuInventory(available=False,
                                                                                       error="no NVIDIA driver")))
    bad = {r.id: r.message for r in results if r.status.value != "PASS"}
    assert set(bad) == {"golden.driver_version", "golden.cuda_driver_version", "golden.vbios", "golden.gpu_count"}
    assert bad["golden.driver_version"] == "driver version unknown (no NVIDIA driver), golden 580.159.04"
    assert bad["golden.gpu_count"] == "no GPU visible (no NVIDIA driver), golden 1"


def test_per_gpu_vbios_and_severity_critical(tmp_path):
    inv = inventory_like("NVIDIA H100 80GB HBM3", 0x2330, 2)
    inv = with_gpu(inv, 1, vbios_version="96.00.99.00.01")
    path = golden_file(tmp_path, gpu_count=2, severity="critical")
    results = [r for r in run_golden(path, host(tmp_path, inventory=inv)) if r.id == "golden.vbios"]
    assert [(r.subject, r.status.value) for r in results] == [("GPU0", "PASS"), ("GPU1", "FAIL")]


def test_only_pinned_facts_are_checked(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text("driver_version: '580.159.04'\n")
    assert [c.id for c in golden_checks(path)] == ["golden.driver_version"]


@pytest.mark.parametrize(("text", "message"), [
    ("driver: 1\n", "unknown key(s) driver"),
    ("gpu_count: eight\n", "gpu_count: must be a whole number"),
    ("os: Debian\n", "os: a mapping with pretty_name and/or version_id"),
    ("nic_firmware: [a]\n", "nic_firmware: a mapping of device"),
    ("eth_firmware: {}\n", "eth_firmware: a mapping of device (mlx5_0, eth0) to firmware version"),
    ("gpu_count: -1\n", "gpu_count: must be a whole number (got -1)"),
    ("gpu_count: true\n", "gpu_count: must be a whole number (got True)"),
    ("os: {name: x}\n", "os: a mapping with pretty_name and/or version_id"),
    ("os: {version_id: [1, {a: b}]}\n", "os.version_id: must be a version string"),
    ("bios: {vendor: x}\n", "bios: a mapping with some of bios_version, bios_date, bios_vendor"),
    ("platform: x\n", "platform: a mapping with some of product_name, board_vendor, board_name, board_version"),
    ("eth_firmware: {eth0: [x, [y]]}\n", "eth_firmware.eth0: must be a version string"),
    ("driver_version: {a: 1}\n", "driver_version: must be a version string"),
    ("severity: fatal\ndriver_version: '1'\n", "severity: 'fatal'"),
    ("schema: gpunode.golden/2\n", "schema: 'gpunode.golden/2'"),
    ("recorded: {host: x}\n", "pins nothing"),
    ("[1, 2]\n", "must be a mapping"),
    ("driver_version: [unclosed\n", "not valid YAML"),
])
def test_bad_golden_files(tmp_path, text, message):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        load_golden(path)
    assert str(info.value).startswith(f"{path}:") and message in str(info.value)  # file[:line]: ...


def test_record_then_check_round_trips(tmp_path):
    h = host(tmp_path)
    facts, notes = collect(h)
    assert notes == []
    assert facts == {
        "driver_version": "580.159.04", "cuda_driver_version": "13.0", "vbios": "96.00.DA.00.0C", "gpu_count": 1,
        "kernel_release": "6.1.0-28-amd64", "os": {"pretty_name": "Debian GNU/Linux 12 (bookworm)", "version_id": "12"},
        "nccl_version": "2.28.9", "fabric_manager_version": "580.159.04",
        "nic_firmware": {"mlx5_0": "28.39.1002", "mlx5_1": "28.39.1002"},
        "eth_firmware": {"eth0": "28.39.1002 (MT_0000000838)"},
        "bios": {"bios_version": "2.1.1", "bios_date": "03/14/2024"},
        "platform": {"product_name": "SYS-821GE-TNHR", "board_name": "X13DEG-OAD"},
        "bmc_firmware": "3.44",
    }
    path = tmp_path / "golden.yaml"
    path.write_text(golden_yaml(facts, "testhost", "2026-11-23T00:00:00+00:00", "live"))
    assert set(statuses(run_golden(path, h))) == {"PASS"}


def test_record_leaves_out_what_cannot_be_read(tmp_path):
    h = tree_host(tmp_path, files={"/proc/sys/kernel/osrelease": "6.1.0\n"}, runner=ReplayRunner())
    facts, notes = collect(h)
    assert facts == {"kernel_release": "6.1.0"}
    assert any("GPU facts left out: no NVIDIA driver/NVML (test)" in n for n in notes)
    assert any(n.startswith("nccl_version left out") for n in notes)
    assert any("fabric_manager_version left out: nv-fabricmanager: not recorded" in n for n in notes)


def test_record_notes_every_fact_it_leaves_out_in_order(tmp_path):
    facts, notes = collect(tree_host(tmp_path, runner=ReplayRunner()))
    assert facts == {}
    assert notes == [
        "GPU facts left out: no NVIDIA driver/NVML (test)",
        "kernel_release left out: /proc/sys/kernel/osrelease unreadable",
        "os left out: no readable os-release",
        "nccl_version left out: no NCCL library, nccl.h or NCCL wheel found",
        "fabric_manager_version left out: nv-fabricmanager: not recorded in this snapshot",
        "nic_firmware left out: no /sys/class/infiniband/*/fw_ver",
        "bios left out: no readable /sys/class/dmi/id/{bios_version,bios_date,bios_vendor}",
        "platform left out: no readable /sys/class/dmi/id/{product_name,board_vendor,board_name,board_version}",
        "bmc_firmware left out: ipmitool: not recorded in this snapshot",
        "eth_firmware left out: no NIC with a device",
    ]


class HungGpu:
    """NVML that never answers."""

    def inventory(self, timeout=None):
        raise TimeoutError(f"NVML did not answer within {timeout:.1f}s")


def test_record_leaves_out_gpu_facts_when_nvml_hangs_and_says_why_for_a_nic(tmp_path):
    h = replace(host(tmp_path, runner=ReplayRunner()), gpu=HungGpu())
    facts, notes = collect(h)
    assert not {"driver_version", "cuda_driver_version", "vbios", "gpu_count", "eth_firmware"} & set(facts)
    assert facts["kernel_release"] == "6.1.0-28-amd64" and facts["nccl_version"] == "2.28.9"
    assert notes[0].startswith("GPU facts left out: NVML did not answer within ")
    assert notes[-1] == "eth_firmware left out: ethtool: not recorded in this snapshot"


def test_nccl_sources():
    assert header_version(NCCL_H) == "2.28.9"
    assert header_version("#define NCCL_MAJOR 2\n#define NCCL_MINOR 28\n") is None  # truncated header
    assert header_version("") is None


def test_nccl_versions_from_file_names_only(tmp_path):
    h = tree_host(tmp_path, files={
        "/usr/lib/x86_64-linux-gnu/libnccl.so.2": "",  # the soname link alone tells no full version
        "/usr/local/nccl2/lib/libnccl.so.2.21.5": "",
        "/usr/local/lib/python3.11/site-packages/nvidia_nccl_cu12-2.26.2.post1.dist-info/RECORD": "",
    })
    assert nccl_installs(h.sys) == [
        ("/usr/local/nccl2/lib/libnccl.so.2.21.5", "2.21.5"),
        ("/usr/local/lib/python3.11/site-packages/nvidia_nccl_cu12-2.26.2.post1.dist-info", "2.26.2"),
    ]


def test_cli_golden_record_and_audit_on_this_host(tmp_path):
    """For real on this machine (no GPU here): record, then audit --golden passes the facts it
    recorded; a changed kernel pin is a WARN (exit 1), critical makes it FAIL (exit 2)."""
    runner = CliRunner()
    out = tmp_path / "golden.yaml"
    rec = runner.invoke(app, ["golden", "record", "-o", str(out)])
    assert rec.exit_code == 0, rec.output
    data = yaml.safe_load(out.read_text())
    assert data["kernel_release"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert data["schema"] == "gpunode.golden/1" and data["severity"] == "warning"
    audit = runner.invoke(app, ["audit", "--only", "golden.*", "--golden", str(out), "--json"])
    doc = json.loads(audit.stdout)
    golden = [c for c in doc["checks"] if c["id"].startswith("golden.")]
    assert golden and {c["status"] for c in golden} == {"PASS"}, golden
    assert audit.exit_code == 0
    data["kernel_release"] = "0.0.1-other"
    out.write_text(yaml.safe_dump(data))
    assert runner.invoke(app, ["audit", "--only", "golden.*", "--golden", str(out)]).exit_code == 1
    data["severity"] = "critical"
    out.write_text(yaml.safe_dump(data))
    assert runner.invoke(app, ["audit", "--only", "golden.*", "--golden", str(out)]).exit_code == 2
    again = runner.invoke(app, ["golden", "record", "-o", str(out)])
    assert again.exit_code == 3 and "exists" in again.stderr


def test_cli_golden_record_from_a_snapshot(tmp_path):
    snap = tmp_path / "snap"
    (snap / "files" / "proc" / "sys" / "kernel").mkdir(parents=True)
    (snap / "files" / "proc" / "sys" / "kernel" / "osrelease").write_text("6.1.0-28-amd64\n")
    (snap / "files" / "etc").mkdir()
    (snap / "files" / "etc" / "os-release").write_text(OS_RELEASE)
    (snap / "gpus.json").write_text((FIXTURES / "nvml" / "h100-sxm-1gpu.json").read_text())
    (snap / "commands.json").write_text(json.dumps([{"argv": ["nv-fabricmanager", "--version"], "rc": 0,
                                                     "stdout": FM_OUTPUT, "stderr": "", "duration_s": 0.01,
                                                     "timed_out": False, "error": None}]))
    (snap / "meta.json").write_text(json.dumps({"schema": "gpunode.snapshot/1",
                                                "facts": {"is_root": True, "hostname": "h100-vm", "now": 1795478400.0}}))
    result = CliRunner().invoke(app, ["golden", "record", "--snapshot", str(snap), "-o", "-"])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["recorded"] == {"host": "h100-vm", "time": iso_time(1795478400.0), "source": f"snapshot:{snap}"}
    assert (data["driver_version"], data["vbios"], data["gpu_count"], data["fabric_manager_version"]) == (
        "580.159.04", "96.00.DA.00.0C", 1, "580.159.04")
    golden = tmp_path / "golden.yaml"
    golden.write_text(result.stdout)
    audit = CliRunner().invoke(app, ["audit", "--snapshot", str(snap), "--only", "golden.*", "--golden", str(golden)])
    assert audit.exit_code == 0, audit.output


def test_cli_bad_golden_file_is_exit_2(tmp_path):
    bad = tmp_path / "g.yaml"
    bad.write_text("gpu_count: many\n")
    result = CliRunner().invoke(app, ["audit", "--only", "golden.*", "--golden", str(bad)])
    assert result.exit_code == 3
    assert result.stderr.strip() == f"gpunode: error: {bad}: gpu_count: must be a whole number (got 'many')"
