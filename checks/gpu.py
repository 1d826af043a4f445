"""GPU health from NVML: driver, count, memory errors, throttling, clocks, heat, power, processes.

Persistence, ECC, MIG and compute mode and the power limit are profile settings (kind gpu,
agent/settings/gpu.py), not checks here.
"""

from __future__ import annotations

from collections import defaultdict

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, error, fail, ok, skip, warn
from gpunode.checks.gpu_common import (
    LEFTOVER_MEMORY_BYTES,
    each_gpu,
    field_problem,
    gib,
    is_busy,
    leftovers,
    nvidia_pci_gpus,
    readable_gpus,
)
from gpunode.host.gpu.model import CLOCK_EVENT_BITS, clock_event_names

# --- NVML itself ---------------------------------------------------------------------------


@check("gpu.nvml", "NVML answers and can open every NVIDIA GPU", area="gpu", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Run nvidia-smi and read `dmesg | grep NVRM`; reload the driver or reboot. A GPU that "
                   "NVML cannot open, or one the PCI bus shows but NVML lacks, needs a reset or a reseat/RMA.")
def nvml_responsive(ctx: AuditContext):
    pci = nvidia_pci_gpus(ctx.host)
    try:
        inv = ctx.inventory()
    except TimeoutError as exc:
        return fail(f"NVML hung: {exc}; the driver is not answering", observed="no answer", expected="answers")
    if not inv.available:
        why = inv.error or "no NVIDIA driver/NVML"
        if pci:
            return fail(f"{why}, yet the PCI bus shows {len(pci)} NVIDIA GPU(s): {', '.join(pci)}",
                        observed=why, expected="NVML answers")
        return skip(f"{why}; no NVIDIA GPU on the PCI bus")
    if not inv.gpus:
        if pci:
            return fail(f"NVML finds no GPU, yet the PCI bus shows {len(pci)}: {', '.join(pci)}",
                        observed=0, expected=len(pci))
        return skip("NVML answers but finds no GPU, and none is on the PCI bus")
    found = []
    for g in inv.gpus:
        if g.error:
            found.append(fail(g.error, observed="cannot open", expected="opens", subject=g.label))
        else:
            found.append(ok(f"{g.name} at {g.pci_bus_id} answers (driver {inv.driver_version})",
                            observed="answers", subject=g.label))
    return found


# --- driver and count -----------------------------------------------------------------------


def pin_matches(version: str, pin: str) -> bool:
    """'580.159.04' exact; '580.' or '580.*' a prefix; '580' any 580.x (never 5800)."""
    pin = pin.strip()
    if pin.endswith(("*", ".")):
        return version.startswith(pin.rstrip("*"))
    return version == pin or version.startswith(pin + ".")


def _inventory(ctx: AuditContext):
    inv = ctx.inventory()
    if not inv.available:
        raise CheckSkipped(inv.error or "no NVIDIA driver/NVML")
    return inv


@check("gpu.driver", "NVIDIA driver and CUDA driver versions (vs optional pins)", area="gpu",
       severity="warning", needs_gpu=True,
       remediation="Install the pinned driver (driver_pin / cuda_pin in the site config) so every node runs the same.")
def driver_version(ctx: AuditContext):
    inv = _inventory(ctx)
    driver, cuda = inv.driver_version, inv.cuda_driver_version
    pins = {"driver": ctx.config.driver_pin, "cuda": ctx.config.cuda_pin}
    observed = {"driver": driver, "cuda": cuda}
    wrong = []
    for what, have, pin in (("driver", driver, pins["driver"]), ("CUDA driver", cuda, pins["cuda"])):
        if pin and (have is None or not pin_matches(have, pin)):
            wrong.append(f"{what} {have or 'unknown'} does not match pin {pin}")
    if wrong:
        return bad("; ".join(wrong), observed=observed, expected=pins)
    if driver is None:
        return bad("NVML did not report the driver version", observed=observed)
    pinned = " (matches the pins)" if any(pins.values()) else " (no pin set)"
    return ok(f"driver {driver}, CUDA driver {cuda}{pinned}", observed=observed,
              expected=pins if any(pins.values()) else None)


