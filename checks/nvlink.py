"""NVLink and the NVSwitch fabric: every link up, few link errors, fabric registration done;
on GB200/GB300 NVL compute trays the IMEX domain too (its node list, `nvidia-imex-ctl -N`).

The nvidia-fabricmanager and nvidia-imex services themselves are profile settings (service kind,
when: nvswitch / when: imex: Fabric Manager runs on the switch trays of an NVL rack, not on its
compute trays).
"""

from __future__ import annotations

from collections import defaultdict

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, ok, skip, warn
from gpunode.checks.gpu_common import counter_growth, each_gpu, gpu_key, readable_gpus, uptime_s
from gpunode.host.facts.nvswitch import NVL_TRAY, has_nvswitch, is_nvl_tray


def _links_by_model(gpus) -> dict[str | None, int]:
    """The most NVLinks any GPU of each model reports: what its siblings should have too."""
    most: dict[str | None, int] = defaultdict(int)
    for g in gpus:
        most[g.name] = max(most[g.name], len(g.nvlinks))
    return most


@check("nvlink.state", "Every NVLink of each GPU is active", area="nvlink", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Drain the node; on NVSwitch systems check Fabric Manager and `nvidia-smi nvlink -s`; "
                   "reset the GPUs or reboot; links that stay down need the baseboard serviced.")
def nvlink_state(ctx: AuditContext):
    gpus = readable_gpus(ctx)
    if not any(g.nvlinks for g in gpus) and not any(k.startswith("nvlink") for g in gpus for k in g.field_errors):
        raise CheckSkipped("no NVLink on these GPUs (PCIe-only GPUs or a VM)")
    switched = has_nvswitch(ctx.host.sys, ctx.inventory().gpus)
    if not switched and not any(link.active for g in gpus for link in g.nvlinks):
        raise CheckSkipped("NVLinks exist but none is active on any GPU and there is no NVSwitch: "
                           "no NVLink bridge connected")
    most = _links_by_model(gpus)

    def judge(g):
        links = g.nvlinks
        expected = most[g.name]
        if not links and not expected:
            return skip("no NVLink on this GPU model")
        if not links:
            return bad(f"reports no NVLink while other {g.name} GPUs have {expected}", observed=0, expected=expected)
        inactive = [link.link for link in links if link.active is False]
        unknown = [link.link for link in links if link.active is None]
        observed = {"links": len(links), "inactive": inactive}
        if inactive and len(inactive) == len(links) and not switched:
            return warn(f"none of its {len(links)} NVLinks is active (no bridge on this GPU?) while other "
                        "GPUs have active links", observed=observed, expected="all active")
        if inactive:
            return bad(f"{len(inactive)} of {len(links)} NVLinks inactive: link(s) {', '.join(map(str, inactive))}",
                       observed=observed, expected="all active")
        if len(links) < expected:
            return bad(f"{len(links)} NVLinks, other {g.name} GPUs have {expected}", observed=observed,
                       expected=expected)
        if unknown:
            return warn(f"state of NVLink(s) {', '.join(map(str, unknown))} unknown", observed=observed)
        versions = sorted({link.version for link in links if link.version is not None})
        version = f" (NVLink {'/'.join(map(str, versions))})" if versions else ""
        return ok(f"all {len(links)} NVLinks active{version}", observed=observed, expected="all active")

    return each_gpu(ctx, judge, needs=("nvlinks",), gpus=ctx.gpus())


# DCGM (dcgm_gpu_hardware_limits.h): any replay or recovery error is over its limit of 1;
# "CRC errors only matter at rates of 100+ per second". Judged on the growth since the last
# audit; on a first reading (or without kept state) on the counts since the driver loaded.
CRC_PER_SECOND = 100.0
_COUNTERS = ("replay", "recovery", "crc_flit", "crc_data")


@check("nvlink.errors", "NVLink error counters (replay, recovery, CRC) stay quiet", area="nvlink",
       severity="warning", needs_gpu=True,
       remediation="Watch whether the counters grow (nvidia-smi nvlink -e); recovery errors that recur on a "
                   "link mean a marginal link: reset the GPUs, then service the baseboard.")
