"""Host identity: OS, kernel and SMT state (reported, not judged)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import check, ok, skip
from gpunode.host.facts.os_release import OS_RELEASE, parse_os_release


@check("host.os", "OS and kernel version", area="host", severity="info")
def os_version(ctx: AuditContext):
    sys = ctx.host.sys
    release = next((t for t in (sys.read(p) for p in OS_RELEASE) if t is not None), None)
    fields = parse_os_release(release) if release is not None else {}
    name = fields.get("PRETTY_NAME") or " ".join(filter(None, (fields.get("NAME"), fields.get("VERSION")))) or None
    kernel = sys.read_value("/proc/sys/kernel/osrelease")
    if name is None and kernel is None:
        return skip("neither /etc/os-release nor /proc/sys/kernel/osrelease is readable")
    return ok(f"{name or 'unknown OS'}; kernel {kernel or 'unknown'}", observed={"os": name, "kernel": kernel})


@check("host.smt", "SMT (hyper-threading) state", area="host", severity="info")
def smt(ctx: AuditContext):
    control = ctx.host.sys.read_value("/sys/devices/system/cpu/smt/control")
    active = ctx.host.sys.read_int("/sys/devices/system/cpu/smt/active")
    if control is None:
        return skip("knob absent on this host: /sys/devices/system/cpu/smt/control")
    state = {1: "active", 0: "inactive"}.get(active, "unknown")
    return ok(f"control {control}, siblings {state}", observed={"control": control, "active": active})
