"""fio wrapper: sequential read/write (1 MiB), random read 4 KiB (IOPS, p99 latency), direct I/O.

Safety first: by default fio only writes a scratch file that gpunode itself creates in a private
temporary directory, removed afterwards. A block device or an existing file is written only when
`--fio-destructive PATH` names it, and even then never while it (or a partition of it) is mounted,
used as swap, held by device-mapper/md/LVM, or backs a loop device. Those checks read
/proc/self/mountinfo, /proc/swaps and /sys/class/block through the SysRoot.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gpunode.bench.results import Metric, errored
from gpunode.host.facts.procfs import parse_mountinfo
from gpunode.host.sysroot import SysRoot

MIB = 1 << 20
INSTALL_HINT = "fio not found on PATH: install it (Debian/Ubuntu `apt-get install fio`, RHEL `dnf install fio`)"
SPACE_MARGIN = 64 * MIB


class FioRefused(ValueError):
    """The target is unsafe or unusable; nothing was written."""


@dataclass(frozen=True)
class FioJob:
    name: str  # seq_write | seq_read | rand_read
    rw: str
    bs: str
    iodepth: int


JOBS = (
    FioJob("seq_write", "write", "1M", 16),  # first: it lays the file out for the reads
    FioJob("seq_read", "read", "1M", 16),
    FioJob("rand_read", "randread", "4k", 64),
)


@dataclass(frozen=True)
class FioPlan:
    size_bytes: int
    runtime_s: int
    ioengine: str = "libaio"

    @classmethod
    def quick(cls) -> FioPlan:
        return cls(size_bytes=256 * MIB, runtime_s=3)

    @classmethod
    def full(cls) -> FioPlan:
        return cls(size_bytes=4096 * MIB, runtime_s=20)


@dataclass(frozen=True)
class FioTarget:
    path: str  # what fio writes (a scratch file, or the --fio-destructive path)
    kind: str  # scratch | file | block
    size_bytes: int
    direct: bool
    note: str = ""
    cleanup_dir: str | None = None  # the private temp dir holding a scratch file


def fio_filename(path: str) -> str:
    """fio splits --filename at every `:` (several files: /dev/sda:/dev/sdb), so a `:` in a
    directory name made fio write another file; fio's documented escape is `\\:`."""
    if "\\" in path and ":" in path:  # `\\:` would be ambiguous to fio: refuse rather than guess
        raise FioRefused(f"{path}: a path with both '\\' and ':' cannot be handed to fio safely; choose another --fio-dir")
    return path.replace(":", "\\:")


def argv(fio: str, job: FioJob, target: FioTarget, plan: FioPlan) -> list[str]:
    out = [fio, f"--name={job.name}", f"--filename={fio_filename(target.path)}", f"--rw={job.rw}", f"--bs={job.bs}",
           f"--size={target.size_bytes}", f"--direct={int(target.direct)}", f"--ioengine={plan.ioengine}",
           f"--iodepth={job.iodepth}", "--numjobs=1", f"--runtime={plan.runtime_s}", "--time_based",
           "--group_reporting", "--output-format=json"]
    if job.rw == "write":
        out.append("--end_fsync=1")
    return out


@dataclass
class FioResult:
    error: int
    read_bw_bytes: float
    read_iops: float
    read_p99_ns: float | None
    write_bw_bytes: float
    write_iops: float
    runtime_ms: int
    version: str | None = None
    options: dict = field(default_factory=dict)


def parse_json(text: str) -> FioResult:
    """fio --output-format=json output. fio prints error lines ("fio: pid=..., err=28/...") before
    the JSON on stdout; those are skipped. Raises ValueError when there is no complete JSON."""
    start = text.find("{")
    if start < 0:
        raise ValueError("fio printed no JSON")
    try:
        data = json.loads(text[start:])
    except json.JSONDecodeError as exc:
        raise ValueError(f"fio JSON output is truncated or invalid ({exc.msg} at char {start + exc.pos})") from None
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not jobs:
        raise ValueError("fio JSON output has no jobs")
    job = jobs[0]
    read, write = job.get("read") or {}, job.get("write") or {}
    pct = (read.get("clat_ns") or {}).get("percentile") or {}
    p99 = pct.get("99.000000")
    return FioResult(
        error=int(job.get("error", 0)),
        read_bw_bytes=float(read.get("bw_bytes", 0)),
        read_iops=float(read.get("iops", 0.0)),
        read_p99_ns=float(p99) if p99 is not None else None,
        write_bw_bytes=float(write.get("bw_bytes", 0)),
        write_iops=float(write.get("iops", 0.0)),
        runtime_ms=int(job.get("job_runtime", 0)),
        version=data.get("fio version"),
        options=dict(job.get("job options") or {}),
    )


