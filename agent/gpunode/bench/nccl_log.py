"""What NCCL_DEBUG=INFO says NCCL chose (pure): its version, the network plugin, GPUDirect RDMA,
the transport of every connection (P2P, SHM, NET/IB, NET/Socket ...) and NVLS channels; and the
verdict on it (`judge`): inter-node traffic on TCP sockets while RDMA ports are active, or GPUs
with NVLink talking through host shared memory, is a FAIL whatever the figure says.

The lines are NCCL's own (src/init.cc, src/transport/*.cc, src/graph/*.cc of NCCL 2.x):
  host:pid:tid [dev] NCCL INFO NCCL version 2.28.9+cuda13.0       (older: a bare "NCCL version ...")
  ... NCCL INFO Using network IB | Socket
  ... NCCL INFO NET/IB : No device found.
  ... NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/RoCE [RO]; OOB ib0:10.0.0.1<0>
  ... NCCL INFO NET/Socket : Using [0]eth0:192.0.2.2<0>
  ... NCCL INFO NET/Socket : GPU Direct RDMA Disabled for HCA 0 'eth0'
  ... NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
  ... NCCL INFO Channel 00/0 : 0[0] -> 8[0] [send] via NET/IB/0/GDRDMA
  ... NCCL INFO Ring 00 : 43 -> 44 [receive] via NET/Socket/0          (NCCL 2.4)
  ... NCCL INFO 64 coll channels, 64 collnet channels, 0 nvls channels, 64 p2p channels, ...
  ... NCCL INFO comm 0x... rank 0 nRanks 16 nNodes 2 localRanks 8 localRank 0 MNNVL 0
Lines may carry an MPI tag ("[1] host:..." or "[1,0]<stdout>:"); other output is ignored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# Where an NCCL line's message starts: after "NCCL INFO " (the prefix names host:pid:tid [dev]).
_INFO = re.compile(r"(?:^|\s)(?:(?P<host>[^\s:\[\]]+):\d+:\d+ \[\d+\] )?NCCL (?P<level>INFO|WARN) (?P<msg>.*)\Z")
_BARE_VERSION = re.compile(r"^(?:\S+\s+)?NCCL version (?P<v>\d+\.\d+\.\d+\S*)")
_VERSION = re.compile(r"^NCCL version (?P<v>\d+\.\d+\.\d+\S*)")
_CONN = re.compile(
    r"^(?:Channel|Ring) (?P<ch>\d+)(?:/\d+)? : (?P<src>\d+)(?:\[(?P<sdev>[0-9a-fx]+)\])? -> "
    r"(?P<dst>\d+)(?:\[(?P<ddev>[0-9a-fx]+)\])?(?: \[(?P<dir>send|receive)\])? via (?P<via>.+?)\s*\Z")
_NETWORK = re.compile(r"^Using network (?P<net>\S+)")
_IB_USING = re.compile(r"^NET/IB\w* : Using (?P<list>.*?)(?:; OOB (?P<oob>\S+))?\s*\Z")
_SOCKET_USING = re.compile(r"^NET/Socket : Using (?P<list>.*)\Z")
_DEVICE = re.compile(r"\[\d+\](?P<name>[^\s\[\]:;]+)(?::(?P<port>\d+))?(?:/(?P<ll>\w+))?")
_GDR_HCA = re.compile(r"GPU Direct RDMA (?P<state>Enabled|Disabled) for HCA (?P<idx>\d+) '(?P<name>[^']*)'")
_NVLS = re.compile(r"(?P<n>\d+) nvls channels")
_NNODES = re.compile(r"\bnRanks (?P<ranks>\d+) nNodes (?P<nodes>\d+)")
_NRANKS = re.compile(r"\bnranks (?P<ranks>\d+)\b")
# NCCL_DEBUG_SUBSYS=TUNING (src/graph/tuning.cc): a header ("Latency/AlgBw | Tree/ LL | ...", or
# "Algorithm | Tree | ..." then "Protocol | LL | ..."), then one row per collective of
# "latency/ algorithm bandwidth" cells (us, GB/s).
_TABLE_ROW = re.compile(r"^(?P<name>[A-Za-z/ ]+?)\s*\|(?P<cells>.*\|)\s*\Z")
_CELL = re.compile(r"^\s*(?P<lat>[0-9.]+)/\s*(?P<bw>[0-9.]+)\s*\Z")
COLLECTIVES = {"all_reduce": "AllReduce", "all_gather": "AllGather", "reduce_scatter": "ReduceScatter"}


@dataclass(frozen=True)
class Connection:
    """One channel's connection between two ranks, as NCCL set it up."""

    channel: int
    src: int
    dst: int
    direction: str  # send | receive | "" (intra-node: no direction)
    via: str  # "P2P/CUMEM/read", "SHM/direct/direct", "NET/IB/0/GDRDMA", "NET/Socket/0"

    @property
    def transport(self) -> str:
        """P2P, SHM, NET/IB, NET/IBext, NET/Socket, COLLNET, NVLS ..."""
        parts = self.via.split("/")
        head = parts[0].split()[0]
        return f"NET/{parts[1]}" if head == "NET" and len(parts) > 1 else head

    @property
    def gdr(self) -> bool:
        return "GDRDMA" in self.via.split("/")

    @property
    def socket(self) -> bool:
        return self.transport == "NET/Socket"

    @property
    def rdma(self) -> bool:
        return self.transport.startswith("NET/") and not self.socket


