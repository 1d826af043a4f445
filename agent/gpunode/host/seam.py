"""The Host: one value that holds every way the program touches a machine."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gpunode.host.gpu.source import GpuSource, LiveGpuSource, ReplayGpuSource
from gpunode.host.runner import ReplayRunner, Runner
from gpunode.host.sysroot import SysRoot


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


def live_host() -> Host:
    return Host(sys=SysRoot("/"), gpu=LiveGpuSource(), runner=Runner(), facts=Facts.live_facts())


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
    from gpunode.host.snapshot import load_snapshot  # validates every file: InputError naming it

    return load_snapshot(directory)


def facts_to_json(facts: Facts) -> dict:
    data = asdict(facts)
    data.pop("live")
    return data