def nvlink_errors(ctx: AuditContext):
    gpus = readable_gpus(ctx)
    if not any(g.nvlinks for g in gpus):
        raise CheckSkipped("no NVLink on these GPUs (PCIe-only GPUs or a VM)")
    uptime = uptime_s(ctx.host)

    def judge(g):
        if not g.nvlinks:
            return skip("no NVLink on this GPU")
        totals = dict.fromkeys(_COUNTERS, 0)  # since the driver loaded
        growths = {}
        for link in g.nvlinks:
            counts = {"replay": link.replay_errors, "recovery": link.recovery_errors,
                      "crc_flit": link.crc_flit_errors, "crc_data": link.crc_data_errors}
            for key, value in counts.items():
                if value is not None:
                    totals[key] += value
                    growths[link.link, key] = counter_growth(ctx, f"{gpu_key(g)}/nvlink{link.link}/{key}", value)
        # One counter without a usable previous reading: the whole GPU is judged on its totals.
        first = not growths or any(gr.first for gr in growths.values())

        def counted(link: int, key: str) -> int:
            gr = growths.get((link, key))
            return 0 if gr is None else gr.value if first else gr.delta

        grown = {k: sum(counted(link.link, k) for link in g.nvlinks) for k in _COUNTERS}
        hours = None if first else min(gr.hours for gr in growths.values())
        noisy = [f"link {link.link}: {counted(link.link, 'replay')} replay, {counted(link.link, 'recovery')} recovery"
                 for link in g.nvlinks if counted(link.link, "replay") or counted(link.link, "recovery")]
        observed = {**totals, "since_last_audit": None if first else grown}
        why = next((gr.note() for gr in growths.values() if gr.first), "no counter readable")
        when = f"in {hours:.1f} h since the last audit" if hours is not None else f"since the driver loaded ({why})"
        crc = grown["crc_flit"] + grown["crc_data"]
        seconds = max(hours * 3600.0, 60.0) if hours is not None else uptime
        if noisy:
            return bad(f"NVLink errors {when}: {'; '.join(noisy)}", observed=observed,
                       expected="no replay/recovery")
        if crc and seconds and crc / seconds >= CRC_PER_SECOND:
            return bad(f"{crc} CRC errors {when}, {crc / seconds:.0f} per second", observed=observed,
                       expected=f"< {CRC_PER_SECOND:.0f}/s")
        note = f"; {crc} CRC errors, below NVIDIA's {CRC_PER_SECOND:.0f}/s concern" if crc else ""
        return ok(f"no replay or recovery errors on {len(g.nvlinks)} links {when}{note}", observed=observed)

    return each_gpu(ctx, judge, needs=("nvlinks",), gpus=ctx.gpus())


