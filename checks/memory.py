"""Memory: swap, static hugepages, /dev/shm size, locked-memory limits of services and of this process."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.host.facts.procfs import (
    format_bytes,
    kernel_params,
    mount_at,
    parse_meminfo,
    parse_mounts,
    parse_proc_limits,
    parse_size,
)
from gpunode.host.facts.systemd_ini import SYSTEMD_CONF, systemd_manager_setting

GIB = 1 << 30
SHM_MIN_BYTES = GIB
# tmpfs defaults to half of RAM; NCCL's shared-memory transport and dataloader workers
# (PyTorch shares batches through /dev/shm) need that much. 1% slack for page rounding.
SHM_MIN_FRACTION = 0.49
HUGETLB_MAX_FRACTION = 0.5  # more than half of RAM in a static pool starves everything else


def meminfo(host) -> dict[str, int] | None:
    text = host.sys.read("/proc/meminfo")
    return None if text is None else parse_meminfo(text)


@check(
    "memory.swap",
    "No active swap",
    area="memory",
    remediation="swapoff -a and remove swap entries from /etc/fstab (and systemd swap units).",
)
def swap(ctx: AuditContext):
    text = ctx.host.sys.read("/proc/swaps")
    if text is None:
        return skip("knob absent on this host: /proc/swaps")
    devices = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3:
            size = int(parts[2]) * 1024 if parts[2].isdigit() else 0
            devices.append(f"{parts[0]} ({parts[1]}, {format_bytes(size)})")
    if not devices:
        return ok("no swap", observed=[], expected="no swap")
    # Pinned and GPU-mapped pages cannot be swapped anyway; swapping the rest stalls
    # dataloaders and NCCL proxy threads and hides memory pressure from the scheduler.
    return bad(f"swap active: {', '.join(devices)}", observed=devices, expected="no swap")


def hugepage_requests(params: list[str]) -> dict[int, int]:
    """hugepagesz=/hugepages= pairs of the kernel command line -> {page size in kB: count}.
    A hugepages= without a preceding hugepagesz= is for the default size (key 0)."""
    requests: dict[int, int] = {}
    size_kb = 0
    for token in params:
        name, _, value = token.partition("=")
        if name == "hugepagesz":
            parsed = parse_size(value)
            size_kb = parsed[0] // 1024 if parsed and not parsed[1] else 0
        elif name == "hugepages" and value.isdigit():
            requests[size_kb] = int(value)
    return requests


@check(
    "memory.hugepages",
    "Static hugepages: allocated as asked, not exhausted, not hoarding RAM",
    area="memory",
    remediation="Size the pool with vm.nr_hugepages / hugepages= to what the workload uses; "
    "allocate at boot (kernel command line) so fragmentation cannot shrink it.",
)
def hugepages(ctx: AuditContext):
    info = meminfo(ctx.host)
    if not info or "HugePages_Total" not in info:
        return skip("knob absent on this host: HugePages_Total in /proc/meminfo")
    total, free = info["HugePages_Total"], info.get("HugePages_Free", 0)
    reserved, size = info.get("HugePages_Rsvd", 0), info.get("Hugepagesize", 0)
    pool = info.get("Hugetlb", total * size)  # all page sizes together, where the kernel tells
    observed = {"total": total, "free": free, "reserved": reserved, "page_size": size, "pool_bytes": pool}
    problems = []
    cmdline = ctx.host.sys.read("/proc/cmdline")
    for size_kb, wanted in hugepage_requests(kernel_params(cmdline or "")).items():
        got = total if size_kb in (0, size // 1024) else ctx.host.sys.read_int(
            f"/sys/kernel/mm/hugepages/hugepages-{size_kb}kB/nr_hugepages")
        if got is not None and got < wanted:
            problems.append(f"only {got} of {wanted} hugepages ({size_kb or size // 1024} kB) asked on the "
                            "kernel command line were allocated")
    if total and free - reserved <= 0:
        problems.append(f"pool exhausted: {free} free, {reserved} promised to mappings")
    mem_total = info.get("MemTotal")
    if mem_total and pool > HUGETLB_MAX_FRACTION * mem_total:
        problems.append(f"{format_bytes(pool)} of {format_bytes(mem_total)} RAM is held in hugepage pools")
    summary = (f"{total} x {format_bytes(size)} pages, {free} free" if total
               else "no static hugepages (transparent hugepages serve large pages)")
    if problems:
        return bad(f"{summary}; {'; '.join(problems)}", observed=observed)
    return ok(summary, observed=observed)


@check(
    "memory.shm",
    "/dev/shm is a tmpfs of at least half of RAM and at most RAM",
    area="memory",
    remediation="Remount: mount -o remount,size=50% /dev/shm (and in /etc/fstab); in containers "
    "pass --shm-size or --ipc=host. Never size it above RAM (size=0 means unlimited).",
)
def shm(ctx: AuditContext):
    text = ctx.host.sys.read("/proc/mounts")
    info = meminfo(ctx.host) or {}
    if text is None or "MemTotal" not in info:
        return skip("knob absent on this host: /proc/mounts or MemTotal in /proc/meminfo")
    mem_total = info["MemTotal"]
    expected = f">= {format_bytes(max(SHM_MIN_BYTES, mem_total / 2))} (half of RAM), <= RAM"
    mount = mount_at(parse_mounts(text), "/dev/shm")
    if mount is None:
        return bad("/dev/shm is not a mount point: POSIX shared memory lands on the root filesystem",
                   observed=None, expected=expected)
    if mount.fstype != "tmpfs":
        return bad(f"/dev/shm is {mount.fstype}, not tmpfs", observed=mount.fstype, expected=expected)
    size_opt = mount.option("size")
    parsed = parse_size(size_opt) if size_opt is not None else None
    size: int | None
    if size_opt is None:
        size = mem_total // 2  # tmpfs default
    elif parsed is None:
        return skip(f"cannot read the tmpfs size option size={size_opt}")
    else:
        size = mem_total * parsed[0] // 100 if parsed[1] == "%" else parsed[0]
    if size == 0 and size_opt is not None:
        size = None  # size=0 means unlimited on tmpfs
    return _judge_shm_size(size, mem_total, expected)


def _judge_shm_size(size: int | None, mem_total: int, expected: str):
    """/dev/shm's size (None: unlimited) against RAM: at least half, never above it."""
    message = f"{'unlimited' if size is None else format_bytes(size)} of {format_bytes(mem_total)} RAM"
    if size is not None and (size < SHM_MIN_BYTES or size < SHM_MIN_FRACTION * mem_total):
        return bad(f"{message}: too small for NCCL shared-memory transport and dataloader workers",
                   observed=size, expected=expected)
    if size is None or size > mem_total:
        # tmpfs pages live in RAM (or swap): a job filling a /dev/shm larger than RAM drives
        # the node into the OOM killer instead of getting ENOSPC.
        return bad(f"{message}: larger than RAM, a full /dev/shm ends in the OOM killer, not ENOSPC",
                   observed=size, expected=expected)
    return ok(message, observed=size, expected=expected)


