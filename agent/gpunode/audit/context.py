"""What a check gets: the Host, the profile, and the site configuration (gpunode.config.Config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpunode.audit.counters import CounterStore
from gpunode.audit.engine import CheckSkipped
from gpunode.config import Config
from gpunode.host.gpu.model import GpuInfo, GpuInventory
from gpunode.host.gpu.source import NVML_TIMEOUT_S
from gpunode.host.seam import Host
from gpunode.model.profile import Profile


@dataclass
class AuditContext:
    """What every check reads: the host, the profile, the site config and the kept counters."""

    host: Host
    profile: Profile
    config: Config = field(default_factory=Config)
    # How long a check waits for NVML; the gate keeps it under its per-check watchdog so a
    # hung driver is judged by gpu.nvml (FAIL) instead of ending as a hung check (ERROR).
    nvml_timeout: float = NVML_TIMEOUT_S
    # Previous readings of error counters (the state dir of a live audit); the default keeps
    # nothing, so counters are judged as lifetime totals (snapshots, sysroots, tests).
    counters: CounterStore = field(default_factory=CounterStore)

    def inventory(self) -> GpuInventory:
        return self.host.gpu.inventory(timeout=self.nvml_timeout)

    def gpus(self) -> list[GpuInfo]:
        """The GPUs, or end the check as SKIP when there is no driver/NVML or no GPU."""
        inv = self.inventory()
        if not inv.available:
            raise CheckSkipped(inv.error or "no NVIDIA driver/NVML")
        if not inv.gpus:
            raise CheckSkipped("NVML found no GPU")
        return inv.gpus
