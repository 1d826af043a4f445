"""Kernel modules: which are loaded (/proc/modules), which the running kernel has
(/lib/modules/<release>/modules.dep), which load at boot (modules-load.d), and whether GPU memory
can be registered with an RDMA NIC through DMA-BUF instead of nvidia_peermem."""

from __future__ import annotations

import re

PEERMEM_MODULES = ("nvidia_peermem", "nv_peer_mem")  # the driver's module; the older Mellanox one
# systemd-modules-load reads these, a name in /etc hiding the same name in the others (modules-load.d(5)).
MODULES_LOAD_DIRS = ("/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d",
                     "/usr/lib/modules-load.d", "/lib/modules-load.d")
MODULE_NAME = re.compile(r"^[A-Za-z0-9_-]{1,56}$")


def canonical(name: str) -> str:
    """The kernel treats '-' and '_' in module names alike (nvidia-peermem is nvidia_peermem)."""
    return name.replace("-", "_")


def loaded_modules(host) -> set[str]:
    text = host.sys.read("/proc/modules")
    if text is not None:
        return {line.split()[0] for line in text.splitlines() if line.strip()}
    return set(host.sys.listdir("/sys/module") or [])


def kernel_release(host) -> str | None:
    return host.sys.read_value("/proc/sys/kernel/osrelease")


def kernel_at_least(release: str | None, major: int, minor: int) -> bool:
    parts = (release or "").split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def installed(host, name: str) -> bool | None:
    """Whether the running kernel has the module (modules.dep or modules.builtin); None when
    neither can be read."""
    release = kernel_release(host)
    if not release:
        return None
    found = None
    for listing in ("modules.dep", "modules.builtin"):
        text = host.sys.read(f"/lib/modules/{release}/{listing}")
        if text is None:
            continue
        found = False
        for line in text.splitlines():
            path = line.split(":", 1)[0].strip()
            base = path.rsplit("/", 1)[-1].split(".ko", 1)[0]
            if path and canonical(base) == canonical(name):
                return True
    return found


def boot_listing(host, name: str) -> str | None:
    """The modules-load.d file that loads `name` at boot, or None."""
    by_name: dict[str, str] = {}
    for directory in reversed(MODULES_LOAD_DIRS):  # lowest priority first: /etc wins a name
        for entry in host.sys.listdir(directory) or []:
            if entry.endswith(".conf"):
                by_name[entry] = f"{directory}/{entry}"
    for entry in sorted(by_name):
        text = host.sys.read(by_name[entry]) or ""
        for line in text.splitlines():
            word = line.split("#", 1)[0].split(";", 1)[0].strip()
            if word and canonical(word) == canonical(name):
                return by_name[entry]
    return None


def dmabuf_reason(host) -> str | None:
    """Why NCCL can register GPU memory through DMA-BUF (no nvidia_peermem needed), or None:
    NCCL >= 2.19 does with the open kernel modules on kernel 5.12 and later."""
    version = host.sys.read("/proc/driver/nvidia/version") or ""
    kernel = kernel_release(host)
    if "Open Kernel Module" in version and kernel_at_least(kernel, 5, 12):
        return f"DMA-BUF is available (open kernel module, kernel {kernel})"
    return None