@dataclass
class NcclLog:
    """What one run's NCCL INFO lines say. Empty (`seen` False) when NCCL printed none."""

    seen: bool = False
    version: str | None = None
    network: str | None = None  # "Using network X" (the plugin NCCL picked: IB, Socket, ...)
    ib_no_device: bool = False  # "NET/IB : No device found."
    ib_devices: list[str] = field(default_factory=list)  # "mlx5_0:1/IB", "mlx5_10:1/RoCE"
    socket_ifs: list[str] = field(default_factory=list)  # "eth0"
    gdr_hca: dict[str, bool] = field(default_factory=dict)  # "GPU Direct RDMA Enabled/Disabled for HCA"
    nvls_channels: int | None = None
    nranks: int | None = None
    nnodes: int | None = None
    hosts: set[str] = field(default_factory=set)
    connections: list[Connection] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tuning_columns: list[str] = field(default_factory=list)  # "Ring/Simple" (or "Simple" where only protocols)
    tuning: dict[str, list[tuple[str, float, float]]] = field(default_factory=dict)  # coll -> (column, us, GB/s)

    def prediction(self, collective: str) -> tuple[str, float] | None:
        """NCCL's own best algorithm bandwidth (GB/s) for a collective, and the column it is in."""
        cells = [c for c in self.tuning.get(collective, []) if c[2] > 0]
        if not cells:
            return None
        best = max(cells, key=lambda c: c[2])
        return best[0], best[2]

    @property
    def inter_node(self) -> bool:
        """More than one node: nNodes, several host names, or a connection through the network
        (NCCL uses NET between ranks of one node only when P2P and SHM are both disabled)."""
        return (self.nnodes or 0) > 1 or len(self.hosts) > 1 or bool(self.net_connections)

    @property
    def net_connections(self) -> list[Connection]:
        return [c for c in self.connections if c.transport.startswith("NET/")]

    @property
    def gdr(self) -> bool | None:
        """GPUDirect RDMA used: on any network connection (GDRDMA), else what NCCL said per HCA;
        None when the log says neither."""
        net = self.net_connections
        if net:
            return any(c.gdr for c in net)
        if self.gdr_hca:
            return any(self.gdr_hca.values())
        return None

    def transports(self) -> dict[str, int]:
        """Connections per transport and mode: {"P2P/CUMEM/read": 64, "NET/IB/GDRDMA": 16}."""
        def label(c: Connection) -> str:
            if c.transport.startswith("NET/"):
                return c.transport + ("/GDRDMA" if c.gdr else "")
            return c.via
        return dict(sorted(Counter(label(c) for c in self.connections).items()))

    def peers(self) -> dict[str, str]:
        """Per pair of ranks ("0->1"), the transports NCCL used between them (joined by ", ")."""
        out: dict[str, set[str]] = {}
        for c in self.connections:
            mode = c.transport + ("/GDRDMA" if c.gdr else "") if c.transport.startswith("NET/") else c.via
            out.setdefault(f"{c.src}->{c.dst}", set()).add(mode)
        return {k: ", ".join(sorted(v)) for k, v in sorted(out.items(), key=lambda kv: _pair_key(kv[0]))}

    def to_json(self) -> dict:
        return {"version": self.version, "network": self.network, "ib_no_device": self.ib_no_device,
                "ib_devices": self.ib_devices, "socket_ifs": self.socket_ifs, "gdr": self.gdr,
                "gdr_hca": self.gdr_hca, "nvls_channels": self.nvls_channels, "nranks": self.nranks,
                "nnodes": self.nnodes, "hosts": sorted(self.hosts), "transports": self.transports(),
                "peers": self.peers(), "warnings": self.warnings[:10],
                "tuning": {k: {c: [lat, bw] for c, lat, bw in v} for k, v in self.tuning.items()}}


