"""The kernel's CPU list format (`0-3,8-11,16`, strides `0-6:2`): one parser, one formatter.

Used for /sys/devices/system/cpu/{online,present}, node*/cpulist, a PCI device's
local_cpulist and /proc/irq/*/smp_affinity_list.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_CPUS = 65_536  # ids 0..65535; Linux builds for at most 8192 (x86 MAXSMP): a bigger id is damage



def parse_cpulist(text: str, last: int | None = None) -> set[int]:
    """`0-3,8,10-11` -> {0,1,2,3,8,10,11}; the kernel's groups `100-2000:2/25` (the first 2 of every
    25: 100,101,125,126,...) and a stride `0-6:2` (1 of every 2). With `last` (the highest CPU id) a
    kernel command line's `N` stands for it and `all` for `0-N` (kernel-parameters.rst, "cpu lists").
    ValueError naming the text when it is not a cpulist or names a CPU id of MAX_CPUS or more
    (`0-999999999` in a snapshot would take gigabytes)."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if last is not None:
            part = f"0-{last}" if part.lower() == "all" else part.replace("N", str(last))
        start, end, used, group = _item(part, text)
        if used == group:
            cpus.update(range(start, end + 1))
            continue
        for first in range(start, end + 1, group):
            cpus.update(range(first, min(first + used, end + 1)))
    return cpus


def _item(part: str, text: str) -> tuple[int, int, int, int]:
    """One item of a cpulist: (first CPU, last CPU, CPUs used of each group, group size)."""
    span, colon, group_text = part.partition(":")
    start_text, dash, end_text = span.partition("-")
    used_text, slash, size_text = group_text.partition("/")
    try:
        start = _number(start_text)
        end = _number(end_text) if dash else start
        used = _number(used_text) if slash else 1
        group = _number(size_text) if slash else (_number(used_text) if colon else 1)
    except ValueError:
        raise ValueError(f"bad cpulist {_show(text)}") from None
    if end < start or group < 1 or not 1 <= used <= group:
        raise ValueError(f"bad cpulist {_show(text)}")
    if end >= MAX_CPUS:
        raise ValueError(f"bad cpulist {_show(text)}: CPU {end} is beyond {MAX_CPUS - 1}")
    return start, end, used, group


def _number(text: str) -> int:
    """ASCII digits only: int() would also take `+3`, `1_000` and other scripts' digits."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(text)
    return int(text)


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
