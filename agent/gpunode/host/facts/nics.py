"""Physical network interfaces as sysfs describes them: kind, model, MTU, speed, link state."""

from __future__ import annotations

from typing import NamedTuple

VIRTUAL_PREFIXES = ("lo", "docker", "veth", "virbr", "br-", "cni", "flannel", "cali", "tun", "tap")
ARPHRD_INFINIBAND = 32  # /sys/class/net/X/type of an IPoIB interface
IFF_UP = 0x1


def data_nics(host) -> list[str]:
    """Physical NICs (with a PCI device) that are up."""
    nics = []
    for name in host.sys.listdir("/sys/class/net") or []:
        if name.startswith(VIRTUAL_PREFIXES):
            continue
        if not host.sys.exists(f"/sys/class/net/{name}/device"):
            continue
        if host.sys.read_value(f"/sys/class/net/{name}/operstate") not in ("up", "unknown"):
            continue
        nics.append(name)
    return nics


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class Nic(NamedTuple):
    """One network interface with what its checks compare between peers."""

    name: str
    kind: str  # infiniband (IPoIB) | roce (Ethernet with an RDMA device) | ethernet
    model: str  # PCI vendor:device, e.g. 0x15b3:0x1021 (ConnectX-7); NICs of one model are peers
    mtu: int | None
    speed_mbps: int | None  # None: unknown (-1) or unreadable (link down)
    admin_up: bool
    operstate: str | None
    carrier: bool | None

    @property
    def link_up(self) -> bool:
        return self.operstate in ("up", "unknown") and self.carrier is not False


def nic_kind(host, name: str) -> str:
    base = f"/sys/class/net/{name}"
    if host.sys.read_int(f"{base}/type") == ARPHRD_INFINIBAND:
        return "infiniband"
    if host.sys.listdir(f"{base}/device/infiniband"):
        return "roce"
    return "ethernet"


def describe(host, name: str) -> Nic:
    base = f"/sys/class/net/{name}"
    read = host.sys.read_value
    vendor, device = read(f"{base}/device/vendor"), read(f"{base}/device/device")
    flags = read(f"{base}/flags")
    try:
        admin_up = bool(int(flags, 16) & IFF_UP) if flags else False
    except ValueError:
        admin_up = False
    speed = host.sys.read_int(f"{base}/speed")
    carrier = host.sys.read_int(f"{base}/carrier")
    return Nic(
        name=name,
        kind=nic_kind(host, name),
        model=f"{vendor or '?'}:{device or '?'}",
        mtu=host.sys.read_int(f"{base}/mtu"),
        speed_mbps=speed if speed is not None and speed > 0 else None,
        admin_up=admin_up,
        operstate=read(f"{base}/operstate"),
        carrier=None if carrier is None else carrier == 1,
    )


def physical_nics(host) -> list[Nic]:
    """Every NIC backed by a device (up or down); virtual ones (bridges, veth, lo) are left out."""
    nics = []
    for name in host.sys.listdir("/sys/class/net") or []:
        if name.startswith(VIRTUAL_PREFIXES) or not host.sys.exists(f"/sys/class/net/{name}/device"):
            continue
        nics.append(describe(host, name))
    return nics


def format_speed(mbps: int | None) -> str:
    if mbps is None:
        return "unknown"
    return f"{mbps // 1000} Gb/s" if mbps >= 1000 and mbps % 1000 == 0 else f"{mbps} Mb/s"
