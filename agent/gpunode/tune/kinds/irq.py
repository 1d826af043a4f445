"""IRQ affinity: each data NIC's interrupts on CPUs of the NIC's own NUMA node."""

from __future__ import annotations

from gpunode.host.facts.cpulist import read_cpulist
from gpunode.host.facts.nics import data_nics
from gpunode.tune.kinds.base import BOOT_SPEC, VERIFY_ALL, Observed, SettingKind
from gpunode.tune.kinds.values import SettingInvalid

KEYS = ("nic-numa-local",)


def nic_irqs(host, nic: str) -> list[int]:
    names = host.sys.listdir(f"/sys/class/net/{nic}/device/msi_irqs") or []
    return sorted(int(n) for n in names if n.isdigit())


def node_cpus(host, node: int) -> set[int] | None:
    return read_cpulist(host.sys.read_value(f"/sys/devices/system/node/node{node}/cpulist"))


# --- write side: spread a NIC's remote IRQs over the CPUs of its NUMA node ------------------
def observe_nics(host) -> list[Observed]:
    observed = []
    for nic in data_nics(host):
        node = host.sys.read_int(f"/sys/class/net/{nic}/device/numa_node")
        if node is None or node < 0:
            observed.append(Observed(nic, None, note="NIC has no NUMA node (single-node host or VM)"))
            continue
        local = node_cpus(host, node)
        irqs = nic_irqs(host, nic)
        if local is None or not irqs:
            observed.append(Observed(nic, None, note="no MSI IRQs or node CPU list readable"))
            continue
        remote = []
        for irq in irqs:
            cpus = read_cpulist(host.sys.read_value(f"/proc/irq/{irq}/smp_affinity_list"))
            if cpus is not None and not cpus <= local:
                remote.append(irq)
        observed.append(
            Observed(
                nic,
                not remote,
                note=f"node {node}; {len(remote)}/{len(irqs)} IRQs outside node CPUs" if remote else f"node {node}",
                extra={"node": node, "irqs": irqs, "remote_irqs": remote},
            )
        )
    return observed


def plan_affinity(host, setting, wrong: list[Observed]) -> list:
    """One change per IRQ outside the node: IRQ k of the NIC gets local CPU k mod n, so the
    queues' interrupts land on different cores of the NIC's own node."""
    from gpunode.tune.kinds.change import Change

    changes = []
    for obs in wrong:
        if obs.value is None:
            continue
        local = sorted(node_cpus(host, obs.extra["node"]) or [])
        if not local:
            continue
        for position, irq in enumerate(obs.extra["irqs"]):
            if irq not in obs.extra["remote_irqs"]:
                continue
            path = f"/proc/irq/{irq}/smp_affinity_list"
            before = host.sys.read_value(path)
            after = str(local[position % len(local)])
            changes.append(
                Change(setting.id, f"{obs.subject} IRQ {irq}", "knob", path, before, after,
                       current_text=before or "?", after_text=f"{after} (node {obs.extra['node']})",
                       extra={"nic": obs.subject})
            )
    return changes


class Irq(SettingKind):
    name = "irq"
    area = "net"
    persists_in = BOOT_SPEC
    verify = VERIFY_ALL

    def validate_key(self, key: str) -> None:
        if key not in KEYS:
            raise SettingInvalid(f"irq key must be one of {', '.join(KEYS)}")

    def validate_target(self, key, target):
        if target is not True:
            raise SettingInvalid(f"irq.{key} target must be true")
        return target

    def observe(self, ctx, setting) -> list[Observed]:
        return observe_nics(ctx.host)

    def satisfied(self, setting, obs) -> bool:
        return obs.value is True

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        return plan_affinity(ctx.host, setting, wrong)
