"""A selection never shrinks silently (issue 20, item 2): a pattern, tag or area that matches
nothing is one `gpunode: error:` line naming it; old `kind/key` ids name settings only, never the
hand-written checks; a gate-tagged check a skip takes out is named on a line of its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from test_schemas import validate
from typer.testing import CliRunner

from gpunode.audit.engine import Check, ok
from gpunode.cli import app
from gpunode.exits import USAGE_EXIT
from testkit import HOSTS

cli = CliRunner()
H100 = str(HOSTS / "h100-sxm-1gpu")
# What an old `--skip 'gpu/*'` turned off before: GPU health proper, not GPU settings.
GPU_HEALTH = {"gpu.nvml", "gpu.count", "gpu.ecc.uncorrectable", "gpu.xid", "pcie.link"}


def gpunode(*args, config=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    if config is not None:
        env["GPUNODE_CONFIG"] = str(config)
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=60,
                          env=env)


def one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunode: error: "), stderr
    return lines[0]


@pytest.mark.parametrize("args, named", [
    (["--only", "gpu.eccc"], "--only 'gpu.eccc'"),               # a typo once selected nothing, exit 0
    (["--only", "gpu.*,nosuch.*"], "--only 'nosuch.*'"),        # one dead part of a list is enough
    (["--skip", "gpu.ecc.uncorected"], "--skip 'gpu.ecc.uncorected'"),
    (["--tag", "nosuch"], "--tag 'nosuch'"),
    (["--area", "gpus"], "--area 'gpus'"),
    (["--skip-area", "nett"], "--skip-area 'nett'"),
    (["--only", "net.*", "--skip", "gpu/nosuch"], "--skip 'gpu/nosuch'"),
])
def test_audit_refuses_a_selection_part_that_matches_nothing(args, named):
    r = cli.invoke(app, ["audit", "--snapshot", H100, *args])
    assert r.exit_code == USAGE_EXIT, r.output
    line = one_error_line(r.stderr)
    assert named in line
    assert "gpunode checks" in line or "there are: " in line  # where to see what exists


def test_the_error_lists_what_exists_and_suggests_the_near_id():
    line = one_error_line(cli.invoke(app, ["audit", "--snapshot", H100, "--tag", "gaet"]).stderr)
    assert "there are: gate, profile" in line
    line = one_error_line(cli.invoke(app, ["audit", "--snapshot", H100, "--area", "gpus"]).stderr)
    assert "gpu, " in line and "nvlink" in line
    line = one_error_line(cli.invoke(app, ["audit", "--snapshot", H100, "--only", "gpu.xdi"]).stderr)
    assert "did you mean gpu.xid?" in line


def test_checks_refuses_an_unknown_tag_and_lists_a_known_one():
    r = cli.invoke(app, ["checks", "--tag", "nosuch"])
    assert r.exit_code == USAGE_EXIT and "--tag 'nosuch'" in one_error_line(r.stderr)
    r = cli.invoke(app, ["checks", "--tag", "gate", "--json"])
    assert r.exit_code == 0 and "gpu.count" in r.stdout


def test_a_config_disable_checks_typo_is_an_error_in_the_audit(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("disable_checks: [gpu.clock]\n")
    r = cli.invoke(app, ["audit", "--snapshot", H100, "--config", str(config)])
    assert r.exit_code == USAGE_EXIT and "config disable_checks 'gpu.clock'" in one_error_line(r.stderr)


def test_old_setting_ids_never_take_out_gpu_health_on_a_node_with_1_of_8_gpus():
    """The issue's case: `--skip 'gpu/*'` once dropped NVML, count, ECC, Xid, PCIe: OK for 1 of 8 GPUs."""
    r = cli.invoke(app, ["audit", "--snapshot", H100, "--expected-gpus", "8", "--tag", "gate", "--skip", "gpu/*",
                         "--json"])
    doc = json.loads(r.stdout)
    ran = {c["id"]: c["status"] for c in doc["checks"]}
    assert GPU_HEALTH <= set(ran)
    assert ran["gpu.count"] == "FAIL" and doc["status"] == "FAIL" and r.exit_code == 2
    assert not {"gpu.ecc_mode", "gpu.persistence_mode"} & set(ran)  # the settings it names are skipped
    assert {e["id"] for e in doc["gate_checks_not_run"]} == {"gpu.ecc_mode", "gpu.persistence_mode"}
    validate(doc)  # docs/schemas/audit.schema.json names the field


def test_the_gate_with_an_old_disable_checks_pattern_still_fails_1_of_8_gpus(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("expected_gpus: 8\ndisable_checks: ['gpu/*', 'kernel.*']\n")  # kernel: not a gate module
    r = gpunode("gate", "--snapshot", H100, "--json", config=config)
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["status"] == "FAIL"
    assert GPU_HEALTH - {"gpu.nvml"} <= {c["id"] for c in doc["checks"]}
    assert {e["id"]: e["by"] for e in doc["gate_checks_not_run"]} == {
        "gpu.persistence_mode": "config disable_checks 'gpu/*'", "gpu.ecc_mode": "config disable_checks 'gpu/*'"}
    validate(doc)
    r = gpunode("gate", "--snapshot", H100, config=config)
    assert ("gate checks not run: gpu.persistence_mode, gpu.ecc_mode (config disable_checks 'gpu/*')"
            in r.stdout.splitlines())


def test_a_gate_disable_checks_typo_is_gpunodes_own_error_never_a_drain(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("disable_checks: [gpu.eccc]\n")
    r = gpunode("gate", "--snapshot", H100, config=config)
    assert r.returncode == USAGE_EXIT and "'gpu.eccc' matches no check" in one_error_line(r.stderr)
    r = gpunode("gate", "--prolog", "--snapshot", H100, config=config)
    assert r.returncode == 0 and "'gpu.eccc' matches no check" in one_error_line(r.stderr)


@pytest.mark.parametrize("fmt", ["plain", "table"])
def test_the_report_names_gate_checks_a_skip_took_out_on_a_line_of_their_own(fmt, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("disable_checks: [gpu.xid]\n")
    r = cli.invoke(app, ["audit", "--snapshot", H100, "--skip", "gpu.ecc.*", "--skip-area", "storage", "-f", fmt,
                         "--config", str(config)], env={"COLUMNS": "250"})
    lines = [line.strip() for line in r.stdout.splitlines()]
    line = next(line for line in lines if line.startswith("gate checks not run: "))
    assert "gpu.ecc.uncorrectable" in line and "(--skip 'gpu.ecc.*')" in line
    assert "gpu.xid (config disable_checks 'gpu.xid')" in line and "(--skip-area 'storage')" in line


def test_no_line_and_no_field_when_every_gate_check_runs():
    r = cli.invoke(app, ["audit", "--snapshot", H100, "--skip", "kernel.*", "--json"])
    assert "gate_checks_not_run" not in json.loads(r.stdout)
    r = cli.invoke(app, ["audit", "--snapshot", H100, "-f", "plain", "--skip", "kernel.*"])
    assert "gate checks not run" not in r.stdout


def _check(id, tags=(), area="gpu"):
    return Check(id, id, area, lambda ctx: ok(""), tags=frozenset(tags))


def test_selection_unit():
    from gpunode.audit.engine import selection

    count, ecc_mode, mtu = _check("gpu.count", ["gate"]), _check("gpu.ecc_mode", ["gate", "profile"]), \
        _check("net.mtu", area="net")
    every = [count, ecc_mode, mtu]
    s = selection(every, skip_ids=["gpu/*"])
    assert s.checks == [count, mtu] and s.gate_not_run == [("gpu.ecc_mode", "--skip 'gpu/*'")] and not s.unmatched
    assert selection(every, only=["gpu/*"]).checks == [ecc_mode]
    assert selection([count, mtu], only=["gpu/*"]).unmatched  # no GPU setting: an old id names nothing
    s = selection(every, disabled=["gpu.count"], skip_areas=["net"])
    assert s.checks == [ecc_mode] and s.gate_not_run == [("gpu.count", "config disable_checks 'gpu.count'")]
    s = selection(every, tags=["gate"], areas=["net"])  # each part matches something: no error
    assert s.checks == [] and not s.unmatched
    golden = _check("golden.os", area="golden")  # --golden adds checks: chosen by id patterns only
    s = selection(every, only=["golden.*"], added=[golden])
    assert s.checks == [golden] and not s.unmatched
    assert selection(every, tags=["gate"], added=[golden]).checks == [count, ecc_mode, golden]
    assert selection(every, skip_ids=["golden.os"], added=[golden]).checks == every
    assert selection(every, only=["golden.*"]).unmatched  # without --golden: nothing to match
    s = selection(every, only=["gpu.ecc"], tags=["nosuch"], areas=["x"], skip_areas=["y"])
    assert [m.split(" matches")[0] for m in s.unmatched] == ["--only 'gpu.ecc'", "--tag 'nosuch'", "--area 'x'",
                                                             "--skip-area 'y'"]
