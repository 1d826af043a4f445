"""CPU isolation asked for on the kernel command line: isolcpus= (with its flags), nohz_full=,
rcu_nocbs= and irqaffinity=, each as a set of CPUs (kernel-parameters.txt).

    isolcpus=managed_irq,domain,2-31,34-63 nohz_full=2-31,34-63 rcu_nocbs=2-31,34-63 irqaffinity=0-1,32-33
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gpunode.host.facts.cpulist import parse_cpulist

PARAMS = ("isolcpus", "nohz_full", "rcu_nocbs", "irqaffinity")
ISOLCPUS_FLAGS = ("nohz", "domain", "managed_irq")
_FLAG = re.compile(r"[A-Za-z_]+")


@dataclass
class Isolation:
    """What the command line asks; a list that does not parse is in `errors`, not in `cpus`."""

    given: dict[str, str] = field(default_factory=dict)  # parameter -> its text as written
    cpus: dict[str, set[int]] = field(default_factory=dict)  # parameter -> CPUs (isolcpus: its cpu-list)
    flags: frozenset[str] = frozenset()  # isolcpus flags in effect (domain when none is given)
    unknown_flags: tuple[str, ...] = ()
    errors: list[str] = field(default_factory=list)

    def _isolcpus_with(self, flag: str) -> set[int]:
        return self.cpus.get("isolcpus", set()) if flag in self.flags else set()

    @property
    def off_scheduler(self) -> set[int]:
        """CPUs the scheduler does not balance tasks onto: isolcpus= with its domain flag (the
        default). isolcpus=managed_irq,<cpus> alone only keeps managed interrupts off them."""
        return self._isolcpus_with("domain")

    @property
    def isolated(self) -> set[int]:
        """CPUs taken from housekeeping: isolcpus= with the domain or nohz flag, and nohz_full=
        (rcu_nocbs= CPUs, and isolcpus= CPUs with only managed_irq, still run housekeeping)."""
        return self.off_scheduler | self._isolcpus_with("nohz") | self.cpus.get("nohz_full", set())


def parse_isolation(params: dict[str, str | bool], last: int | None) -> Isolation:
    """The isolation parameters of a parsed command line (procfs.parse_cmdline); `last` is the
    highest CPU id, for the `N` and `all` of a cpulist."""
    iso = Isolation()
    for name in PARAMS:
        if name not in params:
            continue
        value = params[name]
        iso.given[name] = "" if value is True else str(value)
        if value is True and name == "rcu_nocbs":
            iso.cpus[name] = set()  # bare rcu_nocbs: no CPU offloaded at boot, switchable at run time
            continue
        text = "" if value is True else str(value)
        if name == "isolcpus":
            text = _isolcpus_flags(iso, text)
        try:
            cpus = parse_cpulist(text, last)
        except ValueError as exc:
            iso.errors.append(f"{name}=: {exc}")
            continue
        if not cpus:
            iso.errors.append(f"{name}= names no CPU")
            continue
        iso.cpus[name] = cpus
    return iso


def _isolcpus_flags(iso: Isolation, text: str) -> str:
    """Take isolcpus's leading flags (`nohz,domain,managed_irq,`) off its cpu-list, as the kernel
    does: the words before the first number are flags; with none known the flag is domain."""
    items = text.split(",")
    flags = []
    while items and _FLAG.fullmatch(items[0]):  # `N` and `all` too: the kernel takes them for flags
        flags.append(items.pop(0))
    iso.flags = frozenset(f for f in flags if f in ISOLCPUS_FLAGS) or frozenset({"domain"})
    iso.unknown_flags = tuple(f for f in flags if f not in ISOLCPUS_FLAGS)
    return ",".join(items)
