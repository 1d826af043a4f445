"""CPU isolation (isolcpus=, nohz_full=, rcu_nocbs=, irqaffinity=): where a site isolates CPUs for
its jobs, the lists must say what the kernel can do, and the GPUs' NUMA nodes, the IRQs and Slurm's
own daemons must keep housekeeping CPUs. Isolating no CPU is a site's choice, not a fault."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.checks.gpu_common import nvidia_pci_gpus
from gpunode.checks.kernel import cmdline_params
from gpunode.checks.numa import numa_nodes
from gpunode.host.facts.cpulist import format_cpulist, read_cpulist
from gpunode.host.facts.gres import slurm_cores
from gpunode.host.facts.isolation import PARAMS, Isolation, parse_isolation
from gpunode.host.facts.procfs import parse_cmdline
from gpunode.host.facts.slurm_conf import SLURM_CONF, node_values

CPU = "/sys/devices/system/cpu"


@check(
    "cpu.isolation",
    "CPU isolation (isolcpus, nohz_full, rcu_nocbs, irqaffinity) leaves housekeeping CPUs by the GPUs",
    area="cpu",
    remediation="Fix isolcpus=/nohz_full=/rcu_nocbs=/irqaffinity= in GRUB_CMDLINE_LINUX and reboot at the next "
    "drain. Per Documentation/admin-guide/kernel-parameters.txt: isolcpus=[flag-list,]<cpu-list> with the flags "
    "nohz, domain (the default) and managed_irq (keeps managed device interrupts off isolated CPUs); nohz_full= "
    "CPUs are also rcu_nocbs= CPUs, and isolcpus's nohz flag is the same as nohz_full=, so both must name the "
    "same CPUs; keep nohz_full= within the isolcpus= CPUs and irqaffinity= on housekeeping CPUs only. Leave "
    "housekeeping CPUs on each GPU's NUMA node (its driver threads and interrupts run there) and reserve "
    "exactly those cores for the system in slurm.conf (CpuSpecList= or CoreSpecCount= on the NodeName line).",
)
def isolation(ctx: AuditContext):
    params = parse_cmdline(" ".join(cmdline_params(ctx)))
    if not any(name in params for name in PARAMS):
        return ok("no isolation configured", observed={})
    online = read_cpulist(ctx.host.sys.read_value(f"{CPU}/online"))
    if not online:
        return skip(f"knob absent on this host: {CPU}/online")
    iso = parse_isolation(params, last=max(online))
    housekeeping = online - iso.isolated
    problems = list(iso.errors) + _list_problems(iso, online) + _gpu_node_problems(ctx, housekeeping)
    notes = []
    if "isolcpus" in iso.cpus and "managed_irq" not in iso.flags:
        notes.append("no managed_irq flag: managed device interrupts may still land on isolated CPUs")
    # Slurm's reserved cores are compared only where CPUs are taken from housekeeping at all.
    slurm_problem, slurm_note = _slurm(ctx, housekeeping) if iso.isolated else (None, None)
    problems += [slurm_problem] if slurm_problem else []
    notes += [slurm_note] if slurm_note else []
    observed = {"kernel_params": iso.given, "isolcpus_flags": sorted(iso.flags) if "isolcpus" in iso.given else None,
                "housekeeping": format_cpulist(housekeeping), "online": format_cpulist(online)}
    summary = f"housekeeping CPUs {format_cpulist(housekeeping) or 'none'} of {format_cpulist(online)}"
    if problems:
        return bad("; ".join(problems + notes), observed=observed, expected="isolation that leaves housekeeping")
    return ok("; ".join([summary] + notes), observed=observed)


def _list_problems(iso: Isolation, online: set[int]) -> list[str]:
    """Lists that name CPUs that are not online, unknown isolcpus flags, nohz_full= problems,
    irqaffinity= on isolated CPUs, no housekeeping CPU left."""
    problems = [f"isolcpus flag {f!r} is unknown (the kernel skips it)" for f in iso.unknown_flags]
    for name, cpus in iso.cpus.items():
        missing = cpus - online
        if missing:
            problems.append(f"{name}= names CPUs {format_cpulist(missing)} that are not online "
                            f"(online {format_cpulist(online)})")
    problems += _nohz_problems(iso)
    overlap = iso.cpus.get("irqaffinity", set()) & iso.isolated
    if overlap:
        problems.append(f"irqaffinity= sends interrupts to isolated CPUs {format_cpulist(overlap)}")
    if iso.isolated and not (online - iso.isolated):
        problems.append("every online CPU is isolated: the kernel falls back to the boot CPU for housekeeping")
    return problems


def _nohz_problems(iso: Isolation) -> list[str]:
    """nohz_full= CPUs outside isolcpus=, or not the CPUs of isolcpus's nohz flag."""
    isolcpus, nohz_full = iso.cpus.get("isolcpus"), iso.cpus.get("nohz_full")
    if nohz_full is None:
        return []
    problems = []
    outside = nohz_full - iso.off_scheduler
    if outside:
        where = "not in isolcpus=" if not outside <= (isolcpus or set()) else "in isolcpus= without its domain flag"
        problems.append(f"nohz_full= CPUs {format_cpulist(outside)} are {where}: the scheduler "
                        "balances tasks onto them, so their tick seldom stops")
    if isolcpus is not None and "nohz" in iso.flags and nohz_full != isolcpus:
        problems.append("isolcpus=nohz and nohz_full= name different CPUs: the kernel keeps the first and "
                        "ignores the other (\"nohz_full= must match isolcpus=\")")
    return problems


