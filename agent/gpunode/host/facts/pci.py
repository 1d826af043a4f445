"""The PCI tree as sysfs shows it: every device's place under its root complex, its link (current
and maximum speed and width), NUMA node and class, plus ACS control of bridges from `lspci -vvv`.

/sys/bus/pci/devices/<bdf> is a link into /sys/devices/pci<domain>:<bus>/<port>/.../<bdf>: the
components between the root and the device are the bridges above it (root port, switch ports).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PCI_DEVICES = "/sys/bus/pci/devices"
_BDF = re.compile(r"[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]")
_ROOT = re.compile(r"pci[0-9a-f]{4}:[0-9a-f]{2}")
_SPEED = re.compile(r"(\d+(?:\.\d+)?)\s*GT/s")

# Transfer rate (GT/s) -> PCIe generation.
GENERATIONS = {2.5: 1, 5.0: 2, 8.0: 3, 16.0: 4, 32.0: 5, 64.0: 6}
# Usable GB/s per lane and direction after line coding: 8b/10b (Gen1-2), 128b/130b (Gen3-5),
# FLIT mode 242/256 (Gen6). PCIe base specifications; Gen5 x16 = 63.0 GB/s.
LANE_GBPS = {1: 0.25, 2: 0.5, 3: 8 * 128 / 130 / 8, 4: 16 * 128 / 130 / 8, 5: 32 * 128 / 130 / 8,
             6: 64 * 242 / 256 / 8}
# ACS control bits that redirect peer-to-peer traffic up to the root complex (PCIe base spec
# 6.12): with either on in a switch, GPU<->NIC and GPU<->GPU P2P leaves the switch.
ACS_REDIRECT_BITS = ("ReqRedir", "CmpltRedir")
MAX_DEVICES = 4096  # a PCI domain holds 256 buses x 32 x 8; bound what a snapshot can make us read


@dataclass(frozen=True)
class Link:
    """A PCIe link's generation and width; None where sysfs does not say."""

    gen: int | None
    width: int | None

    @property
    def gbps(self) -> float | None:
        """Usable GB/s per direction."""
        if self.gen not in LANE_GBPS or not self.width:
            return None
        return LANE_GBPS[self.gen] * self.width

    def __str__(self) -> str:
        return f"Gen{self.gen if self.gen else '?'} x{self.width if self.width else '?'}"


@dataclass(frozen=True)
class PciDevice:
    """One PCI function: where it sits and how its link trained."""

    bdf: str
    root: str  # pci0000:00: the host bridge (root complex) it hangs under
    parents: tuple[str, ...]  # the bridges above it, root port first
    class_code: int | None
    vendor: int | None
    device: int | None
    numa_node: int | None
    current: Link
    maximum: Link

    @property
    def is_bridge(self) -> bool:
        return self.class_code is not None and self.class_code >> 8 == 0x0604


@dataclass
class PciTree:
    """Every PCI device by BDF, and ACS control per bridge where lspci could read it."""

    devices: dict[str, PciDevice] = field(default_factory=dict)
    acs: dict[str, dict[str, bool]] | None = None  # None: lspci absent or not run (SKIP ACS checks)
    acs_error: str | None = None

    def upstream(self, bdf: str) -> PciDevice | None:
        """The port the device's link connects to (its nearest bridge)."""
        dev = self.devices.get(bdf)
        return self.devices.get(dev.parents[-1]) if dev and dev.parents else None


def parse_speed(text: str | None) -> int | None:
    """'32.0 GT/s PCIe' or '8 GT/s' -> PCIe generation; 'Unknown' -> None."""
    match = _SPEED.search(text or "")
    return GENERATIONS.get(float(match.group(1))) if match else None


def parse_width(text: str | None) -> int | None:
    value = (text or "").strip()
    return int(value) if value.isdigit() and 0 < int(value) <= 32 else None


def _hex(text: str | None) -> int | None:
    try:
        return int((text or "").strip(), 16)
    except ValueError:
        return None


def _numa(text: str | None) -> int | None:
    value = (text or "").strip()
    return int(value) if value.isdigit() and int(value) < 4096 else None


def place(link_target: str | None) -> tuple[str, tuple[str, ...]] | None:
    """'../../../devices/pci0000:00/0000:00:01.0/0000:01:00.0' -> ('pci0000:00', ('0000:00:01.0',))."""
    if not link_target:
        return None
    parts = link_target.split("/")
    roots = [i for i, p in enumerate(parts) if _ROOT.fullmatch(p)]
    if not roots:
        return None
    chain = [p for p in parts[roots[-1] + 1:] if _BDF.fullmatch(p)]
    if not chain:
        return None
    return parts[roots[-1]], tuple(chain[:-1])


def read_device(host, bdf: str) -> PciDevice | None:
    where = place(host.sys.readlink(f"{PCI_DEVICES}/{bdf}"))
    if where is None:
        return None
    base = f"{PCI_DEVICES}/{bdf}"
    read = host.sys.read_value
    return PciDevice(
        bdf=bdf, root=where[0], parents=where[1],
        class_code=_hex(read(f"{base}/class")), vendor=_hex(read(f"{base}/vendor")),
        device=_hex(read(f"{base}/device")), numa_node=_numa(read(f"{base}/numa_node")),
        current=Link(parse_speed(read(f"{base}/current_link_speed")), parse_width(read(f"{base}/current_link_width"))),
        maximum=Link(parse_speed(read(f"{base}/max_link_speed")), parse_width(read(f"{base}/max_link_width"))),
    )


def read_tree(host, with_acs: bool = True) -> PciTree:
    names = [n for n in (host.sys.listdir(PCI_DEVICES) or []) if _BDF.fullmatch(n)][:MAX_DEVICES]
    tree = PciTree()
    for bdf in sorted(names):
        dev = read_device(host, bdf)
        if dev is not None:
            tree.devices[bdf] = dev
    if with_acs and any(d.is_bridge for d in tree.devices.values()):
        tree.acs, tree.acs_error = read_acs(host)
    return tree


def read_acs(host) -> tuple[dict[str, dict[str, bool]] | None, str | None]:
    """ACS control per bridge from `lspci -vvv -D` (extended capabilities need root)."""
    result = host.runner.run(["lspci", "-vvv", "-D"], timeout=20)
    if result.error or result.rc != 0:
        return None, f"lspci -vvv failed: {result.error or result.stderr.strip()[:120] or f'exit {result.rc}'}"
    return parse_lspci_acs(result.stdout), None


def parse_lspci_acs(text: str) -> dict[str, dict[str, bool]]:
    """{bdf: {'ReqRedir': True, ...}} for every function with an ACSCtl line."""
    acs: dict[str, dict[str, bool]] = {}
    current = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            head = line.split(" ", 1)[0].lower()
            current = head if _BDF.fullmatch(head) else None
            continue
        stripped = line.strip()
        if current and stripped.startswith("ACSCtl:"):
            flags = stripped[len("ACSCtl:"):].split()
            acs[current] = {f[:-1]: f.endswith("+") for f in flags if f[-1:] in "+-" and len(f) > 1}
    return acs


def device_of(host, class_dir: str, name: str) -> str | None:
    """The BDF behind /sys/class/<class_dir>/<name>/device (net, infiniband, nvme)."""
    target = host.sys.readlink(f"/sys/class/{class_dir}/{name}/device")
    tail = (target or "").rstrip("/").rsplit("/", 1)[-1]
    return tail if _BDF.fullmatch(tail) else None
