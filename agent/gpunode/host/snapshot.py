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
from gpunode.host.facts.kernel_config import copy_binary_files
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import LiveGpuSource
from gpunode.host.runner import RecordingRunner
from gpunode.host.seam import SNAPSHOT_SCHEMA, Facts, Host, facts_to_json
from gpunode.host.sysroot import RecordingSysRoot


def recording_host() -> tuple[Host, RecordingSysRoot, RecordingRunner]:
    sysroot, runner = RecordingSysRoot("/"), RecordingRunner()
    return Host(sys=sysroot, gpu=LiveGpuSource(), runner=runner, facts=Facts.live_facts()), sysroot, runner


def prepare_snapshot_dir(directory: Path) -> None:
    """Create the output directory before the audit runs (minutes on a big host), so that a
    path that cannot be written (`-o /proc/x`, a read-only mount) fails at once, not at the end."""
    from gpunode.inputs import InputError

    try:
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # a support bundle holds host details: keep it private
        probe = directory / ".gpunode-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{directory}: cannot write the snapshot there: {exc.strerror or exc}") from None


def write_snapshot(directory: Path, host: Host, sysroot: RecordingSysRoot, runner: RecordingRunner) -> None:
    prepare_snapshot_dir(directory)
    sysroot.save(directory)
    # capability detection reads the kernel's gzip config as bytes, past the text recorder
    copy_binary_files(str(sysroot.root), str(directory / "files"))
    runner.save(directory / "commands.json")
    try:
        inventory = host.gpu.inventory(timeout=30)
    except TimeoutError as exc:  # a wedged driver is just when a support bundle is wanted
        inventory = GpuInventory(available=False, error=f"NVML hung: {exc}")
    from gpunode.outputs import write_atomic  # the one writer of output files

    write_atomic(directory / "gpus.json", json.dumps(inventory.to_json(), indent=1) + "\n", mode=0o600)
    meta = {"schema": SNAPSHOT_SCHEMA, "gpunode_version": __version__, "facts": facts_to_json(host.facts)}
    write_atomic(directory / "meta.json", json.dumps(meta, indent=1) + "\n", mode=0o600)
