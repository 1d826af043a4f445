"""How GPUs, NICs and NVMe drives are wired: links at full speed and width at both ends, each GPU
near a NIC, no ACS redirect between paired GPUs and NICs, enough network per GPU."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, ok, skip, warn
from gpunode.host.facts.cpulist import format_cpulist, read_cpulist
from gpunode.host.facts.gres import gpu_minors, read_gres, slurm_cores
from gpunode.host.facts.iommu import iommu_groups
from gpunode.host.facts.pci import ACS_REDIRECT_BITS
from gpunode.host.facts.topology import Endpoint, Topology, build, rank

# Below this share of a GPU's own PCIe rate, the network a GPU gets is a bottleneck for any
# multi-node job (8 GPUs sharing 2 x 200 Gb/s: 6.2 of 63 GB/s = 0.10); a DGX/HGX pairs one
# 400 Gb/s NIC with each GPU (50 of 63 GB/s = 0.79).
NETWORK_SHARE_MIN = 0.25


def topology(ctx: AuditContext) -> Topology:
    """Built once per run and shared by the checks here; GPUs from NVML when there are any."""
    def compute() -> Topology:
        inv = ctx.inventory()
        return build(ctx.host, inv.gpus if inv.available else [])
    return ctx.host.cached("topology", compute)


def rdma_nics(topo: Topology) -> list[Endpoint]:
    """NICs GPUDirect RDMA can use: those with an RDMA device (InfiniBand or RoCE)."""
    return [n for n in topo.nics if n.rdma and n.bdf]


def gpus_and_rdma_nics(ctx: AuditContext, why: str) -> tuple[Topology, list[Endpoint]]:
    """The topology of a host with GPUs and RDMA NICs; SKIP (with why the check needs them) else."""
    ctx.gpus()
    topo = topology(ctx)
    nics = rdma_nics(topo)
    if not nics:
        raise CheckSkipped(f"no RDMA NIC (InfiniBand or RoCE): {why}")
    return topo, nics


@check("topology.link", "NICs and NVMe drives at their full PCIe speed and width, at both ends", area="topology",
       severity="critical",
       remediation="A NIC or drive below its link: reseat it or its riser, check the slot's bifurcation and the "
                   "BIOS PCIe settings; a slot that cannot do the device's speed limits it for good.")
def link(ctx: AuditContext):
    topo = topology(ctx)
    devices = [(d.name, d.role, d.bdf) for d in topo.nics + topo.nvmes if d.bdf in topo.tree.devices]
    # the switch ports above GPUs and NICs: a downtrained uplink halves every device below it
    above = {b for d in topo.gpus + topo.nics for b in _parents(topo, d)}
    devices += [(bdf, "bridge", bdf) for bdf in sorted(above)]
    if not devices:
        return skip("no PCI NIC or NVMe drive found in sysfs")
    return [_judge_link(topo, name, role, bdf or "") for name, role, bdf in devices]


def _parents(topo: Topology, d: Endpoint) -> tuple[str, ...]:
    dev = topo.tree.devices.get(d.bdf or "")
    return dev.parents if dev else ()


def _judge_link(topo: Topology, name: str, role: str, bdf: str):
    dev = topo.tree.devices[bdf]
    port = topo.tree.upstream(bdf)
    observed, expected = str(dev.current), str(dev.maximum)
    if dev.current.width and dev.maximum.width and dev.current.width < dev.maximum.width:
        return bad(f"{role} link downtrained to x{dev.current.width} of x{dev.maximum.width}",
                   observed=observed, expected=expected, subject=name)
    if dev.current.gen and dev.maximum.gen and dev.current.gen < dev.maximum.gen:
        return warn(f"{role} link at Gen{dev.current.gen} of Gen{dev.maximum.gen}",
                    observed=observed, expected=expected, subject=name)
    if port and port.maximum.gen and dev.maximum.gen and port.maximum.gen < dev.maximum.gen:
        return warn(f"the slot ({port.bdf}) limits the link to Gen{port.maximum.gen}; the {role} can do "
                    f"Gen{dev.maximum.gen}", observed=observed, expected=expected, subject=name)
    if dev.current.gen is None and dev.current.width is None:
        return skip("sysfs shows no link state for this device", subject=name)
    return ok(f"{observed} of {expected}", observed=observed, expected=expected, subject=name)


@check("topology.gpu_nic", "Each GPU has a NIC behind the same PCIe switch (PIX/PXB), none across the socket",
       area="topology", severity="critical", needs_gpu=True,
       remediation="GPUDirect RDMA from a GPU to a NIC on another socket crosses the CPU interconnect at a "
                   "fraction of the bandwidth: move the NIC or GPU to paired slots (the platform's manual), "
                   "or point NCCL_IB_HCA at the NIC beside each GPU.")
def gpu_nic(ctx: AuditContext):
    topo, nics = gpus_and_rdma_nics(ctx, "GPU/NIC pairing applies to GPUDirect RDMA")
    paired = len(nics) >= len(topo.gpus)
    taken: set[str] = set()
    findings = []
    for gpu in topo.gpus:
        choices = sorted(((topo.path(gpu, n), n) for n in nics), key=lambda pn: (rank(pn[0]), pn[1].name in taken))
        path, nic = choices[0]
        taken.add(nic.name)
        observed = f"{nic.name} at {path}"
        if paired and rank(path) > rank("PXB"):
            findings.append(bad(f"nearest NIC is {nic.name} at {path}: {len(nics)} NICs for {len(topo.gpus)} GPUs "
                                "should pair each GPU with a NIC behind its PCIe switch",
                                observed=observed, expected="PIX or PXB", subject=gpu.name))
        elif path == "SYS":
            findings.append(warn(f"every NIC is across the socket (nearest {nic.name} at SYS)",
                                 observed=observed, expected="NODE or closer", subject=gpu.name))
        else:
            findings.append(ok(f"nearest NIC {nic.name} at {path}", observed=observed, subject=gpu.name))
    return findings


@check("topology.acs", "No ACS redirect on the PCIe bridges between paired GPUs and NICs", area="topology",
       severity="critical", needs_gpu=True, needs_root=True,
       remediation="ACS request/completion redirect sends GPU<->NIC and GPU<->GPU P2P traffic up to the root "
                   "complex: disable ACS on the switches in the BIOS (or with setpci at boot) on bare metal "
                   "where GPUDirect is used; keep the IOMMU in passthrough (iommu=pt) there.")
def acs(ctx: AuditContext):
    topo, nics = gpus_and_rdma_nics(ctx, "ACS redirect matters for GPUDirect RDMA")
    if topo.tree.acs is None:
        raise CheckSkipped(topo.tree.acs_error or "no PCIe bridge with ACS on this host")
    groups = iommu_groups(ctx.host)
    findings = []
    for gpu in topo.gpus:
        path, near = topo.nearest_nics(gpu)
        if rank(path) > rank("PXB"):
            findings.append(skip(f"no NIC behind the GPU's switch (nearest at {path})", subject=gpu.name))
            continue
        redirecting = sorted({b for nic in near for b in bridges_between(topo, gpu, nic) if _redirects(topo, b)})
        if redirecting:
            mode = f"; the IOMMU translates DMA ({groups} groups)" if groups else ""
            findings.append(bad(f"ACS redirect on {', '.join(redirecting)} between {gpu.name} and "
                                f"{near[0].name}{mode}", observed="redirect on", expected="off", subject=gpu.name))
        else:
            findings.append(ok(f"no ACS redirect between {gpu.name} and {near[0].name}", subject=gpu.name))
    return findings


def bridges_between(topo: Topology, a: Endpoint, b: Endpoint) -> list[str]:
    """The bridges a P2P transfer between two devices under one root complex passes."""
    da, db = topo.tree.devices.get(a.bdf or ""), topo.tree.devices.get(b.bdf or "")
    if da is None or db is None or da.root != db.root:
        return []
    common = 0
    for pa, pb in zip(da.parents, db.parents, strict=False):
        if pa != pb:
            break
        common += 1
    return list(da.parents[max(common - 1, 0):]) + list(db.parents[common:])


def _redirects(topo: Topology, bdf: str) -> bool:
    flags = (topo.tree.acs or {}).get(bdf, {})
    return any(flags.get(bit) for bit in ACS_REDIRECT_BITS)


@check("topology.nic_share", "Network per GPU against the GPU's own PCIe rate (NIC oversubscription)",
       area="topology", severity="warning", needs_gpu=True,
       remediation="Too little network per GPU for multi-node jobs: add NICs (one 400 Gb/s NIC per GPU on "
                   "HGX-class nodes) or schedule these nodes for single-node work.")
def nic_share(ctx: AuditContext):
    topo, nics = gpus_and_rdma_nics(ctx, "this node is not set up for multi-node GPU traffic")
    network = sum(n.line_rate_gbps or 0 for n in nics) / 8
    links = [g.link_max.gbps for g in topo.gpus if g.link_max and g.link_max.gbps]
    if not links:
        raise CheckSkipped("the GPUs' PCIe link rate is not in sysfs")
    per_gpu, pcie = network / len(topo.gpus), min(links)
    share = per_gpu / pcie
    observed = f"{len(nics)} NICs, {len(topo.gpus)} GPUs: {per_gpu:.1f} GB/s per GPU of {pcie:.1f} GB/s PCIe ({share:.2f})"
    if share < NETWORK_SHARE_MIN:
        return warn(observed, observed=round(share, 3), expected=f">= {NETWORK_SHARE_MIN}")
    return ok(observed, observed=round(share, 3), expected=f">= {NETWORK_SHARE_MIN}")


@check("topology.gres", "Slurm gres.conf binds each GPU to cores of its own NUMA node", area="topology",
       severity="warning", needs_gpu=True,
       remediation="Fix Cores= in gres.conf to the cores local to each GPU (nvidia-smi topo -m's CPU "
                   "affinity, in Slurm's core numbering), or use AutoDetect=nvml; restart slurmd.")
def gres(ctx: AuditContext):
    ctx.gpus()
    conf = read_gres(ctx.host, ctx.host.facts.hostname)
    if conf is None:
        raise CheckSkipped("no gres.conf (/etc/slurm/gres.conf): not a Slurm node, or GPUs not declared as gres")
    findings = [bad(e, subject=conf.path) for e in conf.errors]
    if not conf.gpus:
        if conf.autodetect == "nvml":
            return findings + [ok("AutoDetect=nvml: slurmd takes GPU files and core affinity from NVML",
                                  subject=conf.path)]
        return findings or [skip(f"{conf.path} declares no GPU device file for this node", subject=conf.path)]
    cores, minors = slurm_cores(ctx.host), gpu_minors(ctx.host)
    for g in conf.gpus:
        findings.append(_judge_gres(ctx, g, cores, minors))
    return findings


def _judge_gres(ctx: AuditContext, g, cores: dict[int, set[int]], minors: dict[int, str]):
    if g.cores is None:
        return warn(f"{g.device} (line {g.line}) has no Cores=: jobs may get CPUs on the far socket",
                    subject=g.device)
    bdf = minors.get(g.minor)
    local = read_cpulist(ctx.host.sys.read_value(f"/sys/bus/pci/devices/{bdf}/local_cpulist")) if bdf else None
    if not local or not cores:
        return skip(f"{g.device}: its GPU's local CPUs or the core topology are not readable", subject=g.device)
    unknown = sorted(c for c in g.cores if c not in cores)
    if unknown:
        return bad(f"{g.device} (line {g.line}): Cores= names cores this node does not have ({unknown[:4]})",
                   subject=g.device)
    far = sorted(c for c in g.cores if not cores[c] <= local)
    observed = f"Cores={format_cpulist(set(g.cores))}"
    if far:
        return bad(f"{g.device} ({bdf}) bound to cores off its NUMA node: {format_cpulist(set(far))} "
                   f"(line {g.line})", observed=observed, expected=f"CPUs {format_cpulist(local)}", subject=g.device)
    return ok(f"{g.device} ({bdf}) bound to its own NUMA node's cores", observed=observed, subject=g.device)
