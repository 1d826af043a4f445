"""The Host: one value that holds every way the program touches a machine."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpunode.host.gpu.source import GpuSource, LiveGpuSource, ReplayGpuSource
from gpunode.host.runner import ReplayRunner, Runner
from gpunode.host.sysroot import SysRoot, load_snapshot_sysroot


@dataclass(frozen=True)
class Facts:
    """Facts of the environment that checks must not read from globals."""

    is_root: bool
    hostname: str
    now: float  # epoch seconds
    live: bool = True  # False when replaying a snapshot or auditing a sysroot

    @classmethod
    def live_facts(cls) -> Facts:
        # uname's nodename is what gethostname() returns on Linux, without importing socket
        # (selectors, ...: a few ms of every gate's start).
        return cls(is_root=os.geteuid() == 0, hostname=os.uname().nodename, now=time.time())


@dataclass
class Host:
    """The one way checks and apply touch a machine: its files, GPUs, commands and facts."""

    sys: SysRoot
    gpu: GpuSource
    runner: Runner
    facts: Facts
    # Per-run memo for derived data shared by several checks (parsed kernel log, ...).
    memo: dict = field(default_factory=dict)

    def cached(self, key: str, compute):
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


def live_host(unread: frozenset[str] = frozenset()) -> Host:
    """This machine. `unread`: NVML reads to leave out (host.gpu.source.GATE_UNREAD)."""
    return Host(sys=SysRoot("/"), gpu=LiveGpuSource(unread), runner=Runner(), facts=Facts.live_facts())


def sysroot_host(root: str | os.PathLike) -> Host:
    """Audit a directory tree offline: files only, no GPU, no commands."""
    facts = Facts.live_facts()
    return Host(
        sys=SysRoot(root),
        gpu=ReplayGpuSource.load(Path(root) / "__no_gpus__.json"),
        runner=ReplayRunner(),
        facts=Facts(is_root=facts.is_root, hostname=facts.hostname, now=facts.now, live=False),
    )


def snapshot_host(directory: str | os.PathLike) -> Host:
    return load_snapshot(directory)  # validates every file: InputError naming it


# A snapshot may come from another machine or person: every file is read bounded and checked for
# shape where it is loaded (here, and beside the source, runner and sysroot it feeds), once, so
# the checks never meet a half-typed document. host/snapshot.py only records.
SNAPSHOT_SCHEMA = "gpunode.snapshot/1"
_FACT_TYPES = {"is_root": (bool,), "hostname": (str,), "now": (int, float)}


def load_snapshot(directory: str | os.PathLike) -> Host:
    """A recorded host from `gpunode snapshot -o DIR`; InputError naming the file and key."""
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


def facts_to_json(facts: Facts) -> dict:
    data = asdict(facts)
    data.pop("live")
    return data