@check(
    "memory.memlock.systemd",
    "systemd services (slurmd, containers) get unlimited locked memory",
    area="memory",
    remediation="gpunode apply --profile training (slurmd drop-in LimitMEMLOCK=infinity, then restart slurmd); "
    "other services: DefaultLimitMEMLOCK=infinity in /etc/systemd/system.conf.d/gpunode.conf ([Manager]).",
)
def memlock_systemd(ctx: AuditContext):
    from gpunode.tune.kinds.unit import limit_is, unit_limit

    expected = "infinity"
    slurmd, where = unit_limit(ctx.host, "slurmd", "LimitMEMLOCK")
    if slurmd is not None:  # Slurm jobs inherit slurmd's own limit, whatever the default is
        if limit_is(slurmd, expected):
            return ok(f"slurmd LimitMEMLOCK={slurmd} ({where})", observed=slurmd, expected=expected)
        return bad(f"slurmd LimitMEMLOCK={slurmd} ({where}): Slurm jobs inherit it; RDMA and pinned CUDA "
                   "memory need infinity", observed=slurmd, expected=expected)
    value, source, present = systemd_manager_setting(ctx.host, "DefaultLimitMEMLOCK")
    if not present:
        return skip(f"no systemd manager configuration ({SYSTEMD_CONF})")
    if value is None:
        # systemd's built-in default (8M on current versions) applies to every service.
        return bad("DefaultLimitMEMLOCK not set: services get systemd's small built-in default",
                   observed=None, expected=expected)
    soft, _, hard = value.partition(":")
    limits = {soft.strip().lower(), (hard or soft).strip().lower()}
    if limits == {"infinity"}:
        return ok(f"DefaultLimitMEMLOCK={value} ({source})", observed=value, expected=expected)
    return bad(f"DefaultLimitMEMLOCK={value} ({source}): RDMA and pinned CUDA memory need infinity",
               observed=value, expected=expected)


@check(
    "memory.memlock.process",
    "This process's locked-memory limit is unlimited",
    area="memory",
    remediation="Raise the limit where gpunode starts (pam limits for logins, LimitMEMLOCK= for services); "
    "processes it starts, such as Slurm jobs under slurmd, inherit it.",
)
def memlock_process(ctx: AuditContext):
    text = ctx.host.sys.read("/proc/self/limits")
    limit = parse_proc_limits(text).get("Max locked memory") if text else None
    if limit is None:
        return skip("knob absent on this host: 'Max locked memory' in /proc/self/limits")
    observed = {"soft": limit.soft, "hard": limit.hard}
    if limit.soft == "unlimited" and limit.hard == "unlimited":
        return ok("unlimited", observed=observed, expected="unlimited")
    shown = "/".join(format_bytes(int(v)) if v.isdigit() else v for v in (limit.soft, limit.hard))
    if ctx.host.facts.is_root:
        # Root bypasses RLIMIT_MEMLOCK (CAP_IPC_LOCK), but what it starts as a user inherits the limit.
        return bad(f"soft/hard {shown} (root itself is exempt; user processes it starts are not)",
                    observed=observed, expected="unlimited")
    return bad(f"soft/hard {shown}", observed=observed, expected="unlimited")