def _pair_key(pair: str) -> tuple[int, int]:
    a, _, b = pair.partition("->")
    return int(a), int(b)


def is_nccl_line(line: str) -> bool:
    """An NCCL INFO line (or the bare version banner): not nccl-tests' own output."""
    m = _INFO.search(line)
    return bool(m and m.group("level") == "INFO") or bool(_BARE_VERSION.match(line.strip()))


def parse(text: str) -> NcclLog:
    log = NcclLog()
    seen_conn: set[tuple] = set()
    for raw in text.splitlines():
        line = raw.rstrip()
        m = _INFO.search(line)
        if m is None:
            bare = _BARE_VERSION.match(line.strip())
            if bare and "NCCL INFO" not in line:
                log.seen = True
                log.version = log.version or bare.group("v")
            continue
        log.seen = True
        if m.group("host"):
            log.hosts.add(m.group("host"))
        msg = m.group("msg").strip()
        if m.group("level") == "WARN":
            log.warnings.append(msg)
            continue
        _parse_info(log, msg, seen_conn)
    return log


def _parse_info(log: NcclLog, msg: str, seen_conn: set[tuple]) -> None:
    """The first kind of line (_INFO_LINES, in order) that `msg` is, read into the log."""
    for kind, read in _INFO_LINES:
        found = kind(msg, log)
        if found:
            read(log, found, seen_conn)
            return


def _read_connection(log: NcclLog, c: re.Match, seen_conn: set[tuple]) -> None:
    conn = Connection(int(c.group("ch")), int(c.group("src")), int(c.group("dst")), c.group("dir") or "",
                      c.group("via"))
    key = (conn.channel, conn.src, conn.dst, conn.direction, conn.via)
    if key not in seen_conn:  # both ends of a pair print the same connection
        seen_conn.add(key)
        log.connections.append(conn)


def _read_ib_devices(log: NcclLog, ib: re.Match, _seen: set[tuple]) -> None:
    for d in _DEVICE.finditer(ib.group("list")):
        name = d.group("name") + (f":{d.group('port')}" if d.group("port") else "") + (
            f"/{d.group('ll')}" if d.group("ll") else "")
        if name not in log.ib_devices:
            log.ib_devices.append(name)


def _read_socket_ifs(log: NcclLog, s: re.Match, _seen: set[tuple]) -> None:
    for d in _DEVICE.finditer(s.group("list")):
        if d.group("name") not in log.socket_ifs:
            log.socket_ifs.append(d.group("name"))


