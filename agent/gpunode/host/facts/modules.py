"""Kernel modules: which are loaded (/proc/modules), which the running kernel has
(host.facts.kernel_config), which load at boot (modules-load.d), and whether GPU memory
can be registered with an RDMA NIC through DMA-BUF instead of nvidia_peermem."""

from __future__ import annotations

import re

PEERMEM_MODULES = ("nvidia_peermem", "nv_peer_mem")  # the driver's module; the older Mellanox one
# systemd-modules-load reads these, a name in /etc hiding the same name in the others (modules-load.d(5)).
MODULES_LOAD_DIRS = ("/etc/modules-load.d", "/run/modules-load.d", "/usr/local/lib/modules-load.d",
                     "/usr/lib/modules-load.d", "/lib/modules-load.d")
MODULE_NAME = re.compile(r"[A-Za-z0-9_-]{1,56}")  # used with fullmatch


# kernel_config is imported where it is used: checks/net.py imports this module on the gate's path.


def canonical(name: str) -> str:
    """nvidia-peermem -> nvidia_peermem: the kernel treats '-' and '_' in module names alike."""
    from gpunode.host.facts.kernel_config import module_name

    return module_name(name)


def kernel_release(host) -> str | None:
    from gpunode.host.facts.kernel_config import kernel_release as release

    return release(host)


def loaded_modules(host) -> set[str]:
    text = host.sys.read("/proc/modules")
    if text is not None:
        return {line.split()[0] for line in text.splitlines() if line.strip()}
    return set(host.sys.listdir("/sys/module") or [])


def kernel_at_least(release: str | None, major: int, minor: int) -> bool:
    parts = (release or "").split(".")
    try:
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (IndexError, ValueError):
        return False


def installed(host, name: str) -> bool | None:
    """Whether the running kernel has an (out-of-tree) module: loaded, built in or in modules.dep
    (host.facts.kernel_config's reading); None when /lib/modules/<release> cannot be read."""
    from gpunode.host.facts.kernel_config import kernel_facts

    facts = kernel_facts(host)
    name = canonical(name)
    if name in facts.loaded:
        return True
    if facts.builtin is None and facts.loadable is None:
        return None
    return name in (facts.builtin or frozenset()) | (facts.loadable or frozenset())


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
