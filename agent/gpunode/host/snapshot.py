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
from gpunode.host.seam import Facts, Host, facts_to_json
from gpunode.host.sysroot import RecordingSysRoot

SNAPSHOT_SCHEMA = "gpunode.snapshot/1"


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


# ---------------------------------------------------------------- replay

# A snapshot may come from another machine or person: every file is read bounded and checked
# for shape here, once, so the checks never meet a half-typed document.
_OUTPUTS_MAX_BYTES = 64 * 1024 * 1024  # commands.json holds whole dmesg/nvidia-smi outputs
_FACT_TYPES = {"is_root": (bool,), "hostname": (str,), "now": (int, float)}
_RESULT_TYPES = {
    "argv": (list,), "rc": (int,), "stdout": (str,), "stderr": (str,), "duration_s": (int, float),
    "timed_out": (bool,), "error": (str, type(None)),
}


def load_snapshot(directory: str | os.PathLike) -> Host:
    """A recorded host from `gpunode snapshot -o DIR`; InputError naming the file and key."""
    from gpunode.host.gpu.source import ReplayGpuSource
    from gpunode.host.runner import ReplayRunner
    from gpunode.host.sysroot import load_snapshot_sysroot
    from gpunode.inputs import InputError

    directory = Path(directory)
    if not (directory / "meta.json").exists():
        raise InputError(f"{directory}: not a gpunode snapshot (no meta.json)")
    facts = load_facts(directory / "meta.json")
    return Host(
        sys=load_snapshot_sysroot(directory),
        gpu=ReplayGpuSource.load(directory / "gpus.json"),
        runner=ReplayRunner.load(directory / "commands.json"),
        facts=facts,
    )


def load_facts(path: Path) -> Facts:
    """meta.json: the recorded host's facts, every field type-checked."""
    from gpunode.inputs import InputError, expect_mapping, load_json

    meta = expect_mapping(load_json(path), path)
    schema = meta.get("schema")
    if schema is not None and schema != SNAPSHOT_SCHEMA:
        raise InputError(f"{path}: schema {schema!r} is not {SNAPSHOT_SCHEMA!r}")
    raw = expect_mapping(meta.get("facts"), path, "'facts'")
    values = {}
    for key, types in _FACT_TYPES.items():
        value = raw.get(key)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            raise InputError(f"{path}: facts.{key}: expected {'/'.join(t.__name__ for t in types)}, got {value!r}")
        values[key] = value
    if not values["hostname"].isprintable() or not values["hostname"]:
        raise InputError(f"{path}: facts.hostname: not a printable one-line name")
    return Facts(**values, live=False)


def load_inventory(path: Path) -> GpuInventory:
    """gpus.json (ReplayGpuSource.load)."""
    from gpunode.inputs import InputError, expect_mapping, load_json

    data = expect_mapping(load_json(path, max_bytes=_OUTPUTS_MAX_BYTES, allow_nonfinite=True), path)
    try:
        return GpuInventory.from_json(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: {exc}") from None


def load_commands(path: Path) -> list:
    """commands.json (ReplayRunner.load): CommandResults with every field type-checked."""
    from gpunode.host.runner import CommandResult
    from gpunode.inputs import InputError, load_json

    data = load_json(path, max_bytes=_OUTPUTS_MAX_BYTES)
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of recorded commands")
    results = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or "argv" not in item or "rc" not in item:
            raise InputError(f"{path}: [{i}]: expected an object with argv and rc")
        for key, value in item.items():
            types = _RESULT_TYPES.get(key)
            if types is None:
                raise InputError(f"{path}: [{i}].{key}: unknown field")
            if isinstance(value, bool) and bool not in types or not isinstance(value, types):
                raise InputError(f"{path}: [{i}].{key}: wrong type ({type(value).__name__})")
        if not item["argv"] or not all(isinstance(a, str) for a in item["argv"]):
            raise InputError(f"{path}: [{i}].argv: expected a non-empty list of strings")
        results.append(CommandResult(**item))
    return results


def load_index(path: Path):
    """fs.json (load_snapshot_sysroot): listings, links, absent paths."""
    from gpunode.host.sysroot import FsIndex
    from gpunode.inputs import InputError, expect_mapping, load_json

    data = expect_mapping(load_json(path, max_bytes=_OUTPUTS_MAX_BYTES), path)
    listdir, readlink, absent = data.get("listdir", {}), data.get("readlink", {}), data.get("absent", [])
    if not isinstance(listdir, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) for n in v) or v is None for v in listdir.values()
    ):
        raise InputError(f"{path}: listdir: expected a mapping of path to a list of names (or null)")
    if not isinstance(readlink, dict) or not all(isinstance(v, (str, type(None))) for v in readlink.values()):
        raise InputError(f"{path}: readlink: expected a mapping of path to a link target (or null)")
    if not isinstance(absent, list) or not all(isinstance(v, str) for v in absent):
        raise InputError(f"{path}: absent: expected a list of paths")
    return FsIndex(listdir=dict(listdir), readlink=dict(readlink), absent=set(absent))