def _read_nodes(log: NcclLog, nn: re.Match, _seen: set[tuple]) -> None:
    log.nranks = int(nn.group("ranks"))
    log.nnodes = max(log.nnodes or 0, int(nn.group("nodes")))


def _read_version(log: NcclLog, v: re.Match, _seen: set[tuple]) -> None:
    log.version = log.version or v.group("v")


def _read_network(log: NcclLog, n: re.Match, _seen: set[tuple]) -> None:
    log.network = n.group("net")


def _read_ib_no_device(log: NcclLog, _found: object, _seen: set[tuple]) -> None:
    log.ib_no_device = True


def _read_gdr_hca(log: NcclLog, g: re.Match, _seen: set[tuple]) -> None:
    log.gdr_hca[g.group("name")] = g.group("state") == "Enabled"


def _read_nvls(log: NcclLog, nv: re.Match, _seen: set[tuple]) -> None:
    log.nvls_channels = int(nv.group("n"))


def _read_nranks(log: NcclLog, nr: re.Match, _seen: set[tuple]) -> None:
    log.nranks = int(nr.group("ranks"))


def _read_tuning_row(log: NcclLog, row: re.Match, _seen: set[tuple]) -> None:
    _tuning_row(log, row.group("name").strip(), row.group("cells").split("|")[:-1])


# Each kind of INFO line, in the order they are tried: (its match, or a false value when the
# message, given the log read so far, is not of this kind; the reader that takes it in).
_INFO_LINES: tuple[tuple[Callable[[str, NcclLog], Any], Callable[[NcclLog, Any, set[tuple]], None]], ...] = (
    (lambda msg, log: _VERSION.match(msg), _read_version),
    (lambda msg, log: _CONN.match(msg), _read_connection),
    (lambda msg, log: _NETWORK.match(msg), _read_network),
    (lambda msg, log: msg.startswith("NET/IB") and "No device found" in msg, _read_ib_no_device),
    (lambda msg, log: _IB_USING.match(msg), _read_ib_devices),
    (lambda msg, log: _SOCKET_USING.match(msg), _read_socket_ifs),
    (lambda msg, log: _GDR_HCA.search(msg), _read_gdr_hca),
    (lambda msg, log: "coll channels" in msg and _NVLS.search(msg), _read_nvls),
    (lambda msg, log: _NNODES.search(msg), _read_nodes),
    (lambda msg, log: msg.startswith("ncclCommInitRank") and log.nranks is None and _NRANKS.search(msg), _read_nranks),
    (lambda msg, log: _TABLE_ROW.match(msg), _read_tuning_row),
)


def _tuning_row(log: NcclLog, name: str, cells: list[str]) -> None:
    if name == "Latency/AlgBw":
        log.tuning_columns = ["".join(c.split()) for c in cells]
    elif name == "Algorithm":
        log.tuning_columns = [c.strip() for c in cells]
    elif name == "Protocol":
        log.tuning_columns = _with_protocols(log.tuning_columns, [c.strip() for c in cells])
    else:
        _tuning_figures(log, name, cells)


def _with_protocols(algos: list[str], protos: list[str]) -> list[str]:
    """The "Protocol" row under an "Algorithm" row: one "Algo/Proto" column each, or the protocols alone."""
    if len(algos) == len(protos):
        return [f"{a}/{p}" for a, p in zip(algos, protos, strict=True)]
    return protos


def _tuning_figures(log: NcclLog, name: str, cells: list[str]) -> None:
    """A collective's row of "latency/ bandwidth" cells; a row with any other cell is not one."""
    parsed = [_CELL.match(c) for c in cells]
    if parsed and all(parsed):
        names = log.tuning_columns if len(log.tuning_columns) == len(cells) else [str(i) for i in range(len(cells))]
        log.tuning[name] = [(n, float(m.group("lat")), float(m.group("bw")))
                            for n, m in zip(names, parsed, strict=True) if m]


