"""NVIDIA IMEX (GB200/GB300 NVL compute trays): its node list and `nvidia-imex-ctl -N`.

The IMEX guide (docs.nvidia.com/multi-node-nvlink-systems/imex-guide): config.cfg names the node
list in IMEX_NODE_CONFIG_FILE (default /etc/nvidia-imex/nodes_config.cfg), one IP address of
each compute tray of the domain per line; `nvidia-imex-ctl -N` prints every node's state, a
connectivity table (C = connected) and `Domain State: UP | DEGRADED | DOWN`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

IMEX_CONFIG = "/etc/nvidia-imex/config.cfg"
DEFAULT_NODES_CONFIG = "/etc/nvidia-imex/nodes_config.cfg"
IMEX_CTL_DOMAIN = ("nvidia-imex-ctl", "-N")
DOMAIN_STATES = ("UP", "DEGRADED", "DOWN")
NODE_READY = "READY"
CONNECTED = "C"

_NODE = re.compile(r"^Node #(\d+)\s+-\s+(\S+)\s+-\s+([A-Z_]+)(?:\s+-\s+Version:\s*(\S*))?\s*")
_DOMAIN = re.compile(r"^Domain State:\s*(\S+)\s*")
_TABLE_HEAD = re.compile(r"^Nodes From\\To\b")


def nodes_config_path(config_text: str | None) -> str:
    """IMEX_NODE_CONFIG_FILE of config.cfg (KEY=value lines, # comments), else the default."""
    for line in (config_text or "").splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "IMEX_NODE_CONFIG_FILE" and value.strip():
            return value.strip()
    return DEFAULT_NODES_CONFIG


@dataclass
class NodesConfig:
    """The node list: addresses in order, entries that are not an IP address, repeated ones."""

    addresses: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)


def parse_nodes_config(text: str) -> NodesConfig:
    import ipaddress  # only GB200/GB300 trays get here: the gate elsewhere does not pay for it

    out = NodesConfig()
    seen: set[str] = set()
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            address = str(ipaddress.ip_address(line))
        except ValueError:
            out.invalid.append(line[:60])
            continue
        if address in seen:
            out.duplicates.append(address)
        seen.add(address)
        out.addresses.append(address)
    return out


@dataclass(frozen=True)
class ImexNode:
    """One `Node #i - address - STATE - Version: v` line."""

    index: int
    address: str
    state: str
    version: str | None = None


@dataclass
class ImexDomain:
    """What `nvidia-imex-ctl -N` said: the domain state, each node, and the connections not `C`."""

    state: str
    nodes: list[ImexNode] = field(default_factory=list)
    not_connected: list[tuple[int, int, str]] = field(default_factory=list)  # (from, to, code)

    @property
    def not_ready(self) -> list[ImexNode]:
        return [n for n in self.nodes if n.state != NODE_READY]


def parse_imex_ctl(text: str) -> ImexDomain:
    """`nvidia-imex-ctl -N` text. ValueError when there is no `Domain State:` line (a truncated
    or failed output is never read as a healthy domain) or the table is malformed."""
    state = None
    nodes: list[ImexNode] = []
    bad: list[tuple[int, int, str]] = []
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        node = _NODE.fullmatch(line)
        if node:
            nodes.append(ImexNode(int(node[1]), node[2], node[3], node[4] or None))
            continue
        domain = _DOMAIN.fullmatch(line)
        if domain:
            state = domain[1].upper()
            in_table = False
            continue
        if _TABLE_HEAD.match(line):
            in_table = True
            continue
        if in_table and line:
            row, *codes = line.split()
            if not row.isdigit() or not codes:
                raise ValueError(f"nvidia-imex-ctl -N: unreadable connectivity row {line[:60]!r}")
            bad.extend((int(row), to, code) for to, code in enumerate(codes) if code != CONNECTED)
    if state is None:
        raise ValueError("nvidia-imex-ctl -N: no 'Domain State:' line (output cut short?)")
    if state not in DOMAIN_STATES:
        raise ValueError(f"nvidia-imex-ctl -N: unknown domain state {state[:20]!r}")
    return ImexDomain(state, nodes, bad)
