"""Parsers for /proc files: mounts, mountinfo, meminfo, a process's limits, the kernel command line."""

from __future__ import annotations

import re
from typing import NamedTuple

_OCTAL = re.compile(r"\\([0-7]{3})")
# Patterns compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs them (issue 21).
_SIZE = r"^(\d+)([kKmMgGtTpPeE%]?)"
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}
_LIMIT_LINE = r"^(\S.*?)\s{2,}(\S+)\s+(\S+)(?:\s+(\S+))?\s*"


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class Mount(NamedTuple):
    """One line of /proc/mounts, octal escapes decoded."""

    source: str
    target: str
    fstype: str
    options: tuple[str, ...]

    def has(self, option: str) -> bool:
        return option in self.options

    def option(self, name: str) -> str | None:
        """The value of `name=value`, or None."""
        prefix = name + "="
        for opt in self.options:
            if opt.startswith(prefix):
                return opt[len(prefix):]
        return None


def unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as \\040 \\011 \\012 \\134."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 4:
            continue  # a truncated or garbled line: not a mount we can judge
        mounts.append(Mount(unescape(parts[0]), unescape(parts[1]), parts[2], tuple(parts[3].split(","))))
    return mounts


_DEVICE_ID = r"\d{1,10}:\d{1,10}"


def parse_mountinfo(text: str) -> list[tuple[str, str]]:
    """/proc/self/mountinfo -> (mount point, major:minor) per line, in order (stacked mounts: the
    last one listed is the visible one). A line cut before its mount point keeps its device with
    mount point "" (fio must still see the device as mounted); a malformed id is left out."""
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) > 2 and re.fullmatch(_DEVICE_ID, parts[2]):
            out.append((unescape(parts[4]) if len(parts) > 4 else "", parts[2]))
    return out


def mount_at(mounts: list[Mount], target: str) -> Mount | None:
    """The mount visible at exactly `target`: the last one listed (mounts stack)."""
    found = None
    for m in mounts:
        if m.target == target:
            found = m
    return found


def mount_of(mounts: list[Mount], path: str) -> Mount | None:
    """The mount that holds `path`: the longest mount point that is `path` or a parent of it."""
    best: Mount | None = None
    for m in mounts:
        t = m.target.rstrip("/") or "/"
        if path == t or path.startswith(t if t == "/" else t + "/"):
            if best is None or len(t) >= len(best.target.rstrip("/") or "/"):
                best = m
    return best


def parse_size(text: str) -> tuple[int, str] | None:
    """'24684084k' -> (bytes, ''); '50%' -> (50, '%'); None when not a size."""
    match = re.fullmatch(_SIZE, text.strip())
    if not match:
        return None
    number, unit = int(match.group(1)), match.group(2).lower()
    if unit == "%":
        return number, "%"
    return number * _UNITS[unit], ""


def parse_meminfo(text: str) -> dict[str, int]:
    """/proc/meminfo (and node*/meminfo) -> {key: value}; `kB` values are converted to bytes,
    counts (HugePages_Total) stay counts. Node files' 'Node 0 ' prefix is dropped."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep:
            continue
        key = re.sub(r"^Node \d+ ", "", key.strip())
        parts = rest.split()
        if not parts or not parts[0].isdigit():
            continue
        scale = 1024 if len(parts) > 1 and parts[1] == "kB" else 1
        values[key] = int(parts[0]) * scale
    return values


class Limit(NamedTuple):  # as Mount
    """One line of /proc/<pid>/limits."""

    soft: str  # "unlimited" or a number in `units`
    hard: str
    units: str


def parse_proc_limits(text: str) -> dict[str, Limit]:
    """/proc/<pid>/limits -> {'Max locked memory': Limit('8388608', '8388608', 'bytes'), ...}."""
    limits: dict[str, Limit] = {}
    for line in text.splitlines()[1:]:
        match = re.fullmatch(_LIMIT_LINE, line)
        if match:
            name, soft, hard, units = match.groups()
            limits[name] = Limit(soft, hard, units or "")
    return limits


def kernel_params(cmdline: str) -> list[str]:
    """The kernel's own parameters: everything after a lone `--` goes to init."""
    tokens = cmdline.split()
    return tokens[: tokens.index("--")] if "--" in tokens else tokens


def parse_cmdline(text: str) -> dict[str, str | bool]:
    """Kernel parameters by name: `iommu=pt` -> "pt", a bare `quiet` -> True."""
    params: dict[str, str | bool] = {}
    for token in text.split():
        name, sep, value = token.partition("=")
        params[name] = value if sep else True
    return params


def format_bytes(value: int | float) -> str:
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{int(value)} B"
