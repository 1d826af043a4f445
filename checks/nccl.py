"""NCCL settings the node hands to every job (/etc/nccl.conf, Slurm's TaskProlog): names of
HCAs and interfaces that exist, and no settings NCCL's docs keep for debugging."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip, warn
from gpunode.host.facts.infiniband import IB_ROOT, ib_devices
from gpunode.host.facts.nccl_env import node_settings, parse_filter, unmatched

# NCCL's env docs (User Guide 2.29, env.html): 'Other parameters listed in the "Debugging" section
# should not be used in production nor retained in scripts, or only as workaround, and removed as
# soon as the issue is resolved. Keeping them set may result in sub-optimal behavior, crashes, or
# hangs.' These are the variables of that section.
DOC_WORDS = ('NCCL\'s docs list it under "Debugging": "should not be used in production nor retained in scripts, '
             'or only as workaround ... Keeping them set may result in sub-optimal behavior, crashes, or hangs."')
DEBUG_ONLY = frozenset((
    "NCCL_P2P_DISABLE", "NCCL_P2P_LEVEL", "NCCL_P2P_DIRECT_DISABLE", "NCCL_SHM_DISABLE", "NCCL_BUFFSIZE",
    "NCCL_NTHREADS", "NCCL_MAX_NCHANNELS", "NCCL_MIN_NCHANNELS", "NCCL_CHECKS_DISABLE", "NCCL_CHECK_POINTERS",
    "NCCL_LAUNCH_MODE", "NCCL_IB_DISABLE", "NCCL_IB_AR_THRESHOLD", "NCCL_IB_QPS_PER_CONNECTION",
    "NCCL_IB_SPLIT_DATA_ON_QPS", "NCCL_IB_CUDA_SUPPORT", "NCCL_IB_PCI_RELAXED_ORDERING", "NCCL_IB_ADAPTIVE_ROUTING",
    "NCCL_IB_ECE_ENABLE", "NCCL_MEM_SYNC_DOMAIN", "NCCL_CUMEM_ENABLE", "NCCL_CUMEM_HOST_ENABLE",
    "NCCL_NET_GDR_LEVEL", "NCCL_IB_GDR_LEVEL", "NCCL_NET_GDR_C2C", "NCCL_NET_GDR_READ", "NCCL_NET_SHARED_BUFFERS",
    "NCCL_NET_SHARED_COMMS", "NCCL_SINGLE_RING_THRESHOLD", "NCCL_LL_THRESHOLD", "NCCL_TREE_THRESHOLD", "NCCL_ALGO",
    "NCCL_PROTO", "NCCL_NVB_DISABLE", "NCCL_PXN_DISABLE", "NCCL_P2P_PXN_LEVEL", "NCCL_PXN_C2C",
    "NCCL_RUNTIME_CONNECT", "NCCL_GRAPH_REGISTER", "NCCL_LOCAL_REGISTER", "NCCL_LEGACY_CUDA_REGISTER",
    "NCCL_WIN_ENABLE", "NCCL_SET_STACK_SIZE", "NCCL_GRAPH_MIXING_SUPPORT", "NCCL_DMABUF_ENABLE",
    "NCCL_P2P_NET_CHUNKSIZE", "NCCL_P2P_LL_THRESHOLD", "NCCL_ALLOC_P2P_NET_LL_BUFFERS", "NCCL_COMM_BLOCKING",
    "NCCL_CGA_CLUSTER_SIZE", "NCCL_MAX_CTAS", "NCCL_MIN_CTAS", "NCCL_NVLS_ENABLE", "NCCL_IB_MERGE_NICS",
    "NCCL_MNNVL_ENABLE", "NCCL_MNNVL_UUID", "NCCL_MNNVL_CLIQUE_ID", "NCCL_RAS_ENABLE", "NCCL_RAS_ADDR",
    "NCCL_RAS_TIMEOUT_FACTOR", "NCCL_LAUNCH_ORDER_IMPLICIT", "NCCL_LAUNCH_RACE_FATAL", "NCCL_IPC_USE_ABSTRACT_SOCKET",
))
# NCCL_DEBUG is system configuration, but TRACE "prints replayable trace information on every call".
DEBUG_VALUES = {"NCCL_DEBUG": ("TRACE",)}


def _hcas(host) -> dict[str, set[int]]:
    return {dev: {int(p) for p in host.sys.listdir(f"{IB_ROOT}/{dev}/ports") or [] if p.isdigit()}
            for dev in ib_devices(host)}


def _interfaces(host) -> dict[str, set[int]]:
    return {name: set() for name in host.sys.listdir("/sys/class/net") or []}


NAMED = {"NCCL_IB_HCA": (_hcas, True, "RDMA device"), "NCCL_SOCKET_IFNAME": (_interfaces, False, "interface"),
         "NCCL_OOB_NET_IFNAME": (_interfaces, False, "interface")}


@check(
    "nccl.config.names",
    "NCCL_IB_HCA / NCCL_SOCKET_IFNAME the node sets name devices that exist",
    area="net",
    severity="critical",
    remediation="Fix the name in /etc/nccl.conf or the TaskProlog: NCCL silently skips a name that matches "
    "nothing and falls back to other NICs or TCP sockets. Use `=` for exact names (mlx5_1 also matches "
    "mlx5_10..19), `^` to exclude, `:port` for an HCA port (ibv_devinfo, ip link).",
)
def names(ctx: AuditContext):
    settings, sources = node_settings(ctx.host)
    named = [s for s in settings if s.key in NAMED]
    if not named:
        why = f"no NCCL_IB_HCA/NCCL_SOCKET_IFNAME in {', '.join(sources)}" if sources else (
            "no /etc/nccl.conf and no TaskProlog in slurm.conf")
        return skip(why)
    findings = []
    for s in named:
        devices_of, ports, what = NAMED[s.key]
        flt = parse_filter(s.value, ports)
        devices = devices_of(ctx.host)
        missing = unmatched(flt, devices)
        subject = f"{s.key} ({s.source})"
        observed = {"value": s.value, "devices": sorted(devices)}
        if not flt.tokens:
            findings.append(bad(f"{s.key}={s.value!r} names no {what}", observed=observed, subject=subject))
        elif missing and flt.exclude:
            findings.append(warn(f"{s.key}={s.value}: excludes {', '.join(missing)}, which match no {what} here "
                                 f"({', '.join(sorted(devices)) or 'none'})", observed=observed, subject=subject))
        elif missing:
            findings.append(bad(f"{s.key}={s.value}: {', '.join(missing)} match no {what} here "
                                f"({', '.join(sorted(devices)) or 'none'}); NCCL skips them", observed=observed,
                                expected="every name matches a device", subject=subject))
        else:
            findings.append(ok(f"{s.key}={s.value}: every name matches a {what}", observed=observed, subject=subject))
    return findings


@check(
    "nccl.config.debug",
    "No NCCL setting the NCCL docs keep for debugging is set for every job",
    area="net",
    remediation="Remove the variable from /etc/nccl.conf or the TaskProlog once the problem it worked around is "
    "solved; a job that needs it can set it itself (NCCL env docs, Debugging section).",
)
def debug_only(ctx: AuditContext):
    settings, sources = node_settings(ctx.host)
    if not sources:
        return skip("no /etc/nccl.conf and no TaskProlog in slurm.conf")
    findings = []
    for s in settings:
        subject = f"{s.key} ({s.source})"
        if s.key in DEBUG_ONLY:
            findings.append(warn(f"{s.key}={s.value} for every job: {DOC_WORDS}", observed=s.value, subject=subject))
        elif s.value.strip().upper() in DEBUG_VALUES.get(s.key, ()):
            findings.append(warn(f"{s.key}={s.value} for every job: NCCL's docs: TRACE \"prints replayable trace "
                                 "information on every call\"", observed=s.value, subject=subject))
    if not findings:
        return ok(f"{len(settings)} NCCL setting(s) in {', '.join(sources)}, none debug-only",
                  observed={s.key: s.value for s in settings})
    return findings