def _errno_name(code: int) -> str:
    return f"{errno.errorcode.get(code, 'E?')} ({os.strerror(code)})"


def job_metrics(job: FioJob, res: FioResult | None, rc: int, why: str, cond: dict) -> list[Metric]:
    """A job's metrics; any error (fio error code, non-zero exit, no JSON) leaves no figure."""
    names = {"seq_write": [("fio.seq_write", "MB/s")], "seq_read": [("fio.seq_read", "MB/s")],
             "rand_read": [("fio.rand_read.iops", "IOPS"), ("fio.rand_read.p99_us", "us")]}[job.name]
    cond = {**cond, "rw": job.rw, "bs": job.bs, "iodepth": job.iodepth}
    if res is None:
        return [errored(n, u, why, **cond) for n, u in names]
    if res.error:
        return [errored(n, u, f"fio job {job.name} failed: error {_errno_name(res.error)}", **cond) for n, u in names]
    if rc != 0:
        return [errored(n, u, f"fio exited with status {rc}{': ' + why if why else ''}", **cond) for n, u in names]
    detail = {"runtime_ms": res.runtime_ms, "read_iops": res.read_iops, "write_iops": res.write_iops,
              "read_bw_bytes": res.read_bw_bytes, "write_bw_bytes": res.write_bw_bytes}
    values = {"fio.seq_write": res.write_bw_bytes / 1e6, "fio.seq_read": res.read_bw_bytes / 1e6,
              "fio.rand_read.iops": res.read_iops,
              "fio.rand_read.p99_us": None if res.read_p99_ns is None else res.read_p99_ns / 1e3}
    out = []
    for n, u in names:
        v = values[n]
        if v is None or (res.runtime_ms <= 0):
            out.append(errored(n, u, f"fio job {job.name} reported no {'latency percentiles' if v is None else 'runtime'}", **cond))
        elif v <= 0 and n != "fio.rand_read.p99_us":
            out.append(errored(n, u, f"fio job {job.name} moved no data", **cond))
        else:
            out.append(Metric(n, None, round(v, 3), u, "PASS", "", {**cond, "aggregate": f"fio over {res.runtime_ms} ms"},
                              None, detail))
    return out


# ---- target safety -------------------------------------------------------------------------


def mounted_devices(sys: SysRoot) -> set[str]:
    """major:minor of every mounted filesystem, hidden (stacked) mounts included."""
    return {dev for _, dev in parse_mountinfo(sys.read("/proc/self/mountinfo") or "")}


def swap_paths(sys: SysRoot) -> set[str]:
    lines = (sys.read("/proc/swaps") or "").splitlines()[1:]
    return {line.split()[0] for line in lines if line.split()}


def _device_reasons(sys: SysRoot, sysdir: str, n: str, mounted: set[str], swaps: set[str]) -> list[str]:
    """Why one block device (a disk or one of its partitions, kernel name `n`) is in use."""
    reasons = []
    dev = sys.read_value(f"{sysdir}/dev")
    if dev and dev in mounted:
        reasons.append(f"/dev/{n} ({dev}) is mounted")
    if n in swaps:  # a swap partition is in no mountinfo line
        reasons.append(f"/dev/{n} is in use as swap")
    holders = sys.listdir(f"{sysdir}/holders") or []
    if holders:
        reasons.append(f"/dev/{n} is held by {', '.join(holders)} (device-mapper, md or LVM)")
    return reasons


def _parent_disk_reasons(sys: SysRoot, name: str, mounted: set[str]) -> list[str]:
    """A partition: its parent disk's own mount would also be written through."""
    parent = sys.readlink(f"/sys/class/block/{name}")
    if not parent or "/" not in parent:
        return []
    parent_name = parent.rstrip("/").split("/")[-2]
    if parent_name in ("block", name) or not sys.exists(f"/sys/class/block/{parent_name}"):
        return []
    pdev = sys.read_value(f"/sys/class/block/{parent_name}/dev")
    if pdev and pdev in mounted:
        return [f"its disk /dev/{parent_name} ({pdev}) is mounted"]
    return []


