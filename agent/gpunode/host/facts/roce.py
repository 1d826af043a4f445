"""RoCE ports and what makes them lossless, plus the loss counters around them (pure parsers and
sysfs reads; the judgement is checks/roce.py):

- RoCE ports: /sys/class/infiniband/<dev>/ports/<n>/link_layer "Ethernet"; their netdev from
  gid_attrs/ndevs/<i> (or <dev>/device/net/).
- GID types: gid_attrs/types/<i> ("RoCE v2", "IB/RoCE v1") of the non-zero gids/<i>.
- ECN/DCQCN: /sys/class/net/<if>/ecn/roce_np/enable/<prio> and roce_rp/enable/<prio> (mlx5).
- PFC and trust: `mlnx_qos -i IF` (MLNX_OFED / mstflint tools), parsed from its documented output.
- RoCE hw_counters: /sys/class/infiniband/<dev>/ports/<n>/hw_counters/<name>.
- NIC counters: `ethtool -S IF` ("     name: value" lines).
- TCP: /proc/net/snmp's two "Tcp:" lines (names, then values), what `nstat` reads too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gpunode.host.facts.infiniband import IB_ROOT, IbPort, ib_ports

# Counters that mean packets were lost or reordered on the fabric (mlx5 hw_counters, NVIDIA's
# "Understanding mlx5 Linux Counters"); CNP counters mean ECN congestion control is working.
LOSS_COUNTERS = ("out_of_sequence", "packet_seq_err", "local_ack_timeout_err", "implied_nak_seq_err",
                 "rnr_nak_retry_err", "out_of_buffer")
CNP_COUNTERS = ("np_cnp_sent", "np_ecn_marked_roce_packets", "rp_cnp_handled", "rp_cnp_ignored")
# ethtool -S of mlx5: packets the NIC dropped for lack of buffer, and pause frames (PFC at work).
ETHTOOL_DISCARDS = ("rx_discards_phy", "tx_discards_phy", "rx_out_of_buffer", "rx_buffer_passed_thres_phy")
ETHTOOL_PAUSE = ("rx_pause_ctrl_phy", "tx_pause_ctrl_phy")
ZERO_GID = re.compile(r"^[0:]+\Z")


@dataclass
class RocePort:
    """One RoCE port: the IB port, its netdev and the RoCE GID types in use."""

    port: IbPort
    netdev: str | None
    gid_types: set[str] = field(default_factory=set)


def roce_ports(host) -> list[RocePort]:
    out = []
    for p in ib_ports(host):
        if (p.link_layer or "").strip() != "Ethernet":
            continue
        base = f"{IB_ROOT}/{p.device}/ports/{p.port}"
        netdev = None
        for i in sorted(host.sys.listdir(f"{base}/gid_attrs/ndevs") or [], key=_num):
            netdev = host.sys.read_value(f"{base}/gid_attrs/ndevs/{i}")
            if netdev:
                break
        if not netdev:
            nets = host.sys.listdir(f"{IB_ROOT}/{p.device}/device/net") or []
            netdev = nets[0] if len(nets) == 1 else None
        types = set()
        for i in host.sys.listdir(f"{base}/gids") or []:
            gid = host.sys.read_value(f"{base}/gids/{i}")
            if gid and not ZERO_GID.match(gid):
                kind = host.sys.read_value(f"{base}/gid_attrs/types/{i}")
                if kind:
                    types.add(kind)
        out.append(RocePort(p, netdev, types))
    return out


def _num(text: str) -> int:
    return int(text) if text.isdigit() else 1 << 30


def ecn_enabled(host, netdev: str, prio: int) -> dict[str, bool | None]:
    """{"roce_np": True/False/None, "roce_rp": ...} for one priority; None where the file is absent."""
    out: dict[str, bool | None] = {}
    for side in ("roce_np", "roce_rp"):
        value = host.sys.read_int(f"/sys/class/net/{netdev}/ecn/{side}/enable/{prio}")
        out[side] = None if value is None else value == 1
    return out


def hw_counters(host, device: str, port: int, names) -> dict[str, int]:
    base = f"{IB_ROOT}/{device}/ports/{port}/hw_counters"
    found = {}
    for name in names:
        value = host.sys.read_int(f"{base}/{name}")
        if value is not None:
            found[name] = value
    return found


@dataclass(frozen=True)
class QosState:
    """What `mlnx_qos -i IF` shows: the trust state and the priorities with PFC on."""

    trust: str | None  # "dscp" | "pcp" | None (not printed)
    pfc: tuple[int, ...]  # priorities 0-7 whose PFC is enabled


def parse_mlnx_qos(text: str) -> QosState:
    """Raises ValueError when the PFC table is missing (a cut or unexpected output)."""
    lines = [raw.strip() for raw in text.splitlines()]
    trusts = [line.split(":", 1)[1].strip().lower() or None for line in lines if _is_trust(line)]
    priorities, enabled = _pfc_table(lines)
    if priorities is None or enabled is None or len(priorities) != len(enabled):
        raise ValueError("no PFC configuration table (priority/enabled lines) in mlnx_qos output")
    return QosState(trusts[-1] if trusts else None,
                    tuple(p for p, on in zip(priorities, enabled, strict=True) if on))


def _is_trust(line: str) -> bool:
    return line.lower().startswith("priority trust state:")


def _pfc_table(lines: list[str]) -> tuple[list[int] | None, list[int] | None]:
    """The first priority and enabled rows after "PFC configuration" (None: not there)."""
    priorities: list[int] | None = None
    enabled: list[int] | None = None
    in_pfc = False
    for line in lines:
        if _is_trust(line):
            continue
        if line.startswith("PFC configuration"):
            in_pfc = True
        elif in_pfc and line.startswith("priority") and priorities is None:
            priorities = _row(line)
        elif in_pfc and line.startswith("enabled") and enabled is None:
            enabled = _row(line)
    return priorities, enabled


def _row(line: str) -> list[int]:
    """The numbers of a table row after its label ("enabled   0 0 0 1 0 0 0 0")."""
    return [int(x) for x in line.split()[1:] if x.isdigit()]


_STAT = re.compile(r"^\s*(?P<name>[^:]+?):\s*(?P<value>-?\d+)\s*\Z")


def parse_ethtool_stats(text: str) -> dict[str, int]:
    """`ethtool -S IF`: "NIC statistics:" then "     name: value" lines."""
    stats = {}
    for line in text.splitlines():
        match = _STAT.match(line)
        if match:
            stats[match.group("name").strip()] = int(match.group("value"))
    return stats


def parse_snmp(text: str, proto: str = "Tcp") -> dict[str, int]:
    """/proc/net/snmp: a "Tcp:" line of names followed by a "Tcp:" line of values."""
    rows = [line.split()[1:] for line in text.splitlines() if line.startswith(f"{proto}:")]
    if len(rows) < 2 or len(rows[0]) != len(rows[1]):
        return {}
    out = {}
    for name, value in zip(rows[0], rows[1], strict=True):
        try:
            out[name] = int(value)
        except ValueError:
            continue
    return out
