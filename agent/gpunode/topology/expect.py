"""`gpunode expect`: the figure every bench metric should reach on this host, from its live links.

Each expectation is raw rate x efficiency (topology/rates.py), shown with its arithmetic:
    h2d.pinned: PCIe Gen5 x16 = 63.0 GB/s x 0.87 = 54.8 GB/s
The raw rate is what the hardware can do at full link (the GPU's own PCIe capability, all its
NVLinks); where a link now runs below that (a GPU at x8, a switch uplink at Gen4, a NIC at half
width) the expectation says which link limits it and to what, so a low figure names its cause.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpunode.host.facts.pci import Link
from gpunode.host.facts.topology import Endpoint, Topology
from gpunode.host.gpu.model import GpuInfo
from gpunode.topology.rates import (
    CORES_PER_SM,
    DATASHEET,
    EFFICIENCY,
    FLOPS_PER_CLOCK,
    NCCL_NVLINK_GBPS,
    NVLINK_GBPS,
)

NCCL_COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter")


@dataclass(frozen=True)
class Expectation:
    """One metric's expected figure and how it was derived."""

    metric: str
    value: float
    unit: str
    raw: float
    efficiency: float
    arithmetic: str  # "PCIe Gen5 x16 = 63.0 GB/s x 0.87 = 54.8 GB/s"
    gpu: int | None = None
    limited_by: str | None = None  # the link below its full rate, when one is
    limited_value: float | None = None  # what the figure can reach through that link
    max_cov: float = 0.06  # the spread above which a measurement is too unstable to judge

    def to_json(self) -> dict:
        return {"metric": self.metric, "gpu": self.gpu, "value": round(self.value, 3), "unit": self.unit,
                "raw": round(self.raw, 3), "efficiency": self.efficiency, "arithmetic": self.arithmetic,
                "limited_by": self.limited_by,
                "limited_value": None if self.limited_value is None else round(self.limited_value, 3),
                "max_cov": self.max_cov}


def _make(metric: str, family: str, raw: float, unit: str, what: str, gpu: int | None = None,
          limited: tuple[str, float] | None = None) -> Expectation:
    family_eff = EFFICIENCY[family]
    eff = family_eff.value
    value = raw * eff
    text = f"{what} = {raw:,.1f} {unit} x {eff:g} = {value:,.1f} {unit}"
    lim_by, lim_value = (limited[0], limited[1] * eff) if limited else (None, None)
    return Expectation(metric, value, unit, raw, eff, text, gpu, lim_by, lim_value, family_eff.max_cov)


def expectations(topo: Topology, gpus: list[GpuInfo]) -> list[Expectation]:
    """Every metric this host's topology lets us derive, per GPU then per host."""
    out: list[Expectation] = []
    for gpu in gpus:
        out += _gemm(gpu) + _hbm(gpu) + _host_link(topo, gpu)
    out += _between_gpus(topo, gpus)
    for nic in topo.nics:
        if nic.line_rate_gbps:
            out.append(_make(f"nic.{nic.name}", "nic", nic.line_rate_gbps / 8, "GB/s",
                             f"{nic.name} {nic.line_rate_gbps:g} Gb/s", limited=_nic_limit(nic)))
    return out


def _sms_and_bus(gpu: GpuInfo) -> tuple[int | None, int | None, str]:
    """SM count and memory bus width, from NVML, else the datasheet table (said so)."""
    sms = None
    if gpu.cuda_cores and gpu.architecture in CORES_PER_SM:
        sms = gpu.cuda_cores // CORES_PER_SM[gpu.architecture]
    bus = gpu.memory_bus_width_bits
    note = ""
    sheet = DATASHEET.get((gpu.pci_device_id or 0) >> 16 & 0xFFFF)
    if sheet and (sms is None or bus is None):
        sms, bus, note = sms or sheet[0], bus or sheet[1], " (datasheet)"
    return sms, bus, note


def _gemm(gpu: GpuInfo) -> list[Expectation]:
    sms, _, note = _sms_and_bus(gpu)
    per_clock = FLOPS_PER_CLOCK.get(gpu.architecture or -1, {})
    if not sms or not gpu.sm_clock_max_mhz or not per_clock:
        return []
    out = []
    for dtype, flops in per_clock.items():
        raw = sms * gpu.sm_clock_max_mhz * 1e6 * flops / 1e12
        what = f"{sms} SMs{note} x {gpu.sm_clock_max_mhz} MHz x {flops} FLOP/clk"
        out.append(_make(f"gemm.{dtype}", f"gemm.{dtype}", raw, "TFLOP/s", what, gpu.index))
    return out


def hbm_raw(gpu: GpuInfo) -> tuple[float, str] | None:
    _, bus, note = _sms_and_bus(gpu)
    if not bus or not gpu.mem_clock_max_mhz:
        return None
    # double data rate; hbm.d2d counts bytes read plus bytes written, as the bus carries both
    return bus / 8 * gpu.mem_clock_max_mhz * 1e6 * 2 / 1e9, f"{bus}-bit{note} x {gpu.mem_clock_max_mhz} MHz x 2"


def _hbm(gpu: GpuInfo) -> list[Expectation]:
    raw = hbm_raw(gpu)
    return [_make("hbm.d2d", "hbm", raw[0], "GB/s", raw[1], gpu.index)] if raw else []


