"""How the GPUs, NICs and NVMe drives of a host are wired: the PCI path between each pair, named
as `nvidia-smi topo -m` names it, and the NVLinks between GPUs.

    NV#   bonded NVLinks (directly, or both GPUs on NVSwitches: the fewer active links of the two)
    PIX   at most one PCIe switch between them (or both under one root port)
    PXB   several PCIe switches, without the host bridge
    PHB   through a PCIe host bridge (the same root complex)
    NODE  between host bridges of one NUMA node
    SYS   across the SMP interconnect between NUMA nodes (QPI/UPI, Infinity Fabric)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gpunode.host.facts.infiniband import ib_ports
from gpunode.host.facts.nics import physical_nics
from gpunode.host.facts.pci import Link, PciDevice, PciTree, device_of, read_tree
from gpunode.host.gpu.model import GpuInfo

# Closest first: a pair's distance is its index here (NV# ranks above all of them).
PCI_PATHS = ("PIX", "PXB", "PHB", "NODE", "SYS")


@dataclass(frozen=True)
class Endpoint:
    """A GPU, NIC or NVMe drive and where it sits in the PCI tree."""

    name: str  # GPU0, mlx5_0, eth0, nvme0
    role: str  # gpu | nic | nvme
    bdf: str | None
    numa_node: int | None
    link: Link | None = None  # its own PCIe link, current
    link_max: Link | None = None
    line_rate_gbps: float | None = None  # NICs: port rate in Gb/s
    rdma: bool = False  # a NIC with an RDMA device (InfiniBand or RoCE): GPUDirect RDMA can use it


@dataclass
class Topology:
    """Endpoints, the PCI tree they sit in, and the NVLinks between GPUs."""

    tree: PciTree
    gpus: list[Endpoint] = field(default_factory=list)
    nics: list[Endpoint] = field(default_factory=list)
    nvmes: list[Endpoint] = field(default_factory=list)
    nvlinks: dict[tuple[int, int], int] = field(default_factory=dict)  # (i, j) -> bonded links
    nvlinks_active: dict[int, int] = field(default_factory=dict)  # GPU index -> active links

    def path(self, a: Endpoint, b: Endpoint) -> str:
        """The connection type of a pair, as nvidia-smi topo -m prints it ('X' for itself)."""
        if a is b:
            return "X"
        if a.role == b.role == "gpu":
            links = self.nvlinks.get(_pair(self.gpus.index(a), self.gpus.index(b)), 0)
            if links:
                return f"NV{links}"
        return pci_path(self.tree, a, b)

    def nearest_nics(self, gpu: Endpoint) -> tuple[str, list[Endpoint]]:
        """The closest connection type from a GPU to any NIC, and the NICs at it."""
        best: tuple[str, list[Endpoint]] = ("", [])
        for nic in self.nics:
            path = self.path(gpu, nic)
            if not best[0] or rank(path) < rank(best[0]):
                best = (path, [nic])
            elif path == best[0]:
                best[1].append(nic)
        return best


def rank(path: str) -> int:
    """Distance of a connection type: NV# < PIX < PXB < PHB < NODE < SYS."""
    if path.startswith("NV"):
        return -1
    return PCI_PATHS.index(path) if path in PCI_PATHS else len(PCI_PATHS)


def _pair(i: int, j: int) -> tuple[int, int]:
    return (i, j) if i < j else (j, i)


def pci_path(tree: PciTree, a: Endpoint, b: Endpoint) -> str:
    da, db = tree.devices.get(a.bdf or ""), tree.devices.get(b.bdf or "")
    if da is None or db is None:
        # no place in the tree (a VM without sysfs links, a recording without them): NUMA alone
        return _numa_path(a.numa_node, b.numa_node)
    if da.root != db.root:
        return _numa_path(a.numa_node, b.numa_node)
    common = 0
    for pa, pb in zip(da.parents, db.parents, strict=False):
        if pa != pb:
            break
        common += 1
    if common == 0:
        return "PHB"
    below_a, below_b = len(da.parents) - common, len(db.parents) - common
    # A switch shows as its upstream port with a downstream port per slot: the deepest shared
    # bridge is the upstream port (common >= 2) and each side has its own downstream port below.
    if below_a <= 1 and below_b <= 1 and (common >= 2 or below_a == below_b == 0):
        return "PIX"
    return "PXB"