def block_device_users(sys: SysRoot, name: str) -> list[str]:
    """Why block device `name` (sdb, nvme0n1p2) is in use: mounted, holders, partitions mounted."""
    base = f"/sys/class/block/{name}"
    if not sys.exists(base):
        return [f"{name} is not a block device known to /sys/class/block"]
    mounted = mounted_devices(sys)
    swaps = {os.path.basename(p) for p in swap_paths(sys) if p.startswith("/dev/")}  # kernel names: /dev/sdc2
    names = [name] + [p for p in (sys.listdir(base) or []) if p.startswith(name) and sys.exists(f"{base}/{p}/dev")]
    reasons = []
    for n in names:
        reasons += _device_reasons(sys, base if n == name else f"{base}/{n}", n, mounted, swaps)
    return reasons + _parent_disk_reasons(sys, name, mounted)


def loop_backed_files(sys: SysRoot) -> set[str]:
    out = set()
    for path in sys.glob("/sys/block/loop*/loop/backing_file"):
        value = sys.read_value(path)
        if value:
            out.add(value)
    return out


# Regular files here belong to the operating system: no benchmark may overwrite them, flag or not.
SYSTEM_DIRS = tuple(f"{d}/" for d in ("/etc", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot",
                                      "/var/lib/dpkg", "/var/lib/rpm", "/proc", "/sys", "/root/.ssh"))


def destructive_target(sys: SysRoot, path: str, plan: FioPlan) -> FioTarget:
    """Check an explicitly named device or file; raise FioRefused with the reason when unsafe."""
    real = os.path.realpath(path)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise FioRefused(f"--fio-destructive {path}: {exc.strerror}") from None
    if real in swap_paths(sys) or path in swap_paths(sys):
        raise FioRefused(f"--fio-destructive {path}: it is in use as swap (/proc/swaps)")
    if stat.S_ISBLK(st.st_mode):
        name = os.path.basename(real)
        users = block_device_users(sys, name)
        if users:
            raise FioRefused(f"--fio-destructive {path}: refusing, {'; '.join(users)}")
        sectors = sys.read_int(f"/sys/class/block/{name}/size")
        if sectors == 0:  # an unbound loop device, an empty card reader: fio would only fail
            raise FioRefused(f"--fio-destructive {path}: refusing, the device has no capacity (size 0)")
        size = min(plan.size_bytes, sectors * 512) if sectors else plan.size_bytes
        return FioTarget(real, "block", size, True, f"block device {real}: its data is overwritten")
    if stat.S_ISREG(st.st_mode):
        if real.startswith(SYSTEM_DIRS):
            raise FioRefused(f"--fio-destructive {path}: refusing a file of the operating system ({real}); "
                             "name a test file on the data filesystem")
        if real in loop_backed_files(sys):
            raise FioRefused(f"--fio-destructive {path}: refusing, it backs a loop device (may be mounted)")
        direct, note = probe_direct(real)
        _need_space(os.path.dirname(real), max(0, plan.size_bytes - st.st_size))
        return FioTarget(real, "file", plan.size_bytes, direct, f"existing file {real} is overwritten; {note}".strip("; "))
    raise FioRefused(f"--fio-destructive {path}: not a block device or a regular file")


def probe_direct(path: str) -> tuple[bool, str]:
    """Can this file be opened with O_DIRECT? (Some filesystems refuse it: EINVAL.)"""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False, "O_DIRECT not available on this platform: buffered I/O (page cache figures)"
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return False, "the filesystem refuses O_DIRECT: buffered I/O, reads may come from the page cache"
        raise FioRefused(f"{path}: {exc.strerror}") from None
    os.close(fd)
    return True, ""


def _need_space(directory: str, nbytes: int) -> None:
    vfs = os.statvfs(directory)
    free = vfs.f_bavail * vfs.f_frsize
    if free < nbytes + SPACE_MARGIN:
        raise FioRefused(f"{directory}: not enough free space for the fio file: need {(nbytes + SPACE_MARGIN) // MIB} MiB, "
                         f"{free // MIB} MiB free")