@check("gpu.count", "GPU count: NVML sees every GPU on the PCI bus (and the expected number)", area="gpu",
       severity="critical", tags=["gate"], needs_gpu=True,
       remediation="A GPU fell off the bus or failed to initialise: read `dmesg | grep NVRM`, reboot; "
                   "if it stays missing, reseat or RMA it.")
def gpu_count(ctx: AuditContext):
    expected = ctx.config.expected_gpus
    pci = nvidia_pci_gpus(ctx.host)
    try:
        inv = ctx.inventory()
    except TimeoutError as exc:
        return fail(f"NVML hung ({exc}): no GPU is usable", observed=0, expected=expected or len(pci) or None)
    if not inv.available:
        return _no_gpu_usable(inv, expected, pci)
    usable, problems = _count_problems(inv, pci, expected)
    observed = {"nvml": len(inv.gpus), "usable": len(usable), "pci": len(pci)}
    if problems:
        return bad("; ".join(problems), observed=observed, expected=expected or len(pci))
    return _count_as_expected(len(usable), expected, pci, observed)


def _no_gpu_usable(inv, expected: int | None, pci: list[str]):
    """NVML unavailable: a FAIL-class finding when GPUs were expected or the PCI bus shows some."""
    if expected:
        return bad(f"0 GPUs usable ({inv.error}), expected {expected}", observed=0, expected=expected)
    if pci:
        return bad(f"0 GPUs usable ({inv.error}) while the PCI bus shows {len(pci)}",
                   observed=0, expected=len(pci))
    raise CheckSkipped(inv.error or "no NVIDIA driver/NVML")


def _count_problems(inv, pci: list[str], expected: int | None) -> tuple[list, list[str]]:
    """(the usable GPUs, what is wrong with the count): missing from NVML, unopenable, listed twice, too few."""
    usable = [g for g in inv.gpus if not g.error]
    problems = _not_opened(inv, pci)
    twice = inv.duplicates()  # one GPU listed twice must not stand in for a missing one
    if twice:
        problems.append("; ".join(f"{g.label} is {first.label} again (same {what})" for g, first, what in twice))
        usable = [g for g in usable if all(g is not dup for dup, _, _ in twice)]
    if expected is not None and len(usable) < expected:
        problems.append(f"{len(usable)} usable GPU(s), expected {expected}")
    return usable, problems


def _not_opened(inv, pci: list[str]) -> list[str]:
    """GPUs the PCI bus shows but NVML lacks, and those NVML lists but cannot open."""
    seen = {g.sysfs_bdf for g in inv.gpus if g.sysfs_bdf}
    missing = [bdf for bdf in pci if bdf not in seen]
    problems = []
    if missing:
        problems.append(f"the PCI bus shows {len(pci)} NVIDIA GPUs but NVML lacks {', '.join(missing)}")
    broken = [g.label for g in inv.gpus if g.error]
    if broken:
        problems.append(f"NVML cannot open {', '.join(broken)}")
    return problems


def _count_as_expected(usable: int, expected: int | None, pci: list[str], observed: dict):
    """No problem found: how the usable count compares with expected_gpus or the PCI bus."""
    if expected is not None and usable > expected:
        return warn(f"{usable} GPUs, more than the expected {expected}: is expected_gpus right?",
                    observed=observed, expected=expected)
    if expected is not None:
        return ok(f"{usable} GPUs as expected", observed=observed, expected=expected)
    if pci:
        return ok(f"{usable} GPUs, matching the PCI bus (no expected_gpus set)", observed=observed,
                  expected=len(pci))
    return skip(f"NVML sees {usable} GPU(s); no expected_gpus set and no PCI view to compare with")


# --- memory errors --------------------------------------------------------------------------


