"""Network file systems that hold the data paths jobs read (config data_mounts, else every NFS
mount): options and read-ahead that cost throughput or turn a server hiccup into an I/O error in
the job."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.checks.storage import mounts
from gpunode.host.facts.procfs import Mount, mount_of, parse_mountinfo

NFS = ("nfs", "nfs4")
MIN_RW_SIZE = 1 << 20  # Linux NFS client's largest rsize/wsize (1 MiB); smaller ones multiply RPCs
# Since Linux 5.4 an NFS mount's read-ahead defaults to 128 KiB (it was 15 x rsize): less than one
# 1 MiB RPC ahead, so a sequential reader waits on the server at every request.
MIN_READ_AHEAD_KB = 1024


def nfs_problems(m: Mount, read_ahead_kb: int | None = None) -> list[str]:
    """What in an NFS mount's options (nfs(5)) and its read-ahead costs a training job."""
    problems = []
    if read_ahead_kb is not None and read_ahead_kb < MIN_READ_AHEAD_KB:
        problems.append(f"read_ahead_kb={read_ahead_kb} below {MIN_READ_AHEAD_KB} (less than one 1 MiB read ahead)")
    if m.has("soft") or m.has("softerr"):
        problems.append("soft mount: a slow server becomes an I/O error in the job (nfs(5): use hard)")
    for opt in ("rsize", "wsize"):
        value = m.option(opt)
        if value is not None and value.isdigit() and int(value) < MIN_RW_SIZE:
            problems.append(f"{opt}={value} below {MIN_RW_SIZE} (1 MiB)")
    proto = m.option("proto") or ""
    nconnect = m.option("nconnect")
    if not proto.startswith("rdma") and (nconnect is None or nconnect == "1"):
        problems.append(f"one TCP connection (no nconnect; proto={proto or '?'}): nconnect=8..16 or proto=rdma "
                        "spreads reads over more connections (Linux 5.3+)")
    return problems


def read_ahead_of(ctx: AuditContext) -> dict[str, int]:
    """mount point -> its backing device's read_ahead_kb (/sys/class/bdi/MAJ:MIN), where readable."""
    out = {}
    for target, dev in parse_mountinfo(ctx.host.sys.read("/proc/self/mountinfo") or ""):
        value = ctx.host.sys.read_value(f"/sys/class/bdi/{dev}/read_ahead_kb")
        if value is not None and value.isdigit():
            out[target] = int(value)
    return out


@check("storage.nfs", "NFS mounts holding data paths: hard, 1 MiB rsize/wsize, nconnect or RDMA, read-ahead",
       area="storage",
       remediation="Mount data over NFS with hard,rsize=1048576,wsize=1048576,nconnect=16 (or proto=rdma on "
                   "RDMA-capable servers) in /etc/fstab or the automounter map; remount to apply (nfs(5)). "
                   "Raise read-ahead with nfsrahead (nfs-utils 2.6.3+: [nfsrahead] nfs4=15360 in /etc/nfs.conf) "
                   "or a udev rule writing /sys/class/bdi/MAJ:MIN/read_ahead_kb.")
def nfs(ctx: AuditContext):
    table = mounts(ctx.host)
    if ctx.config.data_mounts:
        held = {p: mount_of(table, p.rstrip("/") or "/") for p in ctx.config.data_mounts}
        chosen = {m.target: m for m in held.values() if m is not None and m.fstype in NFS}
        scope = "configured data_mounts"
    else:
        chosen = {m.target: m for m in table if m.fstype in NFS}
        scope = "mounts"
    if not chosen:
        return skip(f"no NFS among the {scope}")
    findings = []
    read_ahead = read_ahead_of(ctx)
    for target, m in chosen.items():
        observed: dict[str, str | bool | None] = {k: m.option(k) for k in ("vers", "proto", "rsize", "wsize",
                                                                            "nconnect")}
        observed["hard"] = not (m.has("soft") or m.has("softerr"))
        observed["read_ahead_kb"] = read_ahead.get(target)
        problems = nfs_problems(m, read_ahead.get(target))
        summary = f"{m.source} ({m.fstype}, proto={observed['proto']}, rsize={observed['rsize']})"
        if problems:
            findings.append(bad(f"{summary}: " + "; ".join(problems), observed=observed, subject=target))
        else:
            findings.append(ok(summary, observed=observed, subject=target))
    return findings