def scratch_target(directory: str | None, plan: FioPlan) -> FioTarget:
    """A new file in a new private (0700) directory under `directory` (default $TMPDIR)."""
    parent = directory or tempfile.gettempdir()
    if not os.path.isdir(parent):
        raise FioRefused(f"--fio-dir {parent}: not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FioRefused(f"--fio-dir {parent}: not writable")
    _need_space(parent, plan.size_bytes)
    private = tempfile.mkdtemp(prefix="gpunode-fio-", dir=parent)
    fd, path = tempfile.mkstemp(prefix="scratch-", suffix=".dat", dir=private)
    os.close(fd)
    try:
        direct, note = probe_direct(path)
    except FioRefused:
        shutil.rmtree(private, ignore_errors=True)
        raise
    return FioTarget(path, "scratch", plan.size_bytes, direct, note, cleanup_dir=private)


def prepare_target(sys: SysRoot, plan: FioPlan, directory: str | None = None, destructive: str | None = None) -> FioTarget:
    fio_filename(destructive or directory or tempfile.gettempdir())  # refused before anything is made
    if destructive:
        target = destructive_target(sys, destructive, plan)
        fio_filename(target.path)  # the real path a link led to
        return target
    return scratch_target(directory, plan)


@contextmanager
def cleaned(target: FioTarget) -> Iterator[FioTarget]:
    """Remove gpunode's scratch file and its private directory afterwards, whatever happens."""
    try:
        yield target
    finally:
        if target.cleanup_dir:
            shutil.rmtree(target.cleanup_dir, ignore_errors=True)


# ---- proof that fio touched nothing else ------------------------------------------------------

MAX_WATCHED_ENTRIES = 20_000  # a huge directory is listed up to this many names


def watched_dirs(target: FioTarget) -> list[str]:
    """Where fio could write besides its target: the target's directory and the one above it
    (--fio-dir / $TMPDIR: the neighbours), and the directory of every prefix before a `:` (what a
    mis-split file name would overwrite). A block device's /dev is not watched (ttys move there)."""
    first = os.path.dirname(target.path)
    dirs = [] if target.kind == "block" else [first, os.path.dirname(first)]
    dirs += [os.path.dirname(target.path[:i]) for i, char in enumerate(target.path) if char == ":"]
    return list(dict.fromkeys(d for d in dirs if d))


def dir_state(directory: str) -> dict[str, tuple[int, int, int]]:
    """path -> (inode, size, mtime_ns) of each entry, links not followed; a directory's size and
    mtime are left out (they move with its content: our own private directory)."""
    state: dict[str, tuple[int, int, int]] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if len(state) >= MAX_WATCHED_ENTRIES:
                    break
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                state[entry.path] = (st.st_ino, 0 if is_dir else st.st_size, 0 if is_dir else st.st_mtime_ns)
    except OSError:
        pass
    return state


def watch(target: FioTarget) -> dict[str, tuple[int, int, int]]:
    state: dict[str, tuple[int, int, int]] = {}
    for directory in watched_dirs(target):
        state.update(dir_state(directory))
    return state


def touched_neighbours(before: dict, after: dict, own: str) -> list[str]:
    """Files other than fio's own target that were written in place (fio overwrites, it never
    makes, renames or removes a neighbour). New or removed names are not counted: other programs
    make and delete files in $TMPDIR all the time. Someone else rewriting a neighbour at the same
    moment shows too: such a run is reported, never trusted."""
    out = []
    for path, (ino, size, mtime) in before.items():
        now = after.get(path)
        if path == own or now is None or now[0] != ino:
            continue
        if now[1:] != (size, mtime):
            out.append(f"{path} was written (size {size} -> {now[1]})")
    return sorted(out)


def fio_version(runner, fio: str) -> str | None:
    r = runner.run([fio, "--version"], timeout=10)
    if not r.ok:
        return None
    return r.stdout.strip().removeprefix("fio-") or None


def run_fio(runner, fio: str, target: FioTarget, plan: FioPlan, progress=None) -> list[Metric]:
    """Run the three jobs on `target` (already checked) and remove a scratch file afterwards."""
    cond = {"target": target.kind, "size_bytes": target.size_bytes, "direct": int(target.direct),
            "ioengine": plan.ioengine, "runtime_s": plan.runtime_s, "unit_note": "MB/s = 1e6 bytes/s"}
    if target.note:
        cond["note"] = target.note
    metrics: list[Metric] = []
    with cleaned(target):
        before = watch(target)
        for job in JOBS:
            if progress:
                progress(f"fio {job.name}")
            r = runner.run(argv(fio, job, target, plan), timeout=plan.runtime_s * 3 + 120)
            why = r.error or ("timed out" if r.timed_out else "")
            if not why and r.rc != 0 and r.stderr.strip():  # fio says why on stderr, e.g. "zero sized block device?"
                why = r.stderr.strip().splitlines()[-1][:200]
            try:
                res = parse_json(r.stdout)
            except ValueError as exc:
                res, why = None, why or f"{exc}; stderr: {(r.stderr.strip().splitlines() or [''])[-1][:200]}"
            metrics += job_metrics(job, res, r.rc, why, cond)
        touched = touched_neighbours(before, watch(target), target.path)
    if touched:  # loud: a benchmark must never write beside its own file
        why = f"fio changed files other than its own target: {'; '.join(touched[:5])}"
        metrics = [errored(m.name, m.unit, why, m.gpu, **m.conditions) for m in metrics]
    return metrics
