"""Network: MTU and link speed of data NICs, InfiniBand port state, rate and error counters,
and the GPUDirect RDMA module when there is RDMA hardware."""

from __future__ import annotations

from collections import Counter

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, error, ok, skip, warn
from gpunode.host.facts import qdisc
from gpunode.host.facts.infiniband import ib_devices, ib_ports, state_code
from gpunode.host.facts.modules import PEERMEM_MODULES, dmabuf_reason, loaded_modules
from gpunode.host.facts.nics import Nic, data_nics, describe, format_speed, physical_nics

JUMBO_SPEED_MBPS = 100_000  # at 100 Gb/s and up a 1500-byte MTU costs CPU and RoCE goodput


def _peers(nics: list[Nic]) -> dict[tuple[str, str], list[Nic]]:
    """NICs of one kind and one PCI model should be configured alike (a management NIC is
    another model, so it is not compared with the data fabric)."""
    groups: dict[tuple[str, str], list[Nic]] = {}
    for n in nics:
        groups.setdefault((n.kind, n.model), []).append(n)
    return groups


@check(
    "net.mtu",
    "MTU of data NICs: consistent per kind, jumbo frames on fast Ethernet",
    area="net",
    remediation="Set the MTU in the network configuration (netplan, NetworkManager, ifupdown) to the fabric's: "
    "9000 on Ethernet/RoCE, 4092 (datagram) or 65520 (connected) on IPoIB, the same on every port.",
)
def mtu(ctx: AuditContext):
    nics = [describe(ctx.host, name) for name in data_nics(ctx.host)]
    if not nics:
        return skip("no physical NIC is up")
    findings = []
    for group in _peers(nics).values():
        readable = [n.mtu for n in group if n.mtu is not None]
        common = Counter(readable).most_common(1)[0][0] if readable else None
        for n in group:
            observed = {"mtu": n.mtu, "kind": n.kind, "speed_mbps": n.speed_mbps, "model": n.model}
            text = f"MTU {n.mtu} ({n.kind}, {format_speed(n.speed_mbps)})"
            if n.mtu is None:
                findings.append(skip(f"knob absent on this host: /sys/class/net/{n.name}/mtu", subject=n.name))
            elif n.mtu != common:
                findings.append(bad(f"{text}; its {len(group) - 1} peer(s) of the same model use {common}",
                                    observed=observed, expected=common, subject=n.name))
            elif n.kind != "infiniband" and (n.speed_mbps or 0) >= JUMBO_SPEED_MBPS and n.mtu <= 1500:
                findings.append(bad(f"{text}: jumbo frames (9000) expected at this speed",
                                    observed=observed, expected=9000, subject=n.name))
            else:
                findings.append(ok(text, observed=observed, subject=n.name))
    return findings


@check(
    "net.link_speed",
    "Data NICs have link, at the speed of their peers",
    area="net",
    remediation="Check cable, optics and switch port (ethtool NIC, the switch's port counters); "
    "a port below its peers' speed negotiated down.",
)
def link_speed(ctx: AuditContext):
    nics = [n for n in physical_nics(ctx.host) if n.admin_up]  # admin-down ports are unused on purpose
    if not nics:
        return skip("no physical NIC is configured up")
    findings = []
    for group in _peers(nics).values():
        best = max((n.speed_mbps or 0 for n in group if n.link_up), default=0)
        for n in group:
            observed = {"speed_mbps": n.speed_mbps, "operstate": n.operstate, "kind": n.kind}
            if not n.link_up:
                findings.append(bad(f"link down (operstate {n.operstate}, carrier {n.carrier})",
                                    observed=observed, expected="up", subject=n.name))
            elif n.speed_mbps is not None and n.speed_mbps < best:
                findings.append(bad(f"{format_speed(n.speed_mbps)}, below its peers' {format_speed(best)}",
                                    observed=observed, expected=best, subject=n.name))
            else:
                findings.append(ok(format_speed(n.speed_mbps), observed=observed, subject=n.name))
    return findings


