"""playbooks/roles/gpunode from a site's own playbook, run by ansible-runner against localhost
(ansible_connection=local), the way a site would: a node that FAILs audit is a failed host, not
`ok`; WARN passes unless asked; apply is `changed` only when it changed something, and check
mode plans without changing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import fleetkit
import pytest
from gate_fixtures import h100_inventory, write_snapshot

from testkit import HOSTS

ROLES = Path(__file__).resolve().parent.parent / "playbooks" / "roles"


@pytest.fixture(autouse=True)
def ansible():
    fleetkit.require_ansible()


def play(tmp_path: Path, role_vars: dict, check: bool = False):
    import ansible_runner

    from gpunode.fleet.validate import ansible_env

    pdd = tmp_path / f"runner-{len(list(tmp_path.glob('runner-*')))}"
    (pdd / "project").mkdir(parents=True)
    (pdd / "project" / "site.yml").write_text(
        "- hosts: all\n  gather_facts: false\n  roles:\n    - role: gpunode\n      vars: "
        + json.dumps(role_vars) + "\n  tasks:\n    - name: a later task sees the report\n"
        "      ansible.builtin.debug:\n        msg: \"gpunode said {{ gpunode_result.schema }}\"\n")
    inventory = pdd / "inventory.ini"
    inventory.write_text(f"node1 ansible_connection=local ansible_python_interpreter={sys.executable}\n")
    result = ansible_runner.run(private_data_dir=str(pdd), playbook="site.yml", inventory=str(inventory),
                                envvars=ansible_env({"ANSIBLE_ROLES_PATH": str(ROLES),
                                                     "ANSIBLE_RETRY_FILES_ENABLED": "False"}),
                                cmdline="--check" if check else None, quiet=True, timeout=300)
    failures = [e for e in result.events if e.get("event") == "runner_on_failed"]
    return result, failures


def test_a_failing_node_is_a_failed_host(tmp_path):
    snap = write_snapshot(tmp_path / "failing", h100_inventory(1, remap_failure=True))
    result, failures = play(tmp_path, {"gpunode_bin": fleetkit.gpunode_bin(), "gpunode_args": ["--snapshot", str(snap)]})
    assert result.status == "failed" and result.stats["failures"] == {"node1": 1}
    msg = failures[-1]["event_data"]["res"]["msg"]
    assert msg.startswith("gpunode audit FAIL on node1 (exit 2):") and "gpu.memory.remap" in msg
    assert result.stats["changed"] == {}


def test_warn_passes_unless_asked_and_later_tasks_see_the_report(tmp_path):
    snap = HOSTS / "h100-sxm-1gpu"  # tunables off the profile: WARN (exit 1)
    common = {"gpunode_bin": fleetkit.gpunode_bin(), "gpunode_args": ["--snapshot", str(snap)]}
    result, _ = play(tmp_path, common)
    assert result.status == "successful" and result.stats["ok"] == {"node1": 4} and not result.stats["changed"]
    said = [e for e in result.events if e.get("event") == "runner_on_ok" and "gpunode said" in json.dumps(e)]
    assert said and "gpunode.audit/1" in json.dumps(said[0])
    result, failures = play(tmp_path, {**common, "gpunode_fail_on": [1, 2, 3]})
    assert result.status == "failed" and "sysctl.vm.swappiness" in failures[-1]["event_data"]["res"]["msg"]


def test_apply_is_changed_once_and_check_mode_only_plans(tmp_path):
    root, state = tmp_path / "root", tmp_path / "state"
    shutil.copytree(HOSTS / "h100-sxm-1gpu" / "files", root, symlinks=True)
    before = (root / "proc/sys/vm/swappiness").read_text()
    apply = {"gpunode_bin": fleetkit.gpunode_bin(), "gpunode_action": "apply", "gpunode_profile": "training",
             "gpunode_args": ["--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*"]}
    result, _ = play(tmp_path, apply, check=True)
    assert result.status == "successful" and result.stats["changed"] == {"node1": 1}  # would change
    assert (root / "proc/sys/vm/swappiness").read_text() == before
    result, _ = play(tmp_path, apply)
    assert result.status == "successful" and result.stats["changed"] == {"node1": 1}
    assert (root / "proc/sys/vm/swappiness").read_text().strip() == "10"
    result, _ = play(tmp_path, apply)
    assert result.status == "successful" and not result.stats["changed"]  # nothing left to change
    back = {**apply, "gpunode_action": "rollback", "gpunode_args": ["--sysroot", str(root), "--state-dir", str(state)]}
    result, _ = play(tmp_path, back)
    assert result.status == "successful" and result.stats["changed"] == {"node1": 1}
    assert (root / "proc/sys/vm/swappiness").read_text() == before


def test_a_missing_gpunode_fails_clearly(tmp_path):
    result, failures = play(tmp_path, {"gpunode_bin": str(tmp_path / "nope")})
    assert result.status == "failed" and failures


@pytest.mark.parametrize("target", ["playbooks", "playbooks/roles/gpunode"])
def test_ansible_lint_production_profile_is_clean(tmp_path, target):
    """ansible-lint's strictest profile on the shipped playbooks and on the role a site uses on
    its own: offline (no Galaxy), on a copy (its caches never land in the repo)."""
    import subprocess

    from testkit import require

    lint = Path(sys.executable).with_name("ansible-lint")
    require(lint.exists(), "ansible-lint not installed (pip install -e '.[dev]')")
    root = ROLES.parent.parent
    copy = tmp_path / "lint"
    shutil.copytree(root / "playbooks", copy / "playbooks", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([str(lint), "--offline", "--profile", "production", "--nocolor", target],
                          cwd=copy, capture_output=True, text=True, timeout=300,
                          env={"PATH": f"{lint.parent}:/usr/bin:/bin", "HOME": str(tmp_path),
                               "ANSIBLE_HOME": str(tmp_path / "ansible"), "NO_COLOR": "1"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Profile 'production' was required, and it passed" in proc.stdout + proc.stderr


def test_the_role_installs_the_watch_unit_when_asked(tmp_path):
    """gpunode_watch: true writes gpunode-watch.service rendered by the node's own gpunode (its
    Python, the site's args); enabling it is left out here (no systemd in the test)."""
    import os

    snap = HOSTS / "h100-sxm-1gpu"
    units = tmp_path / "units"
    units.mkdir()
    common = {"gpunode_bin": fleetkit.gpunode_bin(), "gpunode_args": ["--snapshot", str(snap)],
              "gpunode_watch_unit_dir": str(units), "gpunode_watch_enable": False}
    result, _ = play(tmp_path, common)
    assert result.status == "successful" and not (units / "gpunode-watch.service").exists()  # off by default
    if os.geteuid() != 0:
        pytest.skip("the unit is written root-owned: needs root")
    result, _ = play(tmp_path, {**common, "gpunode_watch": True, "gpunode_watch_args": ["--shadow", "--poll", "5"]})
    assert result.status == "successful", result.stats
    unit = (units / "gpunode-watch.service").read_text()
    assert "-m gpunode watch --state-dir /run/gpunode --poll 5 --shadow" in unit and "Type=notify" in unit
    assert oct((units / "gpunode-watch.service").stat().st_mode & 0o777) == "0o644"
    assert result.stats["changed"] == {"node1": 1}
    again, _ = play(tmp_path, {**common, "gpunode_watch": True, "gpunode_watch_args": ["--shadow", "--poll", "5"]})
    assert again.status == "successful" and again.stats["changed"] == {}  # idempotent