def _gpu_node_problems(ctx: AuditContext, housekeeping: set[int]) -> list[str]:
    """A NUMA node that holds a GPU and keeps no housekeeping CPU."""
    nodes = numa_nodes(ctx.host)
    problems = []
    held: dict[int, list[str]] = {}
    for bdf in nvidia_pci_gpus(ctx.host):
        node = ctx.host.sys.read_int(f"/sys/bus/pci/devices/{bdf}/numa_node")
        if node == -1 and len(nodes) == 1:
            node = next(iter(nodes))  # one node: the firmware need not say it
        if node is not None and node in nodes:
            held.setdefault(node, []).append(bdf)
    for node, bdfs in sorted(held.items()):
        cpus = nodes[node]["cpus"]
        if cpus and not cpus & housekeeping:
            problems.append(f"NUMA node {node} (GPU {', '.join(bdfs)}) keeps no housekeeping CPU: all of "
                            f"{format_cpulist(cpus)} are isolated")
    return problems


def _slurm(ctx: AuditContext, housekeeping: set[int]) -> tuple[str | None, str | None]:
    """(a problem, a note): Slurm's reserved cores (CpuSpecList=, CoreSpecCount=) against the
    cores of the housekeeping CPUs."""
    text = ctx.host.sys.read(SLURM_CONF)
    if text is None:
        return None, f"no {SLURM_CONF}: Slurm's CpuSpecList/CoreSpecCount not compared"
    node = node_values(text, ctx.host.facts.hostname)
    if node is None:
        return None, f"no NodeName line for {ctx.host.facts.hostname} in {SLURM_CONF}: Slurm not compared"
    cores = slurm_cores(ctx.host)
    if not cores:
        return None, f"CPU topology not readable ({CPU}/cpu*/topology): Slurm not compared"
    hk_cores = {k for k, cpus in cores.items() if cpus & housekeeping}
    if "cpuspeclist" in node:
        return _cpu_spec_list(node["cpuspeclist"], cores, hk_cores), None
    if "corespeccount" in node:
        count = node["corespeccount"]
        if not count.isdigit() or int(count) != len(hk_cores):
            return (f"slurm.conf CoreSpecCount={count} but the housekeeping CPUs span {len(hk_cores)} "
                    "core(s)"), None
        return None, None
    return ("slurm.conf reserves no cores for the system (no CpuSpecList/CoreSpecCount on this NodeName "
            "line): jobs and slurmd share the housekeeping CPUs"), None


def _cpu_spec_list(value: str, cores: dict[int, set[int]], hk_cores: set[int]) -> str | None:
    """CpuSpecList names Slurm's abstract CPU ids (core by core, each core's threads in turn);
    Slurm widens it to whole cores, so the cores are compared."""
    threads = max((len(c) for c in cores.values()), default=1)
    ids = read_cpulist(value)
    if ids is None:
        return f"slurm.conf CpuSpecList={value[:60]} is not a CPU list"
    spec_cores = {i // threads for i in ids}
    if spec_cores == hk_cores:
        return None
    shown = format_cpulist(set().union(*(cores.get(k, set()) for k in spec_cores)))
    wanted = format_cpulist(set().union(*(cores[k] for k in hk_cores)))
    return (f"slurm.conf CpuSpecList={value[:60]} reserves CPUs {shown or 'none'} but the housekeeping cores "
            f"are CPUs {wanted or 'none'}")