@check("nvlink.fabric", "NVSwitch fabric registration completed on every GPU", area="nvlink", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Start or restart nvidia-fabricmanager (systemctl status nvidia-fabricmanager; its log in "
                   "/var/log/fabricmanager.log); its version must match the driver's. On GB200/GB300 NVL racks "
                   "Fabric Manager runs on the NVLink switch trays: look there.")
def fabric(ctx: AuditContext):
    gpus = ctx.gpus()
    if not has_nvswitch(ctx.host.sys, ctx.inventory().gpus):
        raise CheckSkipped("no NVSwitch on this host")

    def judge(g):
        state, status = g.fabric_state, g.fabric_status
        observed = {"state": state, "status": status}
        expected = {"state": "completed", "status": "success"}
        if state in (None, "not_supported"):
            return skip("NVML reports no fabric state for this GPU (before Hopper): "
                        "the nvidia-fabricmanager service setting covers it")
        if state == "completed" and status == "success":
            return ok("fabric registration completed", observed=observed, expected=expected)
        if state == "completed":
            return bad(f"fabric registration completed with error {status}", observed=observed, expected=expected)
        if state == "in_progress":
            return bad("fabric registration still in progress (Fabric Manager starting or stuck)",
                       observed=observed, expected=expected)
        return bad(f"fabric state {state}: Fabric Manager has not registered this GPU", observed=observed,
                   expected=expected)

    return each_gpu(ctx, judge, needs=("fabric_state",), gpus=gpus)


def _nvl_tray(ctx: AuditContext) -> None:
    ctx.gpus()  # SKIP without a driver
    if not is_nvl_tray(ctx.host.sys, ctx.inventory().gpus):
        raise CheckSkipped(f"not a {NVL_TRAY}: no IMEX domain to judge")


@check("nvlink.imex.config", "IMEX node list present and sane (GB200/GB300 NVL compute trays)", area="nvlink",
       severity="critical", tags=["gate"], needs_gpu=True,
       remediation="Write every compute tray's IP address of this NVLink domain, one per line, to the file "
                   "IMEX_NODE_CONFIG_FILE names in /etc/nvidia-imex/config.cfg (default "
                   "/etc/nvidia-imex/nodes_config.cfg), the same on every tray; then restart nvidia-imex.")
def imex_config(ctx: AuditContext):
    _nvl_tray(ctx)
    # Imported here, not at the top: only NVL trays read IMEX, and every other host's gate (before
    # each job) would pay for its parsers (tests/test_gate_cli.py holds the gate's import set).
    from gpunode.host.facts.imex import IMEX_CONFIG, nodes_config_path, parse_nodes_config

    path = nodes_config_path(ctx.host.sys.read(IMEX_CONFIG))
    if not path.startswith("/"):
        return bad(f"{IMEX_CONFIG}: IMEX_NODE_CONFIG_FILE={path[:60]} is not an absolute path", observed=path,
                   expected="an absolute path")
    text = ctx.host.sys.read(path)
    if text is None:
        return bad(f"{path} missing or unreadable: IMEX cannot form a domain", observed=None,
                   expected="one IP address per tray")
    nodes = parse_nodes_config(text)
    observed = {"path": path, "nodes": len(nodes.addresses), "invalid": nodes.invalid, "duplicates": nodes.duplicates}
    if nodes.invalid:
        return bad(f"{path}: not an IP address: {', '.join(nodes.invalid[:3])}", observed=observed,
                   expected="one IP address per line")
    if nodes.duplicates:  # IMEX refuses node maps that differ between trays; a repeat is a broken copy
        return bad(f"{path}: listed twice: {', '.join(nodes.duplicates[:3])}", observed=observed,
                   expected="each tray once")
    if not nodes.addresses:
        return bad(f"{path} lists no node", observed=observed, expected="one IP address per tray")
    return ok(f"{len(nodes.addresses)} nodes in {path}", observed=observed)


IMEX_CTL_TIMEOUT_S = 3.0  # a local socket query; the gate's budget is a few seconds in all


@check("nvlink.imex.domain", "IMEX domain UP, every node READY and connected (nvidia-imex-ctl -N)", area="nvlink",
       severity="critical", tags=["gate"], needs_gpu=True, cost="slow",
       remediation="journalctl -u nvidia-imex on the trays not READY; the node lists must match on every tray "
                   "(!M! in the table); restart nvidia-imex where the list changed.")
def imex_domain(ctx: AuditContext):
    _nvl_tray(ctx)
    from gpunode.host.facts.imex import IMEX_CTL_DOMAIN, parse_imex_ctl  # NVL trays only, as above

    result = ctx.host.runner.run(list(IMEX_CTL_DOMAIN), timeout=IMEX_CTL_TIMEOUT_S)
    if result.error:
        raise CheckSkipped(f"{result.error}: the IMEX domain state is not checked here "
                           "(the nvidia-imex service and its node list still are)")
    if result.timed_out:
        return error(f"nvidia-imex-ctl -N gave no answer within {IMEX_CTL_TIMEOUT_S:.0f}s")
    try:
        domain = parse_imex_ctl(result.stdout)
    except ValueError as exc:
        said = (result.stderr or result.stdout).strip().splitlines()
        return error(f"{exc} (exit {result.rc}{': ' + said[0][:120] if said else ''})")
    return _judge_imex(domain)


def _judge_imex(domain):
    """The parsed `nvidia-imex-ctl -N`: DOWN fails, DEGRADED or a node not ready/connected warns."""
    not_ready = [f"{n.address} {n.state}" for n in domain.not_ready]
    links = [f"{a}->{b} {code}" for a, b, code in sorted(set(domain.not_connected))]
    observed = {"state": domain.state, "nodes": len(domain.nodes), "not_ready": not_ready,
                "not_connected": links[:16]}
    detail = "; ".join(part for part in (", ".join(not_ready[:4]), ", ".join(links[:4])) if part)
    if domain.state == "DOWN":
        return bad(f"IMEX domain DOWN{': ' + detail if detail else ''}", observed=observed, expected="UP")
    if domain.state == "DEGRADED" or not_ready or links:
        # Some trays of the domain are unreachable: jobs that span them fail, but draining every
        # tray for one bad tray would drain the rack; the bad tray's own IMEX service check fails.
        return warn(f"IMEX domain {domain.state}: {detail or 'no detail given'}", observed=observed, expected="UP")
    return ok(f"IMEX domain UP: {len(domain.nodes)} nodes READY, all connected", observed=observed)
