"""CPU jitter: idle states whose exit latency a waking thread pays (NCCL proxy threads, data
loaders). EPP and turbo are profile settings (sysfs kind, training profile)."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import bad, check, ok, skip
from gpunode.host.facts.cpuidle import DRIVER, deepest_enabled, idle_states
from gpunode.host.facts.procfs import kernel_params, parse_cmdline

# Above this exit latency a C-state is a package/core sleep (C6 and deeper: 100+ us on current
# Xeon/EPYC, e.g. intel_idle's Sapphire Rapids C6 at 290 us); C1/C1E are 1-10 us. TuneD's
# latency-performance profile keeps CPUs out of such states (force_latency).
MAX_EXIT_LATENCY_US = 100
CSTATE_PARAMS = ("intel_idle.max_cstate", "processor.max_cstate", "idle", "cpuidle.off")


@check("cpu.cstates", f"No enabled CPU idle state exits slower than {MAX_EXIT_LATENCY_US} us", area="cpu",
       remediation="Limit deep C-states for the job's lifetime: `cpupower idle-set -D 100` (disables states "
                   "with a latency above 100 us), a sysfs setting on /sys/devices/system/cpu/cpu*/cpuidle/stateN/"
                   "disable in a profile overlay, or intel_idle.max_cstate=1 on the kernel command line "
                   "(also the BIOS C-state options); deep states trade idle power for wake-up jitter.")
def cstates(ctx: AuditContext):
    sys = ctx.host.sys
    states = idle_states(sys)
    params = parse_cmdline(" ".join(kernel_params(sys.read("/proc/cmdline") or "")))
    limits = {k: params[k] for k in CSTATE_PARAMS if k in params}
    driver = sys.read_value(DRIVER)
    if not states:
        return _no_idle_states(driver, limits)
    deepest = deepest_enabled(states)
    slow = {cpu: st for cpu, st in deepest.items() if st.latency_us > MAX_EXIT_LATENCY_US}
    names = sorted({(st.name, st.latency_us) for st in deepest.values()}, key=lambda x: x[1])
    observed = {"driver": driver, "deepest": {n: lat for n, lat in names}, "cmdline": limits,
                "cpus_slow": len(slow), "cpus": len({st.cpu for st in states})}
    limit_text = "; " + ", ".join(f"{k}={v}" for k, v in limits.items()) if limits else ""
    if slow:
        worst = max(slow.values(), key=lambda st: st.latency_us)
        return bad(f"{len(slow)} of {observed['cpus']} CPUs may enter {worst.name} ({worst.latency_us} us exit "
                   f"latency; driver {driver}){limit_text}", observed=observed,
                   expected=f"deepest enabled state <= {MAX_EXIT_LATENCY_US} us")
    shown = ", ".join(f"{n} {lat} us" for n, lat in names)
    return ok(f"deepest enabled: {shown} (driver {driver}){limit_text}", observed=observed)


def _no_idle_states(driver: str | None, limits: dict[str, str]):
    """SKIP without cpuidle states in sysfs, naming the driver and the command line's limits."""
    why = f"cpuidle driver {driver}" if driver else "no cpuidle in sysfs"
    said = "; ".join(f"{k}={v}" for k, v in limits.items()) or "no C-state limit on the command line"
    return skip(f"knob absent on this host: {why} ({said})")
