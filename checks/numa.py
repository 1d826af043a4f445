"""NUMA: the nodes (CPUs and memory of each) and which node each GPU hangs off."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.host.facts.cpulist import read_cpulist
from gpunode.host.facts.procfs import format_bytes, parse_meminfo

NODES = "/sys/devices/system/node"
# CPU nodes of a healthy two-socket server hold nearly the same RAM (the kernel's own share
# differs a little); less than this fraction of the largest node means DIMMs are missing.
MEMORY_BALANCE = 0.9
# The nodes' MemTotal adds up to /proc/meminfo's MemTotal, give or take the kernel's own pages.
NODE_SUM_TOLERANCE = 0.02


def numa_nodes(host) -> dict[int, dict]:
    """{node: {'cpulist': '0-55,112-167', 'cpus': {...}, 'memory': bytes or None}}."""
    nodes = {}
    for name in host.sys.listdir(NODES) or []:
        if not (name.startswith("node") and name[4:].isdigit()):
            continue
        cpulist = host.sys.read_value(f"{NODES}/{name}/cpulist")
        text = host.sys.read(f"{NODES}/{name}/meminfo")
        nodes[int(name[4:])] = {
            "cpulist": cpulist or "",
            "cpus": read_cpulist(cpulist) or set(),
            "memory": parse_meminfo(text).get("MemTotal") if text else None,
        }
    return dict(sorted(nodes.items()))


@check(
    "numa.nodes",
    "NUMA nodes: CPUs and memory of each, memory balanced across CPU nodes",
    area="numa",
    remediation="Compare DIMM population per socket (dmidecode -t memory, BMC); reseat or replace the missing DIMMs.",
)
def nodes(ctx: AuditContext):
    found = numa_nodes(ctx.host)
    if not found:
        return skip(f"knob absent on this host: {NODES}/node*")
    system = meminfo_total(ctx.host)
    observed: dict[str, object] = {f"node{n}": {"cpus": v["cpulist"], "memory": v["memory"]} for n, v in found.items()}
    observed["meminfo_total"] = system
    # Only the CPU lists go into the message: node memory can still grow after boot (deferred
    # page init) and a message must read the same in a live audit and in its snapshot.
    text = "; ".join(f"node{n}: CPUs {v['cpulist'] or 'none'}" for n, v in found.items())
    problems, partial, sizes = _node_memory(found, system)
    if problems:
        return bad(f"{'; '.join(problems)} — {text}", observed=observed)
    note = ("; per-node memory figures do not add up to MemTotal (memory still being initialised?)"
            if partial else "")
    balanced = ", memory balanced" if len(sizes) > 1 else ""
    return ok(f"{len(found)} node(s){balanced}: {text}{note}", observed=observed)


def _node_memory(found: dict, system: int | None) -> tuple[list[str], bool, list[int]]:
    """(what is wrong with the nodes' memory, whether the per-node figures are incomplete, the
    memory of each CPU node)."""
    cpu_nodes = {n: v for n, v in found.items() if v["cpus"] and v["memory"] is not None}
    problems = [f"node{n} has CPUs but no memory" for n, v in cpu_nodes.items() if v["memory"] == 0]
    known = [v["memory"] for v in found.values() if v["memory"] is not None]
    partial = _incomplete(known, len(found), system)
    sizes = [v["memory"] for v in cpu_nodes.values() if v["memory"]]
    if partial and len(cpu_nodes) > 1:
        problems.append(f"the nodes' memory adds up to {format_bytes(sum(known))} but /proc/meminfo has "
                        f"{format_bytes(system or 0)}: per-node figures are incomplete, balance not judged")
    elif len(sizes) > 1 and min(sizes) < MEMORY_BALANCE * max(sizes):
        problems.append(f"memory unbalanced across CPU nodes ({format_bytes(min(sizes))} vs {format_bytes(max(sizes))})")
    return problems, partial, sizes


def _incomplete(known: list[int], nodes: int, system: int | None) -> bool:
    """Every node's memory is known but they do not add up to MemTotal."""
    return bool(system and known and len(known) == nodes
                and abs(sum(known) - system) > NODE_SUM_TOLERANCE * system)


def meminfo_total(host) -> int | None:
    text = host.sys.read("/proc/meminfo")
    return parse_meminfo(text).get("MemTotal") if text else None


@check(
    "numa.gpu",
    "Each GPU's NUMA node and local CPUs are known",
    area="numa",
    remediation="numa_node -1 on a multi-socket host means the firmware's ACPI SRAT/_PXM does not describe "
    "the PCIe root ports: update the BIOS or enable its NUMA/SRAT option.",
    needs_gpu=True,
)
def gpu_locality(ctx: AuditContext):
    gpus = ctx.gpus()
    multi_node = len(numa_nodes(ctx.host)) > 1
    findings = []
    for g in gpus:
        bdf = g.sysfs_bdf
        if bdf is None:
            findings.append(skip("NVML gave no PCI bus id", subject=g.label))
            continue
        base = f"/sys/bus/pci/devices/{bdf}"
        node = ctx.host.sys.read_int(f"{base}/numa_node")
        cpus = ctx.host.sys.read_value(f"{base}/local_cpulist")
        if node is None:
            findings.append(skip(f"knob absent on this host: {base}/numa_node", subject=g.label))
            continue
        observed = {"bdf": bdf, "numa_node": node, "local_cpulist": cpus}
        if node < 0 and multi_node:
            findings.append(bad(f"{bdf}: numa_node -1 on a multi-node host (local CPUs {cpus or '?'})",
                                observed=observed, subject=g.label))
        elif node < 0:
            findings.append(ok(f"{bdf}: single NUMA node, local CPUs {cpus or '?'}", observed=observed, subject=g.label))
        else:
            findings.append(ok(f"{bdf}: node {node}, local CPUs {cpus or '?'}", observed=observed, subject=g.label))
    return findings
