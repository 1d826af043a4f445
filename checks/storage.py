"""Storage: atime updates and read-only state of data mounts, free space where jobs write."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, fail, ok, skip
from gpunode.host.facts import df
from gpunode.host.facts.procfs import Mount, format_bytes, mount_at, mount_of, parse_mounts

DATA_PREFIXES = ("/data", "/scratch", "/raid", "/mnt")
# Local filesystems on block devices (zfs: datasets); network and virtual ones are left out.
LOCAL_FS = ("ext4", "ext3", "ext2", "xfs", "btrfs", "f2fs", "zfs")
GIB = 1 << 30


def mounts(host) -> list[Mount]:
    text = host.sys.read("/proc/mounts")
    if text is None:
        raise CheckSkipped("knob absent on this host: /proc/mounts")
    return parse_mounts(text)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def data_mounts(ctx: AuditContext, table: list[Mount]) -> tuple[list[Mount], list[str]]:
    """-> (mounts, configured mount points that are not mounted). Configured data_mounts win;
    otherwise every local block filesystem under /data /scratch /raid /mnt."""
    if ctx.config.data_mounts:
        found, missing = [], []
        for target in ctx.config.data_mounts:
            m = mount_at(table, target.rstrip("/") or "/")
            (found.append(m) if m else missing.append(target))
        return found, missing
    chosen: dict[str, Mount] = {}
    for m in table:
        if m.fstype in LOCAL_FS and any(_under(m.target, p) for p in DATA_PREFIXES):
            chosen[m.target] = m  # the last one listed is the one visible
    return list(chosen.values()), []


@check(
    "storage.noatime",
    "Data mounts do not write access times on every read",
    area="storage",
    remediation="Mount data filesystems with noatime (or at least relatime) in /etc/fstab; "
    "mount -o remount,noatime MOUNTPOINT applies it now.",
)
def noatime(ctx: AuditContext):
    found, missing = data_mounts(ctx, mounts(ctx.host))
    findings = [bad("configured data mount is not mounted", subject=t) for t in missing]
    for m in found:
        observed = {"fstype": m.fstype, "source": m.source, "atime": atime_mode(m)}
        mode = observed["atime"]
        if mode == "noatime":
            findings.append(ok(f"noatime ({m.fstype} on {m.source})", observed=observed, subject=m.target))
        elif mode == "relatime":
            # relatime writes an inode at most once a day per file (or after a change): acceptable,
            # though a dataset of millions of files pays that daily; noatime is better.
            findings.append(ok(f"relatime ({m.fstype} on {m.source}); noatime would avoid the daily "
                               "atime writes", observed=observed, subject=m.target))
        else:
            findings.append(bad(f"strictatime ({m.fstype} on {m.source}): every read writes the inode",
                                observed=observed, expected="noatime", subject=m.target))
    if not findings:
        return skip("no local data mounts under " + " ".join(DATA_PREFIXES) + " (set data_mounts in the config)")
    return findings


def atime_mode(m: Mount) -> str:
    """The kernel lists noatime or relatime; neither means strictatime."""
    if m.has("noatime"):
        return "noatime"
    if m.has("relatime"):
        return "relatime"
    return "strictatime"


def resolve(host, path: str, depth: int = 0) -> str:
    """Follow symlinks component by component, so /scratch -> /raid/scratch finds /raid's mount."""
    if depth > 40:
        return path
    parts = [p for p in path.split("/") if p]
    current = ""
    for i, part in enumerate(parts):
        candidate = f"{current}/{part}"
        target = host.sys.readlink(candidate)
        if target is not None:
            base = target if target.startswith("/") else f"{current}/{target}"
            rest = "/".join(parts[i + 1:])
            return resolve(host, _normalize(f"{base}/{rest}" if rest else base), depth + 1)
        current = candidate
    return current or "/"


def _normalize(path: str) -> str:
    out: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if out:
                out.pop()
        else:
            out.append(part)
    return "/" + "/".join(out)


def job_paths(ctx: AuditContext) -> list[str]:
    """Where jobs write: /dev/shm and the configured scratch dirs, each once, in order."""
    return list(dict.fromkeys(["/dev/shm", *ctx.config.scratch_dirs]))


