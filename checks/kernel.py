"""Kernel: facts from the command line, parameters that limit the machine, taint flags."""

from __future__ import annotations

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import CheckSkipped, bad, check, ok, skip
from gpunode.host.facts.procfs import kernel_params, parse_cmdline

# Reported so an operator sees them: CPU isolation, mitigations, IOMMU and hugepage setup.
FACT_PARAMS = (
    "isolcpus", "nohz_full", "rcu_nocbs", "irqaffinity", "mitigations", "nosmt", "iommu", "intel_iommu",
    "amd_iommu", "default_hugepagesz", "hugepagesz", "hugepages", "transparent_hugepage", "preempt",
)
# Parameters that hide hardware from the kernel: a node booted with one of them is not the
# machine the scheduler thinks it is (kernel-parameters.txt).
RESTRICTING = {
    "mem": "limits the RAM the kernel uses",
    "maxcpus": "brings up only this many CPUs at boot",
    "nr_cpus": "caps the number of CPUs the kernel supports",
    "nosmp": "runs on one CPU",
    "numa": "numa=off fakes a single NUMA node: GPU/NIC locality is lost",
}
TAINTS = {  # Documentation/admin-guide/tainted-kernels.rst: bit -> (letter, meaning, a health problem?)
    0: ("P", "proprietary module", False),
    1: ("F", "module force-loaded", False),
    2: ("S", "unsafe SMP / out of spec", False),
    3: ("R", "module force-unloaded", False),
    4: ("M", "machine check exception", True),
    5: ("B", "bad page referenced", True),
    6: ("U", "tainted on request", False),
    7: ("D", "kernel died (oops or BUG)", True),
    8: ("A", "ACPI table overridden", False),
    9: ("W", "kernel warning", False),
    10: ("C", "staging driver", False),
    11: ("I", "firmware bug workaround", False),
    12: ("O", "out-of-tree module", False),
    13: ("E", "unsigned module", False),
    14: ("L", "soft lockup", True),
    15: ("K", "live patched", False),
    16: ("X", "distribution taint", False),
    17: ("T", "randstruct plugin", False),
    18: ("N", "in-kernel test", False),
}


def cmdline_params(ctx: AuditContext) -> list[str]:
    text = ctx.host.sys.read("/proc/cmdline")
    if text is None:
        raise CheckSkipped("knob absent on this host: /proc/cmdline")
    return kernel_params(text)


@check("kernel.cmdline.facts", "Kernel command line: isolation, IOMMU, hugepages, mitigations", area="kernel",
       severity="info")
def cmdline_facts(ctx: AuditContext):
    params = parse_cmdline(" ".join(cmdline_params(ctx)))
    found = {k: params[k] for k in FACT_PARAMS if k in params}
    if not found:
        return ok("none of " + ", ".join(FACT_PARAMS[:3]) + ", ... set", observed={})
    text = "; ".join(k if v is True else f"{k}={v}" for k, v in found.items())
    return ok(text, observed=found)


@check(
    "kernel.cmdline.thp",
    "transparent_hugepage= on the command line agrees with the profile",
    area="kernel",
    remediation="Change or drop transparent_hugepage= in GRUB_CMDLINE_LINUX (/etc/default/grub), "
    "update-grub, reboot at the next drain.",
)
def cmdline_thp(ctx: AuditContext):
    params = parse_cmdline(" ".join(cmdline_params(ctx)))
    setting = ctx.profile.get("sysfs.thp.enabled")
    target = None if setting is None else str(setting.target)
    boot = params.get("transparent_hugepage")
    if boot is None:
        return ok("not set (the runtime setting decides)", observed=None, expected=target)
    if target is None or boot == target:
        return ok(f"transparent_hugepage={boot}", observed=boot, expected=target)
    return bad(f"transparent_hugepage={boot} at boot, profile {ctx.profile.name} wants {target}: "
               "every boot starts in the wrong mode until the runtime value is re-applied",
               observed=boot, expected=target)


@check(
    "kernel.cmdline.restrictions",
    "No command-line parameter hides RAM, CPUs or NUMA from the kernel",
    area="kernel",
    remediation="Remove the parameter from GRUB_CMDLINE_LINUX (/etc/default/grub), update-grub, reboot.",
)
def cmdline_restrictions(ctx: AuditContext):
    params = parse_cmdline(" ".join(cmdline_params(ctx)))
    found = []
    for name, why in RESTRICTING.items():
        if name not in params:
            continue
        if name == "numa" and params[name] != "off":
            continue  # numa=fake=..., numa=noacpi are other things
        value = params[name]
        found.append(f"{name if value is True else f'{name}={value}'} ({why})")
    if not found:
        return ok("none", observed=[], expected=[])
    return bad("; ".join(found), observed=found, expected=[])


@check(
    "kernel.tainted",
    "Kernel not tainted by a machine check, oops, bad page or soft lockup",
    area="kernel",
    remediation="Read the kernel log since boot (journalctl -k -b); drain and reboot the node; "
    "repeated machine checks mean hardware service.",
)
def tainted(ctx: AuditContext):
    value = ctx.host.sys.read_int("/proc/sys/kernel/tainted")
    if value is None:
        return skip("knob absent on this host: /proc/sys/kernel/tainted")
    flags = [(bit, *TAINTS.get(bit, ("?", f"bit {bit}", False))) for bit in range(value.bit_length()) if value >> bit & 1]
    letters = "".join(letter for _, letter, _, _ in flags)
    health = [f"{letter} ({meaning})" for _, letter, meaning, bad_one in flags if bad_one]
    if health:
        return bad(f"tainted {value} [{letters}]: {', '.join(health)} since boot", observed=value, expected=0)
    if value:
        names = ", ".join(meaning for _, _, meaning, _ in flags)
        return ok(f"tainted {value} [{letters}]: {names} (not a health problem)", observed=value)
    return ok("not tainted", observed=0)
