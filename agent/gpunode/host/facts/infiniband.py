"""InfiniBand/RDMA ports from /sys/class/infiniband/<dev>/ports/<n>/ (also RoCE ports)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IB_ROOT = "/sys/class/infiniband"
# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_RATE = r"^\s*(\d+(?:\.\d+)?)\s*Gb/sec"
# Counters that only move when a link is physically unhealthy (cables, optics, ports), from the
# IBTA PortCounters attribute; congestion counters (xmit_discards, xmit_wait) are left out.
ERROR_COUNTERS = (
    "symbol_error",
    "link_error_recovery",
    "link_downed",
    "port_rcv_errors",
    "port_rcv_remote_physical_errors",
    "local_link_integrity_errors",
    "excessive_buffer_overrun_errors",
)


@dataclass(frozen=True)
class IbPort:
    """One InfiniBand/RDMA port as sysfs shows it."""

    device: str  # mlx5_0
    port: int
    state: str | None  # "4: ACTIVE"
    phys_state: str | None  # "5: LinkUp"
    rate: str | None  # "400 Gb/sec (4X NDR)"
    link_layer: str | None  # InfiniBand | Ethernet
    hca: str  # hca_type (MT4129) or board_id: ports of one HCA model are peers
    counters: dict[str, int] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return f"{self.device}/{self.port}"

    @property
    def rate_gbps(self) -> float | None:
        return parse_rate(self.rate)

    @property
    def active(self) -> bool:
        return state_code(self.state) == 4

    @property
    def link_up(self) -> bool:
        return state_code(self.phys_state) == 5


def parse_rate(text: str | None) -> float | None:
    """'400 Gb/sec (4X NDR)' -> 400.0; '2.5 Gb/sec (1X SDR)' -> 2.5."""
    match = re.match(_RATE, text or "")
    return float(match.group(1)) if match else None


def state_code(text: str | None) -> int | None:
    """'4: ACTIVE' -> 4."""
    head = (text or "").split(":", 1)[0].strip()
    return int(head) if head.isdigit() else None


def ib_devices(host) -> list[str]:
    return host.sys.listdir(IB_ROOT) or []


def ib_ports(host, with_counters: bool = False) -> list[IbPort]:
    ports = []
    for dev in ib_devices(host):
        base = f"{IB_ROOT}/{dev}"
        hca = host.sys.read_value(f"{base}/hca_type") or host.sys.read_value(f"{base}/board_id") or dev
        for port in host.sys.listdir(f"{base}/ports") or []:
            if not port.isdigit():
                continue
            pbase = f"{base}/ports/{port}"
            counters = {}
            if with_counters:
                for name in ERROR_COUNTERS:
                    value = host.sys.read_int(f"{pbase}/counters/{name}")
                    if value is not None:
                        counters[name] = value
            ports.append(
                IbPort(
                    device=dev,
                    port=int(port),
                    state=host.sys.read_value(f"{pbase}/state"),
                    phys_state=host.sys.read_value(f"{pbase}/phys_state"),
                    rate=host.sys.read_value(f"{pbase}/rate"),
                    link_layer=host.sys.read_value(f"{pbase}/link_layer"),
                    hca=hca,
                    counters=counters,
                )
            )
    return ports
