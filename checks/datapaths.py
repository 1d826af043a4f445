"""Network file systems that hold the data paths jobs read (config data_mounts, else every NFS or
Lustre mount): options and read-ahead that cost throughput or turn a server hiccup into an I/O error in
the job, and Lustre directories that put each new file on one OST."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, ok, skip
from gpunode.checks.storage import mounts
from gpunode.host.facts.lustre import Layout, ost_count, parse_default_layout
from gpunode.host.facts.procfs import Mount, mount_of, parse_mountinfo

NFS = ("nfs", "nfs4")
MIN_RW_SIZE = 1 << 20  # Linux NFS client's largest rsize/wsize (1 MiB); smaller ones multiply RPCs
# Since Linux 5.4 an NFS mount's read-ahead defaults to 128 KiB (it was 15 x rsize): less than one
# 1 MiB RPC ahead, so a sequential reader waits on the server at every request.
MIN_READ_AHEAD_KB = 1024
LUSTRE = ("lustre",)
LFS_TIMEOUT_S = 20  # lfs asks the MDS (getstripe) and lists the client's OST connections (osts)


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


def data_paths(ctx: AuditContext, fstypes: tuple[str, ...]) -> tuple[dict[str, Mount], str]:
    """The configured data_mounts on these file system types (each path -> the mount holding it),
    else every such mount (its mount point -> it); and which of the two, for a SKIP's reason."""
    table = mounts(ctx.host)
    if ctx.config.data_mounts:
        held = {p: mount_of(table, p.rstrip("/") or "/") for p in ctx.config.data_mounts}
        return {p: m for p, m in held.items() if m is not None and m.fstype in fstypes}, "configured data_mounts"
    return {m.target: m for m in table if m.fstype in fstypes}, "mounts"


def read_ahead_of(ctx: AuditContext, targets) -> dict[str, int]:
    """mount point -> its backing device's read_ahead_kb (/sys/class/bdi/MAJ:MIN), where readable;
    only for `targets` (a node has dozens of mounts, the check judges a few)."""
    out = {}
    for target, dev in parse_mountinfo(ctx.host.sys.read("/proc/self/mountinfo") or ""):
        if target not in targets:
            continue
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
    paths, scope = data_paths(ctx, NFS)
    chosen = {m.target: m for m in paths.values()}
    if not chosen:
        return skip(f"no NFS among the {scope}")
    findings = []
    read_ahead = read_ahead_of(ctx, chosen)
    for target, m in chosen.items():
        observed: dict[str, str | bool | int | None] = {k: m.option(k) for k in ("vers", "proto", "rsize", "wsize",
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


@check("storage.lustre", "Lustre data directories stripe new files over more than one OST", area="storage",
       cost="slow",
       remediation="Give the data directory a default layout over several OSTs: lfs setstripe -c -1 DIR (every "
                   "OST), or a PFL layout that widens as files grow, e.g. lfs setstripe -E 64M -c 1 -E 4G -c 4 "
                   "-E -1 -c -1 DIR (Lustre Operations Manual, \"Managing File Layout (Striping)\"). Files keep "
                   "the layout they were created with: restripe existing ones with lfs migrate -c -1 FILE.")
def lustre(ctx: AuditContext):
    paths, scope = data_paths(ctx, LUSTRE)
    if not paths:
        return skip(f"no Lustre among the {scope}")
    osts: dict[str, int | str] = {}  # mount point -> its OST count, or why it is unknown
    return [_lustre_dir(ctx, path, m, osts) for path, m in paths.items()]


def _lustre_dir(ctx: AuditContext, path: str, m: Mount, osts: dict[str, int | str]):
    """One data directory's default layout, judged against its file system's OST count."""
    text, why = _lfs(ctx, ["getstripe", "-d", path])
    if why is not None:
        return error(why, subject=path)
    try:
        layout = parse_default_layout(text)
    except ValueError as exc:
        return error(f"lfs getstripe -d {path}: {exc}", subject=path)
    observed: dict[str, object] = {"mount": m.target, "source": m.source, "layout": layout.describe()}
    if layout.wide:
        return ok(f"default {layout.describe()} ({m.source})", observed=observed, subject=path)
    if m.target not in osts:
        osts[m.target] = _ost_count(ctx, m.target)
    count = osts[m.target]
    if isinstance(count, str):
        return error(count, subject=path)
    observed["osts"] = count
    return _narrow(layout, count, m, observed, path)


def _narrow(layout: Layout, count: int, m: Mount, observed: dict, path: str):
    if count <= 1:
        return ok(f"default {layout.describe()} on a file system of one OST ({m.source})", observed=observed,
                  subject=path)
    return bad(f"default {layout.describe()} on a file system of {count} OSTs: each new file sits on one OST "
               "(one server's bandwidth for a whole dataset file or checkpoint)", observed=observed,
               expected="stripe_count -1 or > 1, or a PFL layout with a wide component", subject=path)


def _ost_count(ctx: AuditContext, mount_point: str) -> int | str:
    text, why = _lfs(ctx, ["osts", mount_point])
    if why is not None:
        return why
    try:
        return ost_count(text)
    except ValueError as exc:
        return f"lfs osts {mount_point}: {exc}"


def _lfs(ctx: AuditContext, args: list[str]) -> tuple[str, str | None]:
    """(stdout, None) or ("", why it failed); ends the check as SKIP when lfs cannot run at all."""
    result = ctx.host.runner.run(["lfs", *args], timeout=LFS_TIMEOUT_S)
    if result.error:
        raise CheckSkipped(f"lfs cannot run: {result.error} (Lustre client utilities not installed?)")
    if result.timed_out:
        return "", f"lfs {' '.join(args)} gave no answer within {LFS_TIMEOUT_S}s (a hung Lustre server?)"
    if result.rc != 0:
        said = (result.stderr.strip().splitlines() or [""])[0][:160]
        return "", f"lfs {' '.join(args)} exited {result.rc}: {said or 'no message'}"
    return result.stdout, None