@dataclass(frozen=True)
class Fabric:
    """What the host has that NCCL should have used: active RDMA ports (ib_ports: IB or RoCE)
    and whether its GPUs have active NVLinks (NVML)."""

    rdma_ports: tuple[str, ...] = ()  # "mlx5_0/1 (InfiniBand)"
    nvlink: bool = False

    @classmethod
    def of(cls, ports, gpus) -> Fabric:
        """From host.facts.infiniband.ib_ports(host) and the NVML inventory's GPUs."""
        active = tuple(f"{p.name} ({p.link_layer or '?'})" for p in ports if p.active)
        return cls(active, any(link.active for g in gpus for link in (g.nvlinks or [])))


def summary(log: NcclLog) -> str:
    """One line: 'NCCL 2.28.9, network Socket (IB: no device), GDR off, 1 rank on 1 node'."""
    parts = [f"NCCL {log.version or '?'}", f"network {log.network or '?'}"]
    if log.ib_no_device:
        parts[-1] += " (IB: no device)"
    gdr = log.gdr
    parts.append("GDR " + ("?" if gdr is None else "on" if gdr else "off"))
    transports = log.transports()
    if transports:
        parts.append("via " + ", ".join(f"{k} x{n}" for k, n in transports.items()))
    if log.nvls_channels:
        parts.append(f"{log.nvls_channels} NVLS channels")
    if log.nranks is not None:
        nodes = log.nnodes or max(len(log.hosts), 1)
        parts.append(f"{log.nranks} rank(s) on {nodes} node(s)")
    return ", ".join(parts)


def judge(log: NcclLog, fabric: Fabric) -> tuple[str, str]:
    """-> (PASS | WARN | FAIL | SKIP, why). SKIP: NCCL printed no INFO line (nothing to judge)."""
    if not log.seen:
        return "SKIP", "NCCL printed no INFO lines (NCCL_DEBUG=INFO not honoured?): transports unknown"
    text = summary(log)
    for status, finding in (("FAIL", _sockets_beside_rdma), ("FAIL", _shm_beside_nvlink), ("WARN", _rdma_without_gdr)):
        why = finding(log, fabric, text)
        if why:
            return status, why
    if not log.inter_node:
        return "PASS", f"single node: no inter-node transport in use ({text})"
    return "PASS", text


def _sockets_beside_rdma(log: NcclLog, fabric: Fabric, text: str) -> str | None:
    """Inter-node traffic on TCP sockets while the host has active RDMA ports."""
    socket = [c for c in log.net_connections if c.socket]
    if not (log.inter_node and fabric.rdma_ports and (socket or (log.network == "Socket" and not log.net_connections))):
        return None
    said = "NET/IB : No device found" if log.ib_no_device else f"Using network {log.network}"
    pair = f" (e.g. {socket[0].src} -> {socket[0].dst} via {socket[0].via})" if socket else ""
    return (f"inter-node traffic went over TCP sockets (NET/Socket){pair} although RDMA ports are "
            f"active: {', '.join(fabric.rdma_ports[:4])}; NCCL said '{said}' ({text})")


def _shm_beside_nvlink(log: NcclLog, fabric: Fabric, text: str) -> str | None:
    """GPUs with active NVLinks talking through host shared memory."""
    shm = [c for c in log.connections if c.transport == "SHM"]
    if not (shm and fabric.nvlink):
        return None
    c = shm[0]
    return (f"{len(shm)} intra-node connection(s) fell back to host shared memory (e.g. {c.src} -> "
            f"{c.dst} via {c.via}) although the GPUs have active NVLinks: P2P is disabled or broken "
            f"({text})")


def _rdma_without_gdr(log: NcclLog, fabric: Fabric, text: str) -> str | None:
    """RDMA connections none of which uses GPUDirect."""
    rdma = [c for c in log.net_connections if c.rdma]
    if not rdma or any(c.gdr for c in rdma):
        return None
    return (f"RDMA without GPUDirect: no connection says GDRDMA, every transfer is staged through "
            f"host memory (nvidia_peermem or DMA-BUF missing?) ({text})")