@check("gpu.ecc.uncorrectable", "No uncorrectable ECC errors", area="gpu", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Drain the node and reset the GPU (nvidia-smi -r); if uncorrectable errors recur, RMA it.")
def ecc_uncorrectable(ctx: AuditContext):
    def judge(g):
        if g.ecc_mode_current is False:
            return skip("ECC is off (the profile setting gpu.ecc_mode judges that)")
        vol, agg = g.ecc_uncorrected_volatile, g.ecc_uncorrected_aggregate
        observed = {"volatile": vol, "aggregate": agg}
        if vol is None and agg is None:
            return skip("NVML reports no ECC error counters on this GPU")
        if vol:
            return bad(f"{vol} uncorrectable ECC error(s) since the driver loaded", observed=observed, expected=0)
        if agg:
            return warn(f"none since the driver loaded, but {agg} uncorrectable over the GPU's life",
                        observed=observed, expected=0)
        return ok("no uncorrectable ECC errors (volatile and aggregate 0)", observed=observed, expected=0)

    return each_gpu(ctx, judge, needs=("ecc_mode_current", "ecc_uncorrected_volatile", "ecc_uncorrected_aggregate"))


# DCGM's limits (dcgm_gpu_hardware_limits.h): 60 retired pages is the RMA line, 15 the soft limit.
RETIRED_PAGES_FAIL = 60
RETIRED_PAGES_WARN = 15


@check("gpu.memory.remap", "No row remap failed or pending (retired pages on pre-Ampere GPUs)", area="gpu",
       severity="critical", tags=["gate"], needs_gpu=True,
       remediation="Drain the node and reset the GPU (nvidia-smi -r) to apply a pending remap or page "
                   "retirement; a remap failure or 60+ retired pages is an RMA case (NVIDIA memory error docs).")
def memory_remap(ctx: AuditContext):
    def judge(g):
        if g.remap_pending is not None or g.remap_failure is not None:
            rows = {"correctable": g.remap_correctable, "uncorrectable": g.remap_uncorrectable,
                    "pending": g.remap_pending, "failure": g.remap_failure}
            if g.remap_failure:
                return bad("row remapping failed: a memory bank has no spare rows left", observed=rows,
                           expected="no failure")
            if g.remap_pending:
                return bad("a row remap is pending: the faulty row stays in use until a GPU reset",
                           observed=rows, expected="none pending")
            return ok(f"no remap pending or failed ({g.remap_correctable} correctable, "
                      f"{g.remap_uncorrectable} uncorrectable rows remapped)", observed=rows)
        pages = [g.retired_pages_sbe, g.retired_pages_dbe]
        if g.retired_pages_pending is None and all(p is None for p in pages):
            return skip("NVML reports neither row remapping nor page retirement on this GPU")
        total = sum(p or 0 for p in pages)
        observed = {"sbe": g.retired_pages_sbe, "dbe": g.retired_pages_dbe, "pending": g.retired_pages_pending}
        if g.retired_pages_pending:
            return bad("page retirement pending: it takes effect at the next GPU reset", observed=observed,
                       expected="none pending")
        if total >= RETIRED_PAGES_FAIL:
            return bad(f"{total} retired pages, at or over the RMA limit {RETIRED_PAGES_FAIL}",
                       observed=observed, expected=f"< {RETIRED_PAGES_FAIL}")
        if total >= RETIRED_PAGES_WARN:
            return warn(f"{total} retired pages, over the soft limit {RETIRED_PAGES_WARN}", observed=observed,
                        expected=f"< {RETIRED_PAGES_WARN}")
        return ok(f"{total} retired pages, none pending", observed=observed)

    return each_gpu(ctx, judge, needs=("remap_pending", "retired_pages_sbe", "retired_pages_dbe",
                                       "retired_pages_pending"))


# --- clocks, heat, power --------------------------------------------------------------------

# Hardware slowdowns mean a fault (power brake, over-temperature, a failing sensor or PSU).
THROTTLE_FAIL = ("hw_slowdown", "hw_thermal_slowdown", "hw_power_brake_slowdown")
# The driver slowing a hot GPU: cooling is short, the node works at reduced speed.
THROTTLE_WARN = ("sw_thermal_slowdown",)
_KNOWN_BITS = sum(CLOCK_EVENT_BITS.keys())


@check("gpu.throttle", "No hardware or thermal clock slowdown", area="gpu", severity="critical", tags=["gate"],
       needs_gpu=True,
       remediation="HW slowdown / power brake: check PSUs, power cables and the BMC event log; thermal: "
                   "check fans, airflow and inlet temperature. Idle, SW power cap and sync boost are normal.")
def throttle(ctx: AuditContext):
    def judge(g):
        mask = g.clock_event_reasons
        if mask is None:
            return skip("NVML reports no clock event reasons on this GPU")
        names = clock_event_names(mask)
        observed = {"mask": hex(mask), "reasons": names}
        failing = [n for n in names if n in THROTTLE_FAIL]
        if failing:
            return bad(f"clocks held down by {', '.join(failing)}", observed=observed, expected="no HW slowdown")
        warned = [n for n in names if n in THROTTLE_WARN]
        unknown = mask & ~_KNOWN_BITS
        if warned:
            return warn(f"clocks held down by {', '.join(warned)}: the GPU runs hot", observed=observed,
                        expected="no thermal slowdown")
        if unknown:
            return warn(f"unknown clock event bits {hex(unknown)} (a newer driver?)", observed=observed)
        return ok(f"no slowdown ({', '.join(names) or 'no clock event'})", observed=observed)

    return each_gpu(ctx, judge, needs=("clock_event_reasons",))


# nvmlClocksEventReasonApplicationsClocksSetting (0x2), called UserDefinedClocks before NVML
# renamed it: the driver holds clocks at a user setting, applications clocks or locked clocks
# (nvidia-smi -lgc/-lmc, nvmlDeviceSetGpuLockedClocks/SetMemoryLockedClocks).
USER_CLOCKS_BIT = 0x2
# Reasons that explain a busy GPU below its maximum clock without any lock.
_EXPLAINED = ("gpu_idle", "sw_power_cap", "hw_slowdown", "sync_boost", "sw_thermal_slowdown",
              "hw_thermal_slowdown", "hw_power_brake_slowdown", "display_clock_setting")
SM_HELD_FRACTION = 0.9  # busy below 90% of the max clock with no reason: held down
MEM_HELD_FRACTION = 0.98  # HBM runs at its maximum in P0, idle or not


@check("gpu.clocks", "Clocks not locked or set below default (applications and locked clocks)", area="gpu",
       severity="warning", tags=["gate"], needs_gpu=True,
       remediation="Reset applications clocks (nvidia-smi -i N -rac) and locked clocks (nvidia-smi -i N -rgc; "
                   "-rmc for memory); find what sets them (a job epilog, a benchmark script, a tuning service).")
def clocks(ctx: AuditContext):
    def judge(g):
        pairs = (("SM", g.sm_app_clock_mhz, g.sm_app_clock_default_mhz),
                 ("memory", g.mem_app_clock_mhz, g.mem_app_clock_default_mhz))
        observed = {"sm_app": g.sm_app_clock_mhz, "sm_app_default": g.sm_app_clock_default_mhz,
                    "mem_app": g.mem_app_clock_mhz, "mem_app_default": g.mem_app_clock_default_mhz,
                    "sm_max": g.sm_clock_max_mhz, "mem_max": g.mem_clock_max_mhz, "sm_now": g.sm_clock_mhz,
                    "mem_now": g.mem_clock_mhz, "pstate": g.performance_state,
                    "reasons": clock_event_names(g.clock_event_reasons)}
        apps_known = any(now is not None and default is not None for _, now, default in pairs)
        if not apps_known and g.clock_event_reasons is None and g.sm_clock_mhz is None:
            return skip("NVML reports no applications clocks, clock event reasons or clocks on this GPU")
        low = [f"{what} {now} MHz < default {default} MHz" for what, now, default in pairs
               if now is not None and default is not None and now < default]
        if low:
            return bad(f"applications clocks locked low: {'; '.join(low)}", observed=observed,
                       expected={"sm_app": g.sm_app_clock_default_mhz, "mem_app": g.mem_app_clock_default_mhz})
        held = locked_clock_signs(g)
        if held:
            return bad(f"clocks locked: {'; '.join(held)}", observed=observed, expected="no locked clocks")
        apps = (f"applications clocks at default (SM {g.sm_app_clock_mhz}, memory {g.mem_app_clock_mhz} MHz)"
                if apps_known else "no applications clocks reported")
        return ok(f"{apps}; {lock_note(g)}; max SM {g.sm_clock_max_mhz} MHz, now {g.sm_clock_mhz} MHz",
                  observed=observed)

    return each_gpu(ctx, judge, needs=("sm_app_clock_mhz", "sm_app_clock_default_mhz", "mem_app_clock_mhz",
                                       "mem_app_clock_default_mhz"))


def locked_clock_signs(g) -> list[str]:
    """What NVML shows of clocks held by a user setting while applications clocks are at default:
    the user-defined clocks event reason, HBM below its maximum in P0, or a busy GPU below its
    maximum SM clock with no power, thermal or sync reason."""
    signs = []
    names = clock_event_names(g.clock_event_reasons)
    if g.clock_event_reasons is not None and g.clock_event_reasons & USER_CLOCKS_BIT:
        signs.append("NVML reports the user-defined clocks event reason (applications_clocks_setting) "
                     "with applications clocks at default")
    mem, mem_max = g.mem_clock_mhz, g.mem_clock_max_mhz
    if g.performance_state == 0 and mem is not None and mem_max and mem < MEM_HELD_FRACTION * mem_max:
        signs.append(f"memory at {mem} of {mem_max} MHz in P0")
    sm, sm_max = g.sm_clock_mhz, g.sm_clock_max_mhz
    if (is_busy(g) and sm is not None and sm_max and sm < SM_HELD_FRACTION * sm_max
            and not any(n in _EXPLAINED for n in names)):
        signs.append(f"SM at {sm} of {sm_max} MHz under load with no power, thermal or sync reason")
    return signs


def lock_note(g) -> str:
    """How far 'no locked clocks' can be trusted on this GPU."""
    supported = g.clock_event_reasons_supported
    unread = field_problem(g, ("clock_event_reasons", "clock_event_reasons_supported"))
    if unread:
        return f"locked clocks not ruled out ({unread})"
    if supported is None:
        return "locked clocks not ruled out (NVML's supported clock event reasons not read)"
    if not supported & USER_CLOCKS_BIT:
        return "locked clocks not ruled out (this driver does not report user-defined clocks)"
    return "no locked clocks"


TEMPERATURE_MARGIN_C = 5


@check("gpu.temperature", "GPU temperature below the slowdown threshold", area="gpu", severity="critical",
       tags=["gate"], needs_gpu=True,
       remediation="Check fans, airflow, blanking panels and inlet temperature (BMC); an idle GPU near "
                   "slowdown has a cooling fault.")
def temperature(ctx: AuditContext):
    def judge(g):
        now, slowdown = g.temperature_c, g.temperature_slowdown_c
        observed = now
        if now is None:
            return skip("NVML reports no GPU temperature")
        if slowdown is None:
            return skip(f"{now} C; NVML reports no slowdown threshold to compare with")
        expected = f"< {slowdown - TEMPERATURE_MARGIN_C} C"
        if now >= slowdown:
            return bad(f"{now} C, at or over the slowdown threshold {slowdown} C", observed=observed,
                       expected=expected)
        if now >= slowdown - TEMPERATURE_MARGIN_C:
            return warn(f"{now} C, within {TEMPERATURE_MARGIN_C} C of the slowdown threshold {slowdown} C",
                        observed=observed, expected=expected)
        return ok(f"{now} C, {slowdown - now} C below slowdown ({slowdown} C)", observed=observed,
                  expected=expected)

    return each_gpu(ctx, judge, needs=("temperature_c", "temperature_slowdown_c"))


POWER_OVER_LIMIT = 1.05  # the cap should hold: sustained draw over it means a sensor or capping fault
IDLE_POWER_SHARE = 0.5  # an idle GPU drawing half its limit is stuck busy or misreports


@check("gpu.power", "Power draw within the enforced limit", area="gpu", severity="warning", needs_gpu=True,
       remediation="Check what runs on the GPU (nvidia-smi) and the BMC power readings; a GPU that "
                   "ignores its cap or draws heavily when idle needs a reset or service.")
def power(ctx: AuditContext):
    def judge(g):
        draw, limit = g.power_usage_w, g.power_limit_w
        observed = {"draw_w": draw, "limit_w": limit, "default_w": g.power_default_limit_w,
                    "max_w": g.power_max_limit_w}
        if draw is None:
            return skip("NVML reports no power draw on this GPU")
        if limit is None:
            return ok(f"{draw} W (no enforced limit reported)", observed=observed)
        if draw > limit * POWER_OVER_LIMIT:
            return bad(f"draws {draw} W, over its enforced limit of {limit} W", observed=observed,
                       expected=f"<= {limit} W")
        idle = "gpu_idle" in clock_event_names(g.clock_event_reasons)
        if idle and draw > limit * IDLE_POWER_SHARE:
            return bad(f"idle but draws {draw} W, over half of its {limit} W limit", observed=observed,
                       expected=f"<= {limit * IDLE_POWER_SHARE:.0f} W when idle")
        return ok(f"{draw} W of {limit} W (default {g.power_default_limit_w} W, max {g.power_max_limit_w} W)",
                  observed=observed)

    return each_gpu(ctx, judge, needs=("power_usage_w", "power_limit_w"))


# --- leftovers and consistency --------------------------------------------------------------

@check("gpu.processes", "No leftover processes or memory on the GPU", area="gpu", severity="warning",
       tags=["gate"], needs_gpu=True,
       remediation="Before a job: find and stop the processes listed (a job's leftovers); memory in use with "
                   "no visible process is held by another PID namespace (container) or a stuck context: "
                   "stop it or reset the GPU.")
def processes(ctx: AuditContext):
    def judge(g):
        used = g.memory_used_bytes
        problem = leftovers(g)
        if problem and g.processes:
            listed = [{"pid": p.pid, "name": p.name, "kind": p.kind, "memory": gib(p.used_memory_bytes)
                       if p.used_memory_bytes is not None else None} for p in g.processes]
            return bad(problem, observed=listed, expected="none")
        if problem:
            return bad(problem, observed=gib(used), expected=f"<= {gib(LEFTOVER_MEMORY_BYTES)}")
        return ok(f"no processes, {gib(used)} in use", observed=gib(used))

    return each_gpu(ctx, judge, needs=("processes", "memory_used_bytes"))


@check("gpu.vbios", "Same VBIOS on every GPU of the same model", area="gpu", severity="warning", needs_gpu=True,
       remediation="Flash the fleet's VBIOS (vendor tool) so every GPU of a model runs the same version.")
def vbios(ctx: AuditContext):
    groups: dict[tuple, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    findings = []
    for g in readable_gpus(ctx):
        problem = field_problem(g, ("vbios_version",))
        if problem:
            findings.append(error(problem, subject=g.label))
            continue
        if g.vbios_version:
            groups[(g.name, g.board_part_number)][g.vbios_version].append(g.label)
    if not groups:
        return findings or skip("NVML reports no VBIOS version")
    for (name, part), versions in groups.items():
        subject = f"{name} ({part})" if part else name
        if len(versions) > 1:
            text = "; ".join(f"{v} on {', '.join(labels)}" for v, labels in sorted(versions.items()))
            findings.append(bad(f"{len(versions)} VBIOS versions: {text}", observed=sorted(versions),
                                expected="one version", subject=subject))
        else:
            (version, labels), = versions.items()
            findings.append(ok(f"{len(labels)} GPU(s) run VBIOS {version}", observed=version, subject=subject))
    return findings
