"""What the watcher sees (Event), what its policy wants done (Action), and what the policy remembers.

The interface shared by the watcher core (sources, state, loop) and its policy (policy, memory,
Slurm actions): keep it small and stable.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Event:
    """One thing the watcher saw."""
    source: str          # "nvml" | "kmsg" | "poll"
    kind: str            # "xid" | "sxid" | "ecc_dbe" | "ecc_sbe" | "fallen_off_bus" | "aer" | "mlx5"
                         # | "clock" | "power" | "recovery_action" | "check" | "foreign_process"
    time: float          # epoch seconds when it happened (kernel time converted, or NVML read time)
    gpu: str | None      # GPU UUID where known, else PCI bus id, else None (node-wide)
    code: int | None = None   # Xid number, recovery action code, ...
    check_id: str | None = None   # kind == "check": the gate check id
    status: str | None = None     # kind == "check": PASS WARN FAIL ERROR SKIP
    text: str = ""       # the raw line / message (one line, bounded to 500 chars)

    def key(self) -> tuple:
        """De-duplication key: (GPU, event, time rounded to the second)."""
        return (self.gpu, self.kind, self.code, self.check_id, int(self.time))


@dataclass(frozen=True)
class Action:
    """What the policy wants done. kind: record | drain | reset | reboot | resume | evidence | none"""
    kind: str
    reason: str          # always starts with "gpunode: " when it reaches Slurm
    gpu: str | None = None
    event: Event | None = None
    shadow: bool = False  # logged as would-<kind>, not taken


@dataclass
class PolicyState:
    """What the policy remembers between events (owned and persisted by W2's memory module)."""
    consecutive_failures: dict = field(default_factory=dict)  # check_id/gpu -> count
    drained_by_us: bool = False
    remediations: list = field(default_factory=list)  # [(gpu serial, time, action)]
