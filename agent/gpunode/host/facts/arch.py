"""The machine architecture of the running kernel, read through the SysRoot so snapshots replay it."""

from __future__ import annotations

X86 = ("x86_64", "i386", "i486", "i586", "i686")


def machine(host) -> str | None:
    """`uname -m` of the running kernel: /proc/sys/kernel/arch (Linux 6.1+), else told apart by
    what /proc/cpuinfo lists (arm64 names a 'CPU implementer', x86 a 'vendor_id'); None if unknown."""
    arch = host.sys.read_value("/proc/sys/kernel/arch")
    if arch:
        return arch
    return arch_from_cpuinfo(host.sys.read("/proc/cpuinfo") or "")


def arch_from_cpuinfo(text: str) -> str | None:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    keys = set(fields)
    if "CPU architecture" in keys:  # arm: 8 is AArch64 (arm64 kernels print 8 for every CPU)
        return "aarch64" if fields["CPU architecture"] == "8" else "armv7l"
    if "vendor_id" in keys:
        return "x86_64"
    return None  # another architecture, or a file cut short: unknown


def is_x86(arch: str | None) -> bool:
    return arch in X86