@check(
    "storage.writable",
    "Scratch dirs and /dev/shm are not on a read-only filesystem",
    area="storage",
    severity="critical",
    tags=["gate"],
    remediation="A filesystem that turned read-only after I/O errors (errors=remount-ro): drain the node, "
    "read the kernel log, fsck/replace the disk.",
)
def writable(ctx: AuditContext):
    # Only where jobs must write: data mounts may be read-only on purpose (shared datasets).
    table = mounts(ctx.host)
    targets = {path: mount_of(table, resolve(ctx.host, path)) for path in job_paths(ctx)}
    findings = []
    for path, m in targets.items():
        if m is None:
            findings.append(skip("no mount holds this path", subject=path))
        elif m.has("ro"):
            findings.append(bad(f"read-only {m.fstype} mount {m.target} ({m.source})", observed="ro",
                                expected="rw", subject=path))
        else:
            findings.append(ok(f"rw ({m.fstype} on {m.target})", observed="rw", expected="rw", subject=path))
    return findings


@check(
    "storage.scratch_space",
    "Enough free space in /dev/shm and the scratch dirs",
    area="storage",
    severity="critical",
    tags=["gate"],
    remediation="Clean up what old jobs left behind (files of users without jobs on the node), "
    "or raise /dev/shm's size; min_free_gib and scratch_dirs are set in /etc/gpunode/config.yaml.",
    cost="slow",
)
def scratch_space(ctx: AuditContext):
    paths = job_paths(ctx)
    minimum = ctx.config.min_free_gib
    expected = f">= {minimum:g} GiB free"
    answer = df.free_space(ctx.host.runner, paths)
    if answer.not_run:
        return skip(f"cannot run df: {answer.error}")
    if answer.error and not answer.spaces:
        return error(answer.error)
    findings = []
    for path in paths:
        space = answer.spaces.get(path)
        if space is None:
            why = answer.problems.get(path)
            if why is not None:
                findings.append(fail(f"{why}", observed=None, expected=expected, subject=path))
            else:
                findings.append(error(answer.error or "df gave no line for this path", subject=path))
            continue
        if space.avail is None:
            findings.append(error("df reports no available-space figure", subject=path))
            continue
        text = f"{format_bytes(space.avail)} free of {format_bytes(space.size or 0)}"
        if space.avail < minimum * GIB:
            findings.append(bad(text, observed=space.avail, expected=expected, subject=path))
        else:
            findings.append(ok(text, observed=space.avail, expected=expected, subject=path))
    return findings


EXT4 = "/sys/fs/ext4"


@check(
    "storage.fs_errors",
    "No ext4 filesystem has recorded errors",
    area="storage",
    remediation="The superblock keeps the error until fsck: read the kernel log for the first error, drain "
    "the node, unmount and e2fsck the filesystem; check the disk (smartctl, nvme smart-log).",
)
def fs_errors(ctx: AuditContext):
    from gpunode.outputs import iso_time

    devices = [d for d in ctx.host.sys.listdir(EXT4) or [] if d != "features"]
    if not devices:
        return skip("no ext4 filesystem mounted")
    text = ctx.host.sys.read("/proc/mounts")
    where: dict[str, str] = {}
    for m in parse_mounts(text or ""):
        # The first mount of a device is where it was mounted; later ones are bind mounts
        # (`ip netns add` binds /run/netns), which would rename the subject from run to run.
        where.setdefault(m.source, m.target)
    findings = []
    for dev in devices:
        base = f"{EXT4}/{dev}"
        subject = where.get(f"/dev/{dev}", f"/dev/{dev}")
        count = ctx.host.sys.read_int(f"{base}/errors_count")
        if count is None:
            findings.append(skip(f"knob absent on this host: {base}/errors_count", subject=subject))
        elif count == 0:
            findings.append(ok(f"no errors recorded (/dev/{dev})", observed=0, expected=0, subject=subject))
        else:
            detail = []
            for which in ("first", "last"):
                when = ctx.host.sys.read_int(f"{base}/{which}_error_time")
                func = ctx.host.sys.read_value(f"{base}/{which}_error_func")
                if when:
                    detail.append(f"{which} in {func or '?'} at {iso_time(when)}")
            findings.append(bad(f"{count} error(s) recorded on /dev/{dev}" + (f": {', '.join(detail)}" if detail else ""),
                                observed=count, expected=0, subject=subject))
    return findings