@check(
    "net.ib.ports",
    "InfiniBand/RDMA ports ACTIVE and LinkUp, at the rate of their peers",
    area="net",
    severity="critical",
    tags=["gate"],
    remediation="Check cable and switch port (ibstat, iblinkinfo); INIT/ARMED with LinkUp means no subnet "
    "manager configured the port. Disable ports that are unused on purpose (ibportstate ... disable).",
)
def ib_port_state(ctx: AuditContext):
    ports = ib_ports(ctx.host)
    if not ports:
        return skip("no InfiniBand/RDMA device")
    best: dict[tuple[str, str | None], float] = {}
    for p in ports:
        if p.active and p.rate_gbps is not None:
            key = (p.hca, p.link_layer)
            best[key] = max(best.get(key, 0.0), p.rate_gbps)
    findings = []
    for p in ports:
        observed = {"state": p.state, "phys_state": p.phys_state, "rate": p.rate, "link_layer": p.link_layer}
        text = f"{p.state}, {p.phys_state}, {p.rate} ({p.link_layer})"
        if p.state is None:
            findings.append(skip(f"knob absent on this host: ports/{p.port}/state", subject=p.name))
        elif state_code(p.phys_state) == 3:  # 3: Disabled - switched off on purpose
            findings.append(ok(f"disabled ({text})", observed=observed, subject=p.name))
        elif not p.active:
            hint = ": physical link up but no subnet manager configured it" if p.link_up else ""
            finding = warn if p.link_layer == "Ethernet" else bad  # Ethernet ports are often unused
            findings.append(finding(f"{text}{hint}", observed=observed, expected="4: ACTIVE, 5: LinkUp",
                                    subject=p.name))
        elif p.rate_gbps is not None and p.rate_gbps < best[(p.hca, p.link_layer)]:
            findings.append(warn(f"{text}: below its peers' {best[(p.hca, p.link_layer)]:g} Gb/sec",
                                 observed=observed, expected=best[(p.hca, p.link_layer)], subject=p.name))
        else:
            findings.append(ok(text, observed=observed, subject=p.name))
    return findings


@check(
    "net.ib.errors",
    "InfiniBand link error counters do not grow",
    area="net",
    remediation="Growing symbol/recovery/link-downed counters point at a cable, optic or switch port: "
    "compare with the switch side (perfquery, ibqueryerrors), reseat or replace; reset with perfquery -R.",
)
def ib_errors(ctx: AuditContext):
    ports = ib_ports(ctx.host, with_counters=True)
    if not ports:
        return skip("no InfiniBand/RDMA device")
    findings = []
    for p in ports:
        if not p.counters:
            findings.append(skip("no error counters readable", subject=p.name))
            continue
        growths = {k: ctx.counters.growth(f"ib/{p.name}/{k}", v, ctx.host.facts.now) for k, v in p.counters.items()}
        lifetime = {k: v for k, v in p.counters.items() if v}
        first = next((g for g in growths.values() if g.first), None)
        if first is not None:
            findings.append(_ib_lifetime_totals(p, lifetime, first))
        else:
            findings.append(_ib_growth(p, growths, lifetime))
    return findings


def _ib_lifetime_totals(p, lifetime: dict[str, int], first):
    """No usable previous reading: all we have are totals since boot or the last reset."""
    text = ", ".join(f"{k}={v}" for k, v in lifetime.items())
    if lifetime:
        return bad(f"{text} (lifetime totals; {first.note()})", observed=lifetime, expected=0, subject=p.name)
    return ok(f"{len(p.counters)} error counters at 0", observed=p.counters, subject=p.name)


