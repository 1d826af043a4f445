"""`gpunode snapshot -o DIR`: record exactly what an audit reads, into a plain directory.

    DIR/meta.json       schema, version, facts (hostname, root, time)
    DIR/files/...       every file the checks read, at its host path
    DIR/fs.json         directory listings, links, and files that were absent
    DIR/commands.json   every command run, with exit code and output
    DIR/gpus.json       the NVML inventory
`gpunode audit --snapshot DIR` replays it offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpunode import __version__
from gpunode.host import Facts, Host, facts_to_json
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import LiveGpuSource
from gpunode.host.runner import RecordingRunner
from gpunode.host.sysroot import RecordingSysRoot

SNAPSHOT_SCHEMA = "gpunode.snapshot/1"


def recording_host() -> tuple[Host, RecordingSysRoot, RecordingRunner]:
    sysroot, runner = RecordingSysRoot("/"), RecordingRunner()
    return Host(sys=sysroot, gpu=LiveGpuSource(), runner=runner, facts=Facts.live_facts()), sysroot, runner


def write_snapshot(directory: Path, host: Host, sysroot: RecordingSysRoot, runner: RecordingRunner) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)  # a support bundle holds host details: keep it private
    sysroot.save(directory)
    runner.save(directory / "commands.json")
    try:
        inventory = host.gpu.inventory(timeout=30)
    except TimeoutError as exc:  # a wedged driver is just when a support bundle is wanted
        inventory = GpuInventory(available=False, error=f"NVML hung: {exc}")
    (directory / "gpus.json").write_text(json.dumps(inventory.to_json(), indent=1) + "\n")
    meta = {"schema": SNAPSHOT_SCHEMA, "gpunode_version": __version__, "facts": facts_to_json(host.facts)}
    (directory / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
