"""The kernel's CPU list format (`0-3,8-11,16`, strides `0-6:2`): one parser, one formatter.

Used for /sys/devices/system/cpu/{online,present}, node*/cpulist, a PCI device's
local_cpulist and /proc/irq/*/smp_affinity_list.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_CPUS = 65_536  # ids 0..65535; Linux builds for at most 8192 (x86 MAXSMP): a bigger id is damage



def parse_cpulist(text: str) -> set[int]:
    """`0-3,8,10-11` -> {0,1,2,3,8,10,11}; ValueError naming the text when it is not a cpulist
    or names a CPU id of MAX_CPUS or more (`0-999999999` in a snapshot would take gigabytes)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        span, _, stride_text = part.partition(":")
        start_text, dash, end_text = span.partition("-")
        try:
            start = int(start_text)
            end = int(end_text) if dash else start
            stride = int(stride_text) if stride_text else 1
        except ValueError:
            raise ValueError(f"bad cpulist {_show(text)}") from None
        if start < 0 or end < start or stride < 1:
            raise ValueError(f"bad cpulist {_show(text)}")
        if end >= MAX_CPUS:
            raise ValueError(f"bad cpulist {_show(text)}: CPU {end} is beyond {MAX_CPUS - 1}")
        cpus.update(range(start, end + 1, stride))
    return cpus


def _show(text: str) -> str:
    shown = repr(text.strip())
    return shown if len(shown) <= 60 else shown[:57] + "..."


def read_cpulist(text: str | None) -> set[int] | None:
    """A cpulist read from sysfs/procfs: None when the file was missing or is not a cpulist."""
    if text is None:
        return None
    try:
        return parse_cpulist(text)
    except ValueError:
        return None


def format_cpulist(cpus: Iterable[int]) -> str:
    """{0,1,2,3,8} -> `0-3,8` (the kernel's own format)."""
    out: list[str] = []
    run: list[int] = []
    for cpu in sorted(set(cpus)):
        if run and cpu == run[-1] + 1:
            run.append(cpu)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [cpu]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)
