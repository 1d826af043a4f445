"""CPU inventory and CPUs that are present but offline."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.host.facts.cpulist import format_cpulist, read_cpulist

CPU = "/sys/devices/system/cpu"


def model_name(cpuinfo: str | None) -> str | None:
    for line in (cpuinfo or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "model name":
            return value.strip()
    return None


@check("cpu.topology", "CPU model, sockets, cores and threads", area="cpu", severity="info")
def topology(ctx: AuditContext):
    sys = ctx.host.sys
    online = read_cpulist(sys.read_value(f"{CPU}/online"))
    if not online:
        return skip(f"knob absent on this host: {CPU}/online")
    packages, cores = set(), set()
    for cpu in online:
        pkg = sys.read_int(f"{CPU}/cpu{cpu}/topology/physical_package_id")
        core = sys.read_int(f"{CPU}/cpu{cpu}/topology/core_id")
        if pkg is not None:
            packages.add(pkg)
            if core is not None:
                cores.add((pkg, core))
    model = model_name(sys.read("/proc/cpuinfo")) or "unknown model"
    observed = {"model": model, "sockets": len(packages) or None, "cores": len(cores) or None, "threads": len(online)}
    shape = f"{len(packages)} socket(s), {len(cores)} cores, " if packages and cores else ""
    return ok(f"{model}; {shape}{len(online)} online CPUs", observed=observed)


@check(
    "cpu.online",
    "Every present CPU is online",
    area="cpu",
    remediation="echo 1 > /sys/devices/system/cpu/cpuN/online; check maxcpus=/nr_cpus= on the kernel command line.",
)
def online(ctx: AuditContext):
    sys = ctx.host.sys
    present = read_cpulist(sys.read_value(f"{CPU}/present"))
    up = read_cpulist(sys.read_value(f"{CPU}/online"))
    if present is None or up is None:
        return skip(f"knob absent on this host: {CPU}/present or {CPU}/online")
    offline = present - up
    if not offline:
        return ok(f"all {len(present)} present CPUs online", observed=len(up), expected=len(present))
    smt = sys.read_value(f"{CPU}/smt/control")
    if smt in ("off", "forceoff") and len(offline) <= len(present) // 2:
        # With SMT off the kernel takes the sibling threads offline on purpose.
        return ok(f"{len(up)}/{len(present)} CPUs online; SMT {smt} took {format_cpulist(offline)} offline",
                  observed=len(up), expected=len(present))
    return bad(f"{len(offline)} of {len(present)} present CPUs offline: {format_cpulist(offline)}",
               observed=len(up), expected=len(present))
