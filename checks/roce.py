"""RoCE and loss: what makes an Ethernet RDMA port lossless (PFC on the RDMA priority, trust DSCP,
ECN/DCQCN, RoCE v2 GIDs) and the counters that show loss anyway (RoCE hw_counters and the NIC's
discards and pause frames, as growth since the last audit), and TCP retransmits (not gate
checks: net.py, which the gate imports, stays lean)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, error, ok, skip, warn
from gpunode.host.facts.roce import (
    CNP_COUNTERS,
    ETHTOOL_DISCARDS,
    ETHTOOL_PAUSE,
    LOSS_COUNTERS,
    ecn_enabled,
    hw_counters,
    parse_ethtool_stats,
    parse_mlnx_qos,
    parse_snmp,
    roce_ports,
)

# The priority RoCE traffic is given in NVIDIA's RoCE configuration guides (DSCP 26 -> priority 3),
# and the one NCCL's NCCL_IB_TC=106 maps to.
RDMA_PRIORITY = 3
TOOL_TIMEOUT_S = 10


def _ports(ctx):
    ports = roce_ports(ctx.host)
    return ports, (None if ports else skip("no RoCE port (no RDMA port with link_layer Ethernet)"))


@check(
    "roce.gid",
    "RoCE ports have RoCE v2 GIDs (routable, what NCCL and the switches expect)",
    area="net",
    remediation="RoCE v2 GIDs appear once the netdev has an IP address; set NCCL_IB_GID_INDEX to a RoCE v2 "
    "GID (show_gids) and keep the default RoCE mode v2 (cma_roce_mode).",
)
def gid(ctx: AuditContext):
    ports, none = _ports(ctx)
    if none:
        return none
    findings = []
    for r in ports:
        observed = {"netdev": r.netdev, "gid_types": sorted(r.gid_types)}
        if "RoCE v2" in r.gid_types:
            findings.append(ok(f"RoCE v2 GID in use ({r.netdev})", observed=observed, subject=r.port.name))
        elif not r.gid_types:
            findings.append(bad(f"no GID configured on {r.netdev or 'its netdev'} (no IP address?)",
                                observed=observed, expected="RoCE v2", subject=r.port.name))
        else:
            findings.append(bad(f"only {', '.join(sorted(r.gid_types))} GIDs: RoCE v1 is not routable",
                                observed=observed, expected="RoCE v2", subject=r.port.name))
    return findings


@check(
    "roce.ecn",
    f"ECN/DCQCN enabled on the RDMA priority ({RDMA_PRIORITY}) of RoCE ports",
    area="net",
    remediation=f"echo 1 > /sys/class/net/IF/ecn/roce_np/enable/{RDMA_PRIORITY} and .../roce_rp/enable/"
    f"{RDMA_PRIORITY} (mlx5; persist with a udev rule or the NIC's config): without DCQCN congestion "
    "turns into pause storms.",
)
def ecn(ctx: AuditContext):
    return _each_netdev(ctx, lambda r: _judge_ecn(ctx, r))


def _each_netdev(ctx: AuditContext, judge):
    """One finding per RoCE port, from `judge`; a port without a netdev SKIPs."""
    ports, none = _ports(ctx)
    if none:
        return none
    return [judge(r) if r.netdev else skip("no netdev found for this port", subject=r.port.name) for r in ports]


def _judge_ecn(ctx: AuditContext, r):
    state = ecn_enabled(ctx.host, r.netdev, RDMA_PRIORITY)
    if all(v is None for v in state.values()):
        return skip(f"knob absent on this host: /sys/class/net/{r.netdev}/ecn/roce_np/enable/{RDMA_PRIORITY}",
                    subject=r.port.name)
    off = [side for side, on in state.items() if on is False]
    if off:
        return bad(f"{r.netdev}: ECN {' and '.join(off)} disabled on priority {RDMA_PRIORITY}",
                   observed=state, expected="enabled", subject=r.port.name)
    return ok(f"{r.netdev}: ECN enabled on priority {RDMA_PRIORITY}", observed=state, subject=r.port.name)


@check(
    "roce.pfc",
    f"PFC on the RDMA priority ({RDMA_PRIORITY}) and trust DSCP on RoCE ports (mlnx_qos)",
    area="net",
    cost="slow",
    remediation=f"mlnx_qos -i IF --trust dscp --pfc 0,0,0,1,0,0,0,0 (PFC on priority {RDMA_PRIORITY}, as the "
    "switch ports are configured); persist it in the NIC's boot config.",
)
def pfc(ctx: AuditContext):
    return _each_netdev(ctx, lambda r: _judge_pfc(ctx, r))


def _judge_pfc(ctx: AuditContext, r):
    result = ctx.host.runner.run(["mlnx_qos", "-i", r.netdev], timeout=TOOL_TIMEOUT_S)
    if result.error is not None or result.rc == 127:
        return skip(f"mlnx_qos is not installed ({result.error or 'command not found'}): PFC and trust state "
                    "cannot be read", subject=r.port.name)
    if not result.ok:
        said = (result.stderr or result.stdout).strip().splitlines()
        return error(f"mlnx_qos -i {r.netdev} exited {result.rc}{': ' + said[0][:120] if said else ''}",
                     subject=r.port.name)
    try:
        qos = parse_mlnx_qos(result.stdout)
    except ValueError as exc:
        return error(f"mlnx_qos -i {r.netdev}: {exc}", subject=r.port.name)
    observed = {"trust": qos.trust, "pfc_priorities": list(qos.pfc)}
    problems = []
    if RDMA_PRIORITY not in qos.pfc:
        problems.append(f"PFC off on priority {RDMA_PRIORITY} (on: {', '.join(map(str, qos.pfc)) or 'none'})")
    if qos.trust != "dscp":
        problems.append(f"trust state {qos.trust or '(not shown)'}, not dscp")
    if problems:
        return bad(f"{r.netdev}: {'; '.join(problems)}", observed=observed,
                   expected={"trust": "dscp", "pfc_priorities": [RDMA_PRIORITY]}, subject=r.port.name)
    return ok(f"{r.netdev}: trust dscp, PFC on priority {RDMA_PRIORITY}", observed=observed, subject=r.port.name)


@check(
    "roce.loss",
    "RoCE ports lose no packets: sequence errors, timeouts and NIC discards do not grow",
    area="net",
    cost="slow",
    remediation="Growing out_of_sequence/packet_seq_err/local_ack_timeout_err or rx_discards_phy mean the "
    "fabric drops RoCE packets: check PFC/ECN on the NIC and the switch port (mlnx_qos, the switch's "
    "buffer and pause counters); pause frames alone are PFC at work.",
)
def loss(ctx: AuditContext):
    ports, none = _ports(ctx)
    if none:
        return none
    now = ctx.host.facts.now
    return [_port_loss(ctx, r, now) for r in ports]


def _port_loss(ctx: AuditContext, r, now):
    """One RoCE port's loss counters (RoCE hw_counters, the NIC's discards and pauses) as growth
    since the last audit, or their lifetime totals on the first reading."""
    counters, note = _loss_counters(ctx, r)
    if not counters:
        return skip(f"no RoCE hw_counters or NIC counters readable{note}", subject=r.port.name)
    growths = {k: ctx.counters.growth(f"roce/{r.port.name}/{k}", v, now) for k, v in counters.items()}
    losses = {k for k in counters if k.split("/", 1)[1] in LOSS_COUNTERS + ETHTOOL_DISCARDS}
    if any(g.first for g in growths.values()):
        lifetime = {k: v for k, v in counters.items() if v and k in losses}
        text = ", ".join(f"{k}={v}" for k, v in lifetime.items())
        finding = warn if lifetime else ok
        return finding(f"{text or 'no loss counter above 0'} (lifetime totals: no earlier reading)"
                       f"{note}", observed=counters, subject=r.port.name)
    return _loss_growth(r, growths, losses, note)


def _loss_counters(ctx: AuditContext, r) -> tuple[dict[str, int], str]:
    """({"hw/NAME" or "nic/NAME": value}, a note when the NIC's counters could not be read)."""
    counters = {f"hw/{k}": v for k, v in hw_counters(ctx.host, r.port.device, r.port.port,
                                                     LOSS_COUNTERS + CNP_COUNTERS).items()}
    note = ""
    if r.netdev:
        result = ctx.host.runner.run(["ethtool", "-S", r.netdev], timeout=TOOL_TIMEOUT_S)
        if result.ok:
            stats = parse_ethtool_stats(result.stdout)
            counters.update({f"nic/{k}": stats[k] for k in ETHTOOL_DISCARDS + ETHTOOL_PAUSE if k in stats})
        else:
            note = f" (NIC counters not read: ethtool {result.error or 'exited ' + str(result.rc)})"
    return counters, note


def _loss_growth(r, growths: dict, losses: set[str], note: str):
    """Loss counters that grew warn; congestion-control counters that grew are named, not judged."""
    hours = min(g.hours for g in growths.values())
    grown = {k: g.delta for k, g in growths.items() if g.delta}
    lost = {k: v for k, v in grown.items() if k in losses}
    other = {k: v for k, v in grown.items() if k not in losses}
    observed = {"since_last_audit": grown, "hours": round(hours, 3)}
    moved = f"; congestion control at work: {', '.join(f'{k} +{v}' for k, v in other.items())}" if other else ""
    if lost:
        return warn(f"{', '.join(f'{k} +{v}' for k, v in lost.items())} in {hours:.1f} h{moved}{note}",
                    observed=observed, expected=0, subject=r.port.name)
    return ok(f"no loss counter grew in {hours:.1f} h{moved}{note}", observed=observed, subject=r.port.name)


RETRANS_WARN = 0.01  # 1 % of segments sent again: TCP (sockets, storage, NCCL's socket transport) is losing packets


@check(
    "net.tcp_retransmits",
    "TCP retransmits stay below 1 % of segments sent since the last audit",
    area="net",
    remediation="Retransmits mean loss on the path: check NIC discards (ethtool -S), the switch port, MTU "
    "mismatches and ring sizes (ethtool -g); nstat -az TcpRetransSegs shows the counter.",
)
def tcp_retransmits(ctx: AuditContext):
    tcp = parse_snmp(ctx.host.sys.read("/proc/net/snmp") or "")
    if "RetransSegs" not in tcp or "OutSegs" not in tcp:
        return skip("knob absent on this host: /proc/net/snmp (Tcp: RetransSegs, OutSegs)")
    now = ctx.host.facts.now
    retrans = ctx.counters.growth("tcp/RetransSegs", tcp["RetransSegs"], now)
    sent = ctx.counters.growth("tcp/OutSegs", tcp["OutSegs"], now)
    if retrans.first or sent.first:
        share = tcp["RetransSegs"] / max(tcp["OutSegs"], 1)
        return ok(f"{tcp['RetransSegs']} of {tcp['OutSegs']} segments retransmitted since boot ({share:.2%}); "
                  "judged as growth from the next audit on", observed=tcp["RetransSegs"])
    share = retrans.delta / max(sent.delta, 1)
    observed = {"retransmitted": retrans.delta, "sent": sent.delta, "hours": round(retrans.hours, 3)}
    text = f"{retrans.delta} of {sent.delta} segments retransmitted in {retrans.hours:.1f} h ({share:.2%})"
    if sent.delta and share > RETRANS_WARN:
        return warn(text, observed=observed, expected=f"<= {RETRANS_WARN:.0%}")
    return ok(text, observed=observed, expected=f"<= {RETRANS_WARN:.0%}")