def _numa_path(a: int | None, b: int | None) -> str:
    return "SYS" if a is not None and b is not None and a != b else "NODE"


def build(host, gpus: list[GpuInfo], tree: PciTree | None = None) -> Topology:
    """The topology of a host from sysfs (PCI tree, NICs, NVMe) and the NVML inventory."""
    tree = tree if tree is not None else read_tree(host)
    topo = Topology(tree=tree)
    for g in gpus:
        topo.gpus.append(_endpoint(tree, f"GPU{g.index}", "gpu", g.sysfs_bdf))
    topo.nics = _nics(host, tree)
    for name in sorted(host.sys.listdir("/sys/class/nvme") or []):
        topo.nvmes.append(_endpoint(tree, name, "nvme", device_of(host, "nvme", name)))
    _nvlinks(topo, gpus)
    return topo


def _endpoint(tree: PciTree, name: str, role: str, bdf: str | None, rate: float | None = None,
              rdma: bool = False) -> Endpoint:
    dev: PciDevice | None = tree.devices.get(bdf or "")
    return Endpoint(name=name, role=role, bdf=bdf, numa_node=dev.numa_node if dev else None,
                    link=dev.current if dev else None, link_max=dev.maximum if dev else None,
                    line_rate_gbps=rate, rdma=rdma)


def _nics(host, tree: PciTree) -> list[Endpoint]:
    """RDMA devices by their RDMA name (mlx5_0), other physical NICs by interface name; one
    endpoint per PCI function (a RoCE port's netdev and its RDMA device are the same NIC)."""
    out: dict[str, Endpoint] = {}
    rates: dict[str, float] = {}
    for port in ib_ports(host):
        if port.rate_gbps is not None and port.active:
            rates[port.device] = max(rates.get(port.device, 0.0), port.rate_gbps)
    for dev in sorted({p.device for p in ib_ports(host)}):
        bdf = device_of(host, "infiniband", dev)
        if bdf:
            out[bdf] = _endpoint(tree, dev, "nic", bdf, rates.get(dev), rdma=True)
    for nic in physical_nics(host):
        bdf = device_of(host, "net", nic.name)
        if bdf and bdf not in out:
            speed = nic.speed_mbps / 1000 if nic.speed_mbps else None
            out[bdf] = _endpoint(tree, nic.name, "nic", bdf, speed)
    return sorted(out.values(), key=lambda e: e.name)


def _nvlinks(topo: Topology, gpus: list[GpuInfo]) -> None:
    by_bus = {(g.pci_bus_id or "").lower(): i for i, g in enumerate(gpus) if g.pci_bus_id}
    direct: dict[tuple[int, int], int] = {}  # (from, to) -> links, as each GPU reports them
    switched: list[int] = []
    for i, g in enumerate(gpus):
        active = [link for link in g.nvlinks if link.active]
        topo.nvlinks_active[i] = len(active)
        for link in active:
            peer = by_bus.get((link.remote_bus_id or "").lower())
            if peer is not None and peer != i:
                direct[(i, peer)] = direct.get((i, peer), 0) + 1
            elif link.remote_bus_id:
                switched.append(i)
    for (i, j), count in direct.items():  # a pair seen from either end
        key = _pair(i, j)
        topo.nvlinks[key] = max(topo.nvlinks.get(key, 0), count)
    on_switch = sorted(set(switched))
    for x, i in enumerate(on_switch):
        for j in on_switch[x + 1:]:
            topo.nvlinks[(i, j)] = min(topo.nvlinks_active[i], topo.nvlinks_active[j])