def _ib_growth(p, growths: dict, lifetime: dict[str, int]):
    """One port's counters against the last audit's reading."""
    grown = {k: g.delta for k, g in growths.items() if g.delta}
    hours = min(g.hours for g in growths.values())
    observed = {"since_last_audit": grown, "lifetime": lifetime, "hours": round(hours, 3)}
    if grown:
        text = ", ".join(f"{k} +{v}" for k, v in grown.items())
        return bad(f"{text} in {hours:.1f} h since the last audit", observed=observed, expected=0, subject=p.name)
    old = f" (lifetime {', '.join(f'{k}={v}' for k, v in lifetime.items())})" if lifetime else ""
    return ok(f"none of {len(p.counters)} error counters grew in {hours:.1f} h since the last "
              f"audit{old}", observed=observed, expected=0, subject=p.name)


# Kinds the kernel or a distribution attaches on its own: one of these on an interface while the
# sysctl names another is a leftover from before the sysctl changed. Anything else (htb, mqprio,
# tbf, netem, cake ...) was configured on purpose and is left to whoever set it.
DEFAULT_KINDS = ("pfifo_fast", "fq_codel", "fq", "pfifo", "fq_pie", "sfq", "codel")


@check(
    "net.qdisc",
    "Data NICs run the qdisc net.core.default_qdisc names (set before their link came up)",
    area="net",
    cost="slow",
    remediation="The sysctl only applies to qdiscs created after it: re-create the root qdisc "
    "(tc qdisc del dev IFACE root; the kernel attaches the default again) or bring the link down and up "
    "at the next drain.",
)
def interface_qdiscs(ctx: AuditContext):
    default = ctx.host.sys.read_value("/proc/sys/net/core/default_qdisc")
    if default is None:
        return skip("knob absent on this host: /proc/sys/net/core/default_qdisc")
    nics = data_nics(ctx.host)
    if not nics:
        return skip("no physical NIC is up")
    found, why, missing = qdisc.read(ctx.host)
    if found is None:
        return skip(f"cannot see the interfaces' qdiscs: {why}") if missing else error(why or "tc failed")
    findings = []
    for name in nics:
        kinds = qdisc.leaf_kinds(found, name)
        observed = {"qdiscs": kinds, "default_qdisc": default}
        shown = _counted(kinds)
        if not kinds:
            findings.append(skip(f"tc lists no qdisc for {name}", subject=name))
            continue
        stale = sorted({k for k in kinds if k != default and k in DEFAULT_KINDS})
        if stale:
            findings.append(warn(f"runs {shown} while net.core.default_qdisc is {default}: it keeps the qdisc "
                                 "it got before the sysctl changed", observed=observed, expected=default,
                                 subject=name))
        elif default not in kinds:
            findings.append(ok(f"runs {shown}, configured on purpose (default_qdisc {default})",
                               observed=observed, subject=name))
        else:
            findings.append(ok(f"runs {shown} (default_qdisc {default})", observed=observed,
                               expected=default, subject=name))
    return findings


def _counted(kinds: list[str]) -> str:
    """['fq', 'fq', 'pfifo_fast'] -> 'fq x2, pfifo_fast'."""
    counts = Counter(kinds)
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in counts.items())


@check(
    "net.peermem",
    "GPUDirect RDMA possible: nvidia_peermem loaded (or DMA-BUF available)",
    area="net",
    remediation="modprobe nvidia_peermem and add it to /etc/modules-load.d/; without it NCCL stages "
    "every inter-node transfer through host memory.",
)
def peermem(ctx: AuditContext):
    if not ib_devices(ctx.host):
        return skip("no InfiniBand/RDMA device")
    modules = loaded_modules(ctx.host)
    if "nvidia" not in modules:
        return skip("the NVIDIA driver is not loaded")
    loaded = [m for m in PEERMEM_MODULES if m in modules]
    if loaded:
        return ok(f"{loaded[0]} loaded", observed=loaded[0], expected="nvidia_peermem")
    dmabuf = dmabuf_reason(ctx.host)
    if dmabuf:
        return ok(f"nvidia_peermem not loaded; {dmabuf}", observed=None, expected="nvidia_peermem or DMA-BUF")
    return bad("nvidia_peermem not loaded: no GPUDirect RDMA", observed=None, expected="nvidia_peermem")
