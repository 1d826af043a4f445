"""GB200/GB300 NVL compute trays (issue 20, item 9): no Fabric Manager requirement there (it runs
on the NVLink switch trays); the nvidia-imex service, its node list and its domain state are
judged instead. HGX hosts keep their Fabric Manager requirement and never see the IMEX checks.
The IMEX outputs are built from documented ones (tests/fixtures/imex/README.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest
from gate_fixtures import h100_inventory, kernel_log_commands, write_snapshot
from gpu_fixtures import hgx, make_host, nvlinks, only

from gpunode.audit.context import AuditContext
from gpunode.checks import nvlink as N
from gpunode.checks.settings import setting_checks
from gpunode.config import Config
from gpunode.host.facts.imex import nodes_config_path, parse_imex_ctl, parse_nodes_config
from gpunode.host.facts.nvswitch import has_nvswitch, is_nvl_tray
from gpunode.host.runner import ReplayRunner
from gpunode.tune.profiles import load_profile
from testkit import FIXTURES, HOSTS, run

IMEX = FIXTURES / "imex"
GB200_DEVICE_ID = 0x294110DE  # NVML's pci.pciDeviceId: device 0x2941, vendor 0x10de
CTL = ["nvidia-imex-ctl", "-N"]
FM, IMEX_SERVICE = "service.nvidia-fabricmanager", "service.nvidia-imex"
NEW_IDS = ("nvlink.imex.config", "nvlink.imex.domain", IMEX_SERVICE)


def text(name: str) -> str:
    return (IMEX / name).read_text()


def systemctl(unit: str) -> list[str]:
    return ["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "UnitFileState", unit]


def unit(load: str, active: str) -> str:
    return f"LoadState={load}\nActiveState={active}\nUnitFileState=enabled\n"


def tray_inventory():
    """4 GB200 GPUs of one compute tray: in a fabric, 18 NVLink 5 links each, no local switch."""
    inv = hgx(4)
    gpus = [replace(g, name="NVIDIA GB200", pci_device_id=GB200_DEVICE_ID, nvlinks=nvlinks(version=5))
            for g in inv.gpus]
    return replace(inv, gpus=gpus)


def tray_runner(ctl: str | None = "ctl-N-up-18.txt", imex_active: str = "active", **ctl_kw) -> ReplayRunner:
    runner = ReplayRunner()
    runner.add(systemctl("nvidia-imex"), stdout=unit("loaded", imex_active))
    runner.add(systemctl("nvidia-fabricmanager"), stdout=unit("not-found", "inactive"))  # not installed on trays
    if ctl is not None:
        runner.add(CTL, stdout=text(ctl), **ctl_kw)
    return runner


def tray_host(tmp_path, nodes: str | None = "nodes_config.cfg", runner=None, files=None):
    all_files = {"/etc/nvidia-imex/config.cfg": text("config.cfg"), "/run/systemd/system/.keep": ""}
    if nodes is not None:
        all_files["/etc/nvidia-imex/nodes_config.cfg"] = text(nodes)
    all_files.update(files or {})
    return make_host(tmp_path, tray_inventory(), files=all_files, runner=runner or tray_runner())


def hgx_host(tmp_path, fm_active="active"):
    runner = ReplayRunner()
    runner.add(systemctl("nvidia-fabricmanager"), stdout=unit("loaded", fm_active))
    runner.add(systemctl("nvidia-imex"), stdout=unit("not-found", "inactive"))
    return make_host(tmp_path, hgx(), files={"/dev/nvidia-nvswitch0": "", "/run/systemd/system/.keep": ""},
                     runner=runner)


def setting(id_: str):
    return next(c for c in setting_checks(load_profile("training")) if c.id == id_)


def ctx_of(host):
    return AuditContext(host=host, profile=load_profile("training"), config=Config())


def _tray(ctx) -> bool:
    return is_nvl_tray(ctx.host.sys, ctx.inventory().gpus)


# --- parsers, on the documented outputs -------------------------------------------------------


def test_parse_a_documented_up_domain():
    d = parse_imex_ctl(text("ctl-N-up-18.txt"))
    assert d.state == "UP" and len(d.nodes) == 18 and not d.not_ready and not d.not_connected
    assert d.nodes[17].address == "10.1.2.27" and d.nodes[0].version == "580.95.05"


def test_parse_degraded_down_and_mismatched_domains():
    d = parse_imex_ctl(text("ctl-N-degraded.txt"))
    assert d.state == "DEGRADED" and [n.index for n in d.not_ready] == [5]
    assert (5, 0, "I") in d.not_connected and (0, 5, "I") in d.not_connected and len(d.not_connected) == 35
    assert parse_imex_ctl(text("ctl-N-down.txt")).state == "DOWN"
    m = parse_imex_ctl(text("ctl-N-map-mismatch.txt"))
    assert m.state == "UP" and {code for *_, code in m.not_connected} == {"!M!"}


@pytest.mark.parametrize("bad", [
    text("ctl-N-truncated.txt"), "", "Failed to connect to IMEX daemon\n", "Domain State: SIDEWAYS\n",
    text("ctl-N-up-18.txt").replace("      3        C", "      x        C"),
])
def test_a_cut_failed_or_odd_output_is_never_a_domain(bad):
    with pytest.raises(ValueError):
        parse_imex_ctl(bad)


def test_parse_node_lists():
    ok = parse_nodes_config("# rack 7\n" + text("nodes_config.cfg") + "\n\n")
    assert len(ok.addresses) == 18 and not ok.invalid and not ok.duplicates
    assert parse_nodes_config(text("nodes_config-hostnames.cfg")).invalid == ["gb200-tray01", "gb200-tray02"]
    assert parse_nodes_config(text("nodes_config-duplicate.cfg")).duplicates == ["10.1.0.10"]
    assert nodes_config_path(text("config.cfg")) == "/etc/nvidia-imex/nodes_config.cfg"
    assert nodes_config_path("IMEX_NODE_CONFIG_FILE=/srv/imex/nodes.cfg\n") == "/srv/imex/nodes.cfg"
    assert nodes_config_path(None) == "/etc/nvidia-imex/nodes_config.cfg"


# --- which platform needs what ----------------------------------------------------------------


def test_a_tray_is_on_a_fabric_but_runs_no_fabric_manager(tmp_path):
    ctx = ctx_of(tray_host(tmp_path))
    assert has_nvswitch(ctx.host.sys, ctx.inventory().gpus) and is_nvl_tray(ctx.host.sys, ctx.inventory().gpus)
    fm = only(run(setting(FM), ctx.host))
    assert fm.status.value == "SKIP" and "Fabric Manager runs on the NVLink switch trays" in fm.message


def test_hgx_keeps_its_fabric_manager_and_never_needs_imex(tmp_path):
    host = hgx_host(tmp_path, fm_active="inactive")
    assert not _tray(ctx_of(host))
    assert only(run(setting(FM), host)).status.value == "FAIL"
    assert only(run(setting(FM), hgx_host(tmp_path / "b"))).status.value == "PASS"
    for check in (setting(IMEX_SERVICE), N.imex_config, N.imex_domain):
        r = only(run(check, host))
        assert r.status.value == "SKIP" and "not a GB200/GB300 NVL compute tray" in r.message


def test_b200_hgx_and_a_gb200_without_fabric_are_not_trays(tmp_path):
    b200 = replace(hgx(), gpus=[replace(g, name="NVIDIA B200") for g in hgx().gpus])
    assert not _tray(ctx_of(make_host(tmp_path / "a", b200)))
    nvl4 = replace(tray_inventory(), gpus=[replace(g, fabric_state="not_supported") for g in tray_inventory().gpus])
    assert not _tray(ctx_of(make_host(tmp_path / "b", nvl4)))
    switched = tray_host(tmp_path / "c", files={"/dev/nvidia-nvswitch0": ""})  # a local switch: HGX-like
    assert not _tray(ctx_of(switched))


# --- the IMEX checks on a tray ----------------------------------------------------------------


def test_imex_service_is_required_on_a_tray(tmp_path):
    assert only(run(setting(IMEX_SERVICE), tray_host(tmp_path))).status.value == "PASS"
    r = only(run(setting(IMEX_SERVICE), tray_host(tmp_path / "b", runner=tray_runner(imex_active="failed"))))
    assert r.status.value == "FAIL" and r.severity == "critical" and "gate" in r.tags


@pytest.mark.parametrize("nodes, status, words", [
    ("nodes_config.cfg", "PASS", "18 nodes in /etc/nvidia-imex/nodes_config.cfg"),
    (None, "FAIL", "missing or unreadable"),
    ("nodes_config-hostnames.cfg", "FAIL", "not an IP address: gb200-tray01"),
    ("nodes_config-duplicate.cfg", "FAIL", "listed twice: 10.1.0.10"),
])
def test_imex_node_list(tmp_path, nodes, status, words):
    r = only(run(N.imex_config, tray_host(tmp_path, nodes=nodes)))
    assert r.status.value == status and words in r.message


def test_imex_node_list_empty_or_relative(tmp_path):
    empty = tray_host(tmp_path, files={"/etc/nvidia-imex/nodes_config.cfg": "# none yet\n"})
    assert "lists no node" in only(run(N.imex_config, empty)).message
    relative = tray_host(tmp_path / "b", files={"/etc/nvidia-imex/config.cfg": "IMEX_NODE_CONFIG_FILE=nodes.cfg\n"})
    r = only(run(N.imex_config, relative))
    assert r.status.value == "FAIL" and "is not an absolute path" in r.message


@pytest.mark.parametrize("ctl, status, words", [
    ("ctl-N-up-18.txt", "PASS", "IMEX domain UP: 18 nodes READY, all connected"),
    ("ctl-N-degraded.txt", "WARN", "IMEX domain DEGRADED: 10.1.0.15 UNAVAILABLE"),
    ("ctl-N-map-mismatch.txt", "WARN", "IMEX domain UP: 0->17 !M!, 1->17 !M!"),
    ("ctl-N-down.txt", "FAIL", "IMEX domain DOWN"),
    ("ctl-N-truncated.txt", "ERROR", "no 'Domain State:' line"),
])
def test_imex_domain_state(tmp_path, ctl, status, words):
    r = only(run(N.imex_domain, tray_host(tmp_path, runner=tray_runner(ctl))))
    assert r.status.value == status and words in r.message


def test_imex_domain_without_the_tool_skips_with_why_and_a_hang_is_an_error(tmp_path):
    r = only(run(N.imex_domain, tray_host(tmp_path, runner=tray_runner(None))))
    assert r.status.value == "SKIP" and "nvidia-imex-ctl" in r.message and "not checked" in r.message
    hung = tray_runner("ctl-N-truncated.txt", timed_out=True, rc=-9)
    r = only(run(N.imex_domain, tray_host(tmp_path / "b", runner=hung)))
    assert r.status.value == "ERROR" and "gave no answer within 3s" in r.message
    failed = tray_runner("ctl-N-truncated.txt", rc=1, stderr="connection refused\n")
    r = only(run(N.imex_domain, tray_host(tmp_path / "c", runner=failed)))
    assert r.status.value == "ERROR" and "exit 1: connection refused" in r.message


# --- the gate on a tray snapshot, and the recorded hosts unchanged -----------------------------


def tray_snapshot(dest, imex_active="active"):
    inv = h100_inventory(4)
    for g in inv["gpus"]:
        g.update(name="NVIDIA GB200", pci_device_id=GB200_DEVICE_ID, fabric_state="completed",
                 fabric_status="success",
                 nvlinks=[{"link": i, "active": True, "version": 5} for i in range(18)])
    commands = kernel_log_commands() + [
        {"argv": argv, "rc": 0, "stdout": out, "stderr": "", "duration_s": 0.01, "timed_out": False, "error": None}
        for argv, out in ((systemctl("nvidia-imex"), unit("loaded", imex_active)),
                          (systemctl("nvidia-fabricmanager"), unit("not-found", "inactive")),
                          (CTL, text("ctl-N-up-18.txt")))]
    files = {"/etc/nvidia-imex/config.cfg": text("config.cfg"),
             "/etc/nvidia-imex/nodes_config.cfg": text("nodes_config.cfg")}
    return write_snapshot(dest, inv, files=files, commands=commands, hostname="gb200-tray01")


def gate(snapshot, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    r = subprocess.run([sys.executable, "-m", "gpunode", "gate", "--snapshot", str(snapshot), "--json", *args],
                       capture_output=True, text=True, timeout=60, env=env)
    return r, json.loads(r.stdout)


def test_the_gate_passes_a_healthy_tray_and_fails_one_whose_imex_is_down(tmp_path):
    r, doc = gate(tray_snapshot(tmp_path / "ok"))
    ran = {c["id"]: c["status"] for c in doc["checks"]}
    assert r.returncode == 0 and doc["status"] == "OK", doc["checks"]
    assert ran[FM] == "SKIP" and ran[IMEX_SERVICE] == ran["nvlink.imex.config"] == ran["nvlink.imex.domain"] == "PASS"
    r, doc = gate(tray_snapshot(tmp_path / "bad", imex_active="failed"))
    assert r.returncode == 2 and doc["reason"].startswith(f"gpunode: {IMEX_SERVICE}")


# What f080ef3 gave on the recorded hosts for the checks this work touches (gpunode audit --json).
BEFORE = {
    "nvlink.state": ("SKIP", "no NVLink on these GPUs (PCIe-only GPUs or a VM)"),
    "nvlink.errors": ("SKIP", "no NVLink on these GPUs (PCIe-only GPUs or a VM)"),
    "nvlink.fabric": ("SKIP", "no NVSwitch on this host"),
    FM: ("SKIP", "not applicable here: no NVSwitch on this host"),
}


@pytest.mark.parametrize("name", ["h100-sxm-1gpu", "h200-1gpu", "h200-1gpu-capabilities"])
def test_recorded_hosts_judge_fabric_and_nvlink_as_before(name):
    from typer.testing import CliRunner

    from gpunode.cli import app

    doc = json.loads(CliRunner().invoke(app, ["audit", "--snapshot", str(HOSTS / name), "--json"]).stdout)
    got = {c["id"]: (c["status"], c["message"]) for c in doc["checks"]}
    assert {k: got[k] for k in BEFORE} == BEFORE
    assert all(got[k][0] == "SKIP" and "GB200/GB300" in got[k][1] for k in NEW_IDS)


def test_hgx_derived_from_the_recorded_h100_judges_as_before(tmp_path):
    """8 GPUs, NVSwitch device nodes, completed fabric: Fabric Manager required, as on f080ef3."""
    host = hgx_host(tmp_path)
    assert only(run(setting(FM), host)).status.value == "PASS"
    assert {r.status.value for r in run(N.fabric, host)} == {"PASS"}
    assert {r.status.value for r in run(N.nvlink_state, host)} == {"PASS"}