def gpu_links(topo: Topology, gpu: GpuInfo) -> tuple[Link, Link | None, str | None]:
    """(the GPU's full PCIe link, the slowest link on its path to the CPU now, which one that is)."""
    full = Link(gpu.pcie_gen_gpu_max or gpu.pcie_gen_max, gpu.pcie_width_max)
    # an idle GPU drops its link speed to save power: judge the width now, the speed it trained to
    now = Link(gpu.pcie_gen_max, gpu.pcie_width_current or gpu.pcie_width_max)
    slowest, where = now, f"GPU{gpu.index} link at {now} of {full}"
    dev = topo.tree.devices.get(gpu.sysfs_bdf or "")
    for bdf in reversed(dev.parents if dev else ()):
        bridge = topo.tree.devices[bdf] if bdf in topo.tree.devices else None
        if bridge and bridge.current.gbps and slowest.gbps and bridge.current.gbps < slowest.gbps:
            slowest, where = bridge.current, f"upstream link of bridge {bdf} at {bridge.current}"
    if full.gbps and slowest.gbps and slowest.gbps < full.gbps - 1e-9:
        return full, slowest, where
    return full, None, None


def _host_link(topo: Topology, gpu: GpuInfo) -> list[Expectation]:
    full, slowest, where = gpu_links(topo, gpu)
    if not full.gbps:
        return []
    limited = (where or "", slowest.gbps) if slowest and slowest.gbps else None
    return [_make(f"{direction}.pinned", "h2d", full.gbps, "GB/s", f"PCIe {full}", gpu.index, limited)
            for direction in ("h2d", "d2h")]


def _nic_limit(nic: Endpoint) -> tuple[str, float] | None:
    """A NIC whose PCIe link runs below its maximum and below its line rate."""
    if nic.link and nic.link_max and nic.link.gbps and nic.link_max.gbps and nic.link.gbps < nic.link_max.gbps:
        if nic.line_rate_gbps and nic.link.gbps < nic.line_rate_gbps / 8:
            return f"{nic.name} PCIe link at {nic.link} of {nic.link_max}", nic.link.gbps
    return None


def _between_gpus(topo: Topology, gpus: list[GpuInfo]) -> list[Expectation]:
    if len(gpus) == 1:
        return _one_gpu_copy(gpus[0])
    arch = gpus[0].architecture if gpus else None
    pairs = [(i, j) for i in range(len(gpus)) for j in range(i + 1, len(gpus))]
    out = [e for p in pairs if (e := _p2p(topo, gpus, p, arch)) is not None]
    return out + _nccl_ring(topo, pairs, arch)


def _one_gpu_copy(gpu: GpuInfo) -> list[Expectation]:
    """One GPU: NCCL's send/recv is a copy in its own HBM."""
    raw = hbm_raw(gpu)
    if raw is None:
        return []
    return [_make("nccl.sendrecv.busbw", "copy.local", raw[0], "GB/s", f"one GPU: a copy in HBM {raw[1]}")]


def _nccl_ring(topo: Topology, pairs: list[tuple[int, int]], arch: int | None) -> list[Expectation]:
    """Every pair on NVLink: NCCL's ring over the fewest links of any pair, and NVLS on an NVSwitch."""
    paths = [topo.path(topo.gpus[i], topo.gpus[j]) for i, j in pairs]
    if not (pairs and all(p.startswith("NV") for p in paths) and arch in NCCL_NVLINK_GBPS):
        return []
    links = min(int(p[2:]) for p in paths)
    what = f"NCCL ring model {links} NVLinks x {NCCL_NVLINK_GBPS[arch]:g} GB/s"
    ring = links * NCCL_NVLINK_GBPS[arch]
    out = [_make(name, "nccl.ring", ring, "GB/s", what)
           for name in [f"nccl.{c}.busbw" for c in NCCL_COLLECTIVES] + ["torch.all_reduce.busbw"]]
    if _on_nvswitch(topo, pairs) and arch >= 9:
        out.append(_make("nccl.all_reduce.busbw.nvls", "nccl.nvls", ring, "GB/s", f"NVLink SHARP on {what}"))
    return out


def _p2p(topo: Topology, gpus: list[GpuInfo], pair: tuple[int, int], arch: int | None) -> Expectation | None:
    """The copy from one GPU to another: its NVLinks, else the slower of the two PCIe links."""
    i, j = pair
    path = topo.path(topo.gpus[i], topo.gpus[j])
    name = f"p2p.{gpus[i].index}-{gpus[j].index}"
    if path.startswith("NV") and arch in NVLINK_GBPS:
        links = int(path[2:])
        return _make(name, "p2p", links * NVLINK_GBPS[arch], "GB/s", f"{links} NVLinks x {NVLINK_GBPS[arch]:g} GB/s")
    rates = [gpu_links(topo, gpus[k])[0] for k in pair]
    slower = min(rates, key=lambda link: link.gbps or 0.0)
    if not slower.gbps:
        return None
    return _make(name, "p2p", slower.gbps, "GB/s", f"PCIe {slower} through {path}")


def _on_nvswitch(topo: Topology, pairs: list[tuple[int, int]]) -> bool:
    """Every pair bonded with the same link count as each GPU has active: an NVSwitch fabric."""
    return len(topo.gpus) > 2 and all(topo.nvlinks.get(p) == topo.nvlinks_active.get(p[0]) for p in pairs)

