"""Shared test helpers: fixture hosts, derived (misconfigured) snapshots, running checks.

Tests build hosts from real recorded snapshots (tests/fixtures/hosts/<name>) and derive
failing variants by patching files, GPU fields or command outputs in a temp copy.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import Check, Result, run_checks
from gpunode.config import Config
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import ReplayGpuSource
from gpunode.host.runner import ReplayRunner
from gpunode.host.seam import Facts, Host, snapshot_host
from gpunode.host.sysroot import SysRoot
from gpunode.tune.profiles import load_profile

FIXTURES = Path(__file__).parent / "fixtures"
HOSTS = FIXTURES / "hosts"
NOW = 1795478400.0  # 2026-11-24T00:00:00Z


def require(condition: bool, reason: str) -> None:
    """Skip when a real part (root, a Debian package) is missing; fail instead under CI
    (GPUNODE_REQUIRE_ALL=1), so CI really runs what it claims to."""
    if condition:
        return
    if os.environ.get("GPUNODE_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but missing: {reason}")
    pytest.skip(reason)


def write_files(root: Path, files: dict[str, str]) -> None:
    for path, text in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)


def tree_host(
    root: Path,
    files: dict[str, str] | None = None,
    inventory: GpuInventory | None = None,
    runner: ReplayRunner | None = None,
    is_root: bool = True,
    now: float = NOW,
) -> Host:
    """A host over a fixture directory tree written from `files`."""
    root.mkdir(parents=True, exist_ok=True)  # a root exists even with no files (apply locks it)
    write_files(root, files or {})
    return Host(
        sys=SysRoot(root),
        gpu=ReplayGpuSource(inventory or GpuInventory(available=False, error="no NVIDIA driver/NVML (test)")),
        runner=runner or ReplayRunner(),
        facts=Facts(is_root=is_root, hostname="testhost", now=now, live=False),
    )


def fixture_host(name: str) -> Host:
    path = HOSTS / name
    if not path.exists():
        pytest.skip(f"fixture snapshot {name} not recorded yet")
    return snapshot_host(path)


def derive_snapshot(
    name: str,
    dest: Path,
    files: dict[str, str | None] | None = None,
    gpu: dict | None = None,
    gpus_each: dict | None = None,
    inventory: dict | None = None,
    commands: dict[tuple[str, ...], dict] | None = None,
    facts: dict | None = None,
) -> Path:
    """Copy a recorded snapshot and change it: files (None deletes), fields of GPU 0 (`gpu`)
    or of every GPU (`gpus_each`), inventory-level fields, command results, facts."""
    src = HOSTS / name
    if not src.exists():
        pytest.skip(f"fixture snapshot {name} not recorded yet")
    shutil.copytree(src, dest)
    fs = json.loads((dest / "fs.json").read_text())
    for path, text in (files or {}).items():
        target = dest / "files" / path.lstrip("/")
        if text is None:
            if target.exists():
                target.unlink()
            fs["absent"] = sorted(set(fs["absent"]) | {path})
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            fs["absent"] = [p for p in fs["absent"] if p != path]
    (dest / "fs.json").write_text(json.dumps(fs))
    inv = json.loads((dest / "gpus.json").read_text())
    inv.update(inventory or {})
    for i, g in enumerate(inv.get("gpus", [])):
        g.update(gpus_each or {})
        if i == 0:
            g.update(gpu or {})
    (dest / "gpus.json").write_text(json.dumps(inv))
    if commands:
        recorded = json.loads((dest / "commands.json").read_text())
        by_argv = {json.dumps(c["argv"]): c for c in recorded}
        for argv, result in commands.items():
            base = {"argv": list(argv), "rc": 0, "stdout": "", "stderr": "", "duration_s": 0.0,
                    "timed_out": False, "error": None}
            by_argv[json.dumps(list(argv))] = {**base, **result}
        (dest / "commands.json").write_text(json.dumps(list(by_argv.values())))
    if facts:
        meta = json.loads((dest / "meta.json").read_text())
        meta["facts"].update(facts)
        (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def run(check: Check, host: Host, profile: str = "training", config: Config | None = None) -> list[Result]:
    ctx = AuditContext(host=host, profile=load_profile(profile), config=config or Config())
    return run_checks([check], ctx)


def statuses(results: list[Result]) -> list[str]:
    return [r.status.value for r in results]


def with_gpu(inventory: GpuInventory, position: int = 0, **changes) -> GpuInventory:
    """A copy of the inventory with fields of the GPU at `position` changed (index= renumbers it)."""
    gpus = list(inventory.gpus)
    gpus[position] = replace(gpus[position], **changes)
    return replace(inventory, gpus=gpus)
