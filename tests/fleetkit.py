"""Helpers for the fleet tests: snapshot directories for inventory hosts, inventories, and
running `gpunode fleet` as a real process (it drives ansible-runner, which drives Ansible)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from pathlib import Path

import testkit
from gpunode.host.runner import CommandResult, Runner

FIXTURES = Path(__file__).parent / "fixtures"
NVML_H100 = FIXTURES / "nvml" / "h100-sxm-1gpu.json"
BIN = Path(sys.executable).parent
H200_PCI_DEVICE_ID = 0x233510DE  # 10de:2335, H200 SXM 141GB

# A node tuned as the training profile wants, as far as a snapshot without /sys can show.
TUNED_FILES = {
    "/proc/sys/vm/swappiness": "10\n",
    "/proc/sys/kernel/numa_balancing": "0\n",
    "/etc/security/limits.conf": "* soft memlock unlimited\n* hard memlock unlimited\n"
                                 "* soft nofile 1048576\n* hard nofile 1048576\n",
}


def require_ansible() -> None:
    have = importlib.util.find_spec("ansible_runner") is not None and (BIN / "ansible-playbook").exists()
    testkit.require(have, "ansible-runner and ansible-core not installed (pip install -e '.[dev]')")


def gpunode_bin() -> str:
    """The installed gpunode console script that the inventory hosts run."""
    found = BIN / "gpunode"
    return str(found) if found.exists() else (shutil.which("gpunode") or "gpunode")


def make_snapshot(dest: Path, hostname: str, files: dict[str, str] | None = None, gpu: dict | None = None,
                  now: float = testkit.NOW) -> Path:
    """A snapshot directory (agent/snapshot.py format) of a 1-GPU node: the real H100 NVML
    recording with `gpu` fields changed, and the given host files."""
    dest.mkdir(parents=True)
    inventory = json.loads(NVML_H100.read_text())
    inventory["gpus"][0].update(gpu or {})
    (dest / "gpus.json").write_text(json.dumps(inventory))
    testkit.write_files(dest / "files", files or {})
    (dest / "files").mkdir(exist_ok=True)
    (dest / "fs.json").write_text(json.dumps({"listdir": {}, "readlink": {}, "absent": []}))
    (dest / "commands.json").write_text("[]")
    meta = {"schema": "gpunode.snapshot/1", "gpunode_version": "test",
            "facts": {"is_root": True, "hostname": hostname, "now": now}}
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def write_inventory(path: Path, groups: dict[str, list[str]], all_vars: dict[str, str], extra: str = "") -> Path:
    """An INI inventory: groups of host lines, then [all:vars]."""
    lines = []
    for group, hosts in groups.items():
        lines += [f"[{group}]", *hosts, ""]
    lines += ["[all:vars]", *(f"{k}={v}" for k, v in all_vars.items()), "", extra]
    path.write_text("\n".join(lines) + "\n")
    return path


def local_vars(**more: str) -> dict[str, str]:
    """Vars for hosts that are this machine (ansible_connection=local) running this gpunode."""
    return {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
            "gpunode_bin": gpunode_bin(), **more}


def fleet(args: list[str], timeout: float = 240, env: dict | None = None) -> CommandResult:
    """`gpunode fleet ARGS` as a real process; wide output so table cells are not wrapped."""
    run_env = {**os.environ, "COLUMNS": "250", **(env or {})}
    return Runner().run([sys.executable, "-m", "gpunode", "fleet", *args], timeout=timeout, env=run_env)


def fleet_json(args: list[str], **kw) -> tuple[CommandResult, dict]:
    result = fleet([*args, "--json", "--quiet"], **kw)
    assert result.stdout.strip(), f"no JSON (rc {result.rc}): {result.stderr[-3000:]}"
    return result, json.loads(result.stdout)


def by_host(doc: dict) -> dict[str, dict]:
    return {h["host"]: h for h in doc["hosts"]}


def check_row(doc: dict, check_id: str) -> dict:
    rows = [r for r in doc["checks"] if r["id"] == check_id]
    assert rows, f"{check_id} not among the failing checks: {[r['id'] for r in doc['checks']]}"
    return rows[0]
