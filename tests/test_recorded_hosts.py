"""Audits of the real snapshots recorded on the lent H100 and H200, and misconfigured
variants derived from them: what a support bundle shows must match the live audit there."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.ids import current_id, normalise
from testkit import HOSTS, derive_snapshot

cli = CliRunner()
DEVICE = Path(__file__).parent / "fixtures/device"
REAL = ["h100-sxm-1gpu", "h200-1gpu"]


def audit(path, *args):
    result = cli.invoke(app, ["audit", "--snapshot", str(path), "--json", *args])
    return result.exit_code, json.loads(result.stdout)


def by_id(doc):
    return {(c["id"], c["subject"]): c for c in doc["checks"]}


# Judged differently since the device recording, on purpose (issue 12): both VMs mount a 128 GiB
# /dev/shm on 125.9 GiB of RAM, and have no IOMMU (SWIOTLB), so iommu=pt is not applicable there.
JUDGED_SINCE = {("memory.shm", None): "WARN", ("cmdline.iommu", None): "SKIP"}
# Checks and settings added since: the NICs' qdiscs (tc was not recorded then: SKIP), slurmd's
# LimitMEMLOCK (no systemd on the VMs: SKIP).
NEW_SINCE = {("net.qdisc", None), ("unit.slurmd.LimitMEMLOCK", None),
             # GB200/GB300 trays only (issue 20, item 9): SKIP here, every other result as recorded
             ("nvlink.imex.config", None), ("nvlink.imex.domain", None), ("service.nvidia-imex", None),
             # the wiring checks (topology): SKIP on these VMs (no NIC, NVMe or gres.conf recorded)
             ("topology.link", None), ("topology.gpu_nic", None), ("topology.acs", None),
             ("topology.nic_share", None), ("topology.gres", None),
             # issue 24 items 1-3: no nccl.conf/TaskProlog, no RDMA NIC, /proc/net/snmp not recorded: SKIP
             ("nccl.config.names", None), ("nccl.config.debug", None), ("roce.gid", None), ("roce.ecn", None),
             ("roce.pfc", None), ("roce.loss", None), ("net.tcp_retransmits", None), ("module.nvidia_peermem", None),
             # issue 24 items 4-6: no container engine, GDS, NFS or md RAID on the VMs, no cpuidle/EPP/turbo
             # knobs recorded: SKIP; MPS not running and no GPU in exclusive-process mode: PASS
             ("containers.toolkit", None), ("containers.runtime", None), ("containers.cdi", None),
             ("containers.docker.config", None), ("containers.enroot", None), ("containers.pyxis", None),
             ("mps.daemon", None), ("gds.nvidia_fs", None), ("gds.cufile", None), ("gds.gdscheck", None),
             ("storage.nfs", None), ("cpu.cstates", None), ("sysfs.cpu.epp", None), ("sysfs.cpu.no_turbo", None),
             ("sysfs.cpu.boost", None), ("sysfs.md.read_ahead_kb", None), ("json.docker.default-shm-size", None),
             ("json.docker.default-ulimits.memlock", None),
             # issue 24 rows 24 and 57: no isolation on the VMs' command lines: PASS; no Lustre mount: SKIP
             ("cpu.isolation", None), ("storage.lustre", None)}


@pytest.mark.parametrize("name, live", [("h100-sxm-1gpu", "audit-h100.json"), ("h200-1gpu", "audit-h200.json")])
def test_replay_matches_the_live_audit_recorded_on_the_device(name, live):
    code, doc = audit(HOSTS / name)
    recorded = json.loads((DEVICE / live).read_text())
    assert code == recorded["exit_code"] == 1  # tunables off profile, hardware healthy
    replayed = {(c["id"], c["subject"]): c["status"] for c in doc["checks"]}
    original = {(current_id(normalise(c["id"])), c["subject"]): c["status"]  # recorded: old kind/key and gpu.pcie ids
                for c in recorded["checks"]}
    for key, status in JUDGED_SINCE.items():
        assert original[key] != status and replayed[key] == status, key
        original[key] = status
    assert {k for k in replayed if k not in original} == NEW_SINCE
    assert {k: v for k, v in replayed.items() if k not in NEW_SINCE} == original
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
        ({"gpu": {"pcie_width_current": 8}}, "pcie.link", "FAIL"),
        ({"gpu": {"clock_event_reasons": 0x8 | 0x40}}, "gpu.throttle", "FAIL"),
        ({"gpu": {"persistence_mode": False}}, "gpu.persistence_mode", "WARN"),
        ({"gpu": {"mig_mode_current": True, "mig_mode_pending": True}}, "gpu.mig_mode", "FAIL"),
        ({"files": {"/sys/kernel/mm/transparent_hugepage/enabled": "[always] madvise never\n"}}, "sysfs.thp.enabled", "PASS"),
        ({"files": {"/proc/sys/vm/swappiness": "10\n"}}, "sysctl.vm.swappiness", "PASS"),
        ({"files": {"/proc/sys/kernel/numa_balancing": "1\n"}}, "sysctl.kernel.numa_balancing", "WARN"),
        # bare metal with an IOMMU and GRUB: iommu=pt is what the profile wants and it is missing
        ({"files": {"/proc/sys/kernel/arch": "x86_64\n", "/sys/kernel/iommu_groups/0/type": "DMA\n",
                    "/etc/default/grub": 'GRUB_CMDLINE_LINUX=""\n'}}, "cmdline.iommu", "WARN"),
        # nvidia-smi -lgc: the driver reports the user-defined clocks event reason
        ({"gpu": {"clock_event_reasons": 0x1 | 0x2}}, "gpu.clocks", "WARN"),
        # nvidia-smi -lmc: HBM below its maximum in P0
        ({"gpu": {"mem_clock_mhz": 1593}}, "gpu.clocks", "WARN"),
        # the driver says the GPU needs a reset
        ({"gpu": {"recovery_action": 1}}, "gpu.xid", "FAIL"),
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
    assert {"gpu.nvml", "gpu.count", "gpu.ecc.uncorrectable", "gpu.memory.remap", "gpu.xid", "pcie.link",
            "gpu.persistence_mode", "storage.scratch_space"} <= ids
    assert code == 0


@pytest.mark.parametrize("name", REAL)
def test_iommu_pt_skips_with_why_on_the_vms_and_on_arm64(tmp_path, name):
    doc = by_id(audit(HOSTS / name, "--only", "cmdline.iommu")[1])
    assert "no IOMMU translates DMA here" in doc[("cmdline.iommu", None)]["message"]
    arm = derive_snapshot(name, tmp_path / "arm", files={"/proc/sys/kernel/arch": "aarch64\n",
                                                          "/sys/kernel/iommu_groups/0/type": "DMA\n"})
    r = by_id(audit(arm, "--only", "cmdline.iommu")[1])[("cmdline.iommu", None)]
    assert r["status"] == "SKIP" and "this kernel is aarch64; its counterpart there is iommu.passthrough=1" in r["message"]


def with_xids(name, dest, lines, **gpu):
    """The recorded snapshot with `lines` (seconds after the driver loaded, text) added to its dmesg."""
    from datetime import datetime, timezone

    recorded = json.loads((HOSTS / name / "commands.json").read_text())
    dmesg = next(c for c in recorded if c["argv"][0] == "dmesg")
    stamp = next(line.split()[0] for line in dmesg["stdout"].splitlines() if "NVRM: loading" in line)
    loaded = datetime.fromisoformat(stamp.replace(",", ".")).timestamp()
    extra = "".join(f"{datetime.fromtimestamp(loaded + dt, timezone.utc).strftime('%Y-%m-%dT%H:%M:%S,%f+00:00')} "
                    f"{text}\n" for dt, text in lines)
    return derive_snapshot(name, dest, gpu=gpu, commands={tuple(dmesg["argv"]): {"stdout": dmesg["stdout"] + extra}})


XID48 = "NVRM: Xid (PCI:0000:00:06): 48, An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer"
XID154 = "NVRM: Xid (PCI:0000:00:06): 154, GPU recovery action changed from 0x0 (None) to 0x1 (GPU Reset Required)"


@pytest.mark.parametrize("name", REAL)
def test_xid_before_a_reset_warns_after_it_fails(tmp_path, name):
    # The driver asked for a reset and NVML says none is pending any more: the operator reset it.
    done = with_xids(name, tmp_path / "done", [(10, XID48), (10, XID154)], recovery_action=0)
    code, doc = audit(done, "--only", "gpu.xid")
    r = by_id(doc)[("gpu.xid", "GPU0")]
    assert code == 1 and r["status"] == "WARN" and "dealt with" in r["message"]
    # The same log with the reset still pending (or a recording without NVML's answer): FAIL.
    for dest, action in (("pending", 1), ("unknown", None)):
        code, doc = audit(with_xids(name, tmp_path / dest, [(10, XID48), (10, XID154)], recovery_action=action),
                          "--only", "gpu.xid")
        assert code == 2 and by_id(doc)[("gpu.xid", "GPU0")]["status"] == "FAIL"


@pytest.mark.parametrize("name", REAL)
def test_shm_above_ram_warns_and_within_ram_passes(tmp_path, name):
    r = by_id(audit(HOSTS / name, "--only", "memory.shm")[1])[("memory.shm", None)]
    assert r["status"] == "WARN" and r["message"].startswith("128.0 GiB of 125.9 GiB RAM: larger than RAM")
    mounts = (HOSTS / name / "files/proc/mounts").read_text().replace("size=134217728k", "size=50%")
    fixed = derive_snapshot(name, tmp_path / "fixed", files={"/proc/mounts": mounts})
    r = by_id(audit(fixed, "--only", "memory.shm")[1])[("memory.shm", None)]
    assert r["status"] == "PASS" and r["message"] == "62.9 GiB of 125.9 GiB RAM"


def test_the_new_nvml_fields_and_facts_on_the_real_h200():
    """The snapshot the kinds evidence run recorded on the lent H200 (2026-12-01) after the fields
    were added: NVML answered the recovery action (0, none) and the supported clock event reasons
    (0x1FF, the user-defined clocks bit among them); /sys/kernel/iommu_groups was empty; no tc."""
    name = "h200-1gpu-capabilities"
    gpu = json.loads((HOSTS / name / "gpus.json").read_text())["gpus"][0]
    assert gpu["recovery_action"] == 0 and gpu["clock_event_reasons_supported"] == 0x1FF and not gpu["field_errors"]
    code, doc = audit(HOSTS / name, "--only", "gpu.clocks,gpu.xid,cmdline.iommu,net.qdisc")
    found = by_id(doc)
    assert found[("gpu.clocks", "GPU0")]["status"] == "PASS" and "; no locked clocks;" in found[("gpu.clocks", "GPU0")]["message"]
    assert found[("gpu.xid", "GPU0")]["observed"] == {"recovery_action": 0}
    assert found[("cmdline.iommu", None)]["status"] == "SKIP" and "no IOMMU" in found[("cmdline.iommu", None)]["message"]
    assert found[("net.qdisc", None)]["message"] == "cannot see the interfaces' qdiscs: tc: command not found"
    assert code == 0
