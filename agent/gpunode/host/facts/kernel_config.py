"""What the running kernel can do: its build config and its modules.

Sources, all read through the Host's SysRoot so a snapshot records and replays them:
- the build config: /boot/config-<release> (text), else /proc/config.gz (gzip; the one binary
  file, which `gpunode snapshot` copies as is: see BINARY_FILES);
- modules: /lib/modules/<release>/modules.builtin and modules.dep, loaded ones in /proc/modules
  and /sys/module/<name>.
A kernel can lack both /lib/modules and its config (the lent H200 VM has only /proc/config.gz):
then what is unknown stays unknown (None), never guessed.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass, field

PROC_CONFIG = "/proc/config.gz"
BINARY_FILES = (PROC_CONFIG,)
MAX_GZ = 4 << 20
MAX_CONFIG = 16 << 20
_CONFIG_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)")
_NOT_SET = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set")
_MODULE_FILE = re.compile(r"([^/]+?)\.ko(\.[a-z]+)?\Z")


def kernel_release(host) -> str | None:
    release = host.sys.read_value("/proc/sys/kernel/osrelease")
    return release if release and "/" not in release and release not in (".", "..") else None


def parse_config(text: str) -> dict[str, str]:
    """`CONFIG_X=y` -> {"CONFIG_X": "y"}; `# CONFIG_X is not set` -> "n"."""
    options: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        match = _CONFIG_LINE.fullmatch(line) or _NOT_SET.fullmatch(line)
        if match:
            options[match.group(1)] = match.group(2) if match.re is _CONFIG_LINE else "n"
    return options


def module_name(path_or_name: str) -> str:
    """kernel/net/sched/sch_fq.ko.zst -> sch_fq (dashes and underscores are one in module names)."""
    match = _MODULE_FILE.search(path_or_name.strip())
    name = match.group(1) if match else path_or_name.strip()
    return name.replace("-", "_")


@dataclass(frozen=True)
class KernelFacts:
    release: str | None
    config: dict[str, str] | None  # None: no config readable
    config_source: str | None
    builtin: frozenset[str] | None  # None: no modules.builtin
    loadable: frozenset[str] | None  # None: no modules.dep
    loaded: frozenset[str] = field(default_factory=frozenset)
    modules_dir: str | None = None


def _read_gz(host, path: str) -> str | None:
    """A gzip file's text through the SysRoot's root (bounded both ways); None if unreadable."""
    data = host.sys.read_bytes(path, MAX_GZ)  # a link in a snapshot stays inside it
    if data is None:
        return None
    try:
        inflater = zlib.decompressobj(zlib.MAX_WBITS | 16)
        text = inflater.decompress(data, MAX_CONFIG)
    except (zlib.error, ValueError):
        return None
    return text.decode("utf-8", errors="replace")


def _config(host, release: str | None) -> tuple[dict[str, str] | None, str | None]:
    if release:
        path = f"/boot/config-{release}"
        text = host.sys.read(path)
        if text:
            return parse_config(text), path
    text = _read_gz(host, PROC_CONFIG)
    if text:
        return parse_config(text), PROC_CONFIG
    return None, None


def _module_set(text: str | None) -> frozenset[str] | None:
    if text is None:
        return None
    return frozenset(module_name(line.partition(":")[0]) for line in text.splitlines() if line.strip())


def kernel_facts(host) -> KernelFacts:
    """Read once per Host (the plan and the audit ask for several modules)."""
    return host.cached("kernel_facts", lambda: _kernel_facts(host))


def _kernel_facts(host) -> KernelFacts:
    release = kernel_release(host)
    config, source = _config(host, release)
    builtin = loadable = None
    modules_dir = None
    if release and host.sys.exists(f"/lib/modules/{release}"):
        modules_dir = f"/lib/modules/{release}"
        builtin = _module_set(host.sys.read(f"{modules_dir}/modules.builtin"))
        loadable = _module_set(host.sys.read(f"{modules_dir}/modules.dep"))
    proc_modules = host.sys.read("/proc/modules") or ""
    loaded = {module_name(line.split()[0]) for line in proc_modules.splitlines() if line.split()}
    return KernelFacts(release, config, source, builtin, loadable, frozenset(loaded), modules_dir)


@dataclass(frozen=True)
class Availability:
    """Can the kernel use this module? available None = cannot tell from what the host shows."""

    available: bool | None
    how: str  # "built in", "loaded", "loadable (the kernel loads it on first use)", or why not


def module_availability(host, module: str, symbol: str) -> Availability:
    """Is `module` (e.g. sch_fq, config symbol CONFIG_NET_SCH_FQ) built in, loaded or loadable?"""
    facts = kernel_facts(host)
    module = module_name(module)
    state = (facts.config or {}).get(symbol)
    if module in facts.loaded or host.sys.exists(f"/sys/module/{module}"):
        return Availability(True, "loaded")
    if state == "y" or (facts.builtin is not None and module in facts.builtin):
        return Availability(True, "built in")
    if facts.loadable is not None and module in facts.loadable:
        return Availability(True, "loadable (the kernel loads it on first use)")
    kernel = f"kernel {facts.release}" if facts.release else "the running kernel"
    if state == "n" or (state is None and facts.config is not None):
        return Availability(False, f"{kernel} is built without {module} ({symbol} is not set in {facts.config_source})")
    if state == "m":
        return _module_not_installed(facts, module, kernel)
    if facts.loadable is not None:
        return Availability(False, f"{kernel} has no {module} (not built in, not in {facts.modules_dir}/modules.dep)")
    return Availability(None, f"cannot tell whether {kernel} has {module} (no kernel config, no /lib/modules)")


def _module_not_installed(facts: KernelFacts, module: str, kernel: str) -> Availability:
    """A module the kernel config builds as one (=m), neither loaded nor in modules.dep."""
    if facts.modules_dir is None:
        where = f"/lib/modules/{facts.release}" if facts.release else "/lib/modules/<release>"
        return Availability(False, f"{module} is built as a module but {kernel} has no {where}")
    if facts.loadable is not None:
        return Availability(False, f"{module} is built as a module but not installed "
                                   f"(not in {facts.modules_dir}/modules.dep)")
    return Availability(None, f"{module} is built as a module; cannot tell whether it is installed")


def copy_binary_files(root: str, files_dir: str) -> list[str]:
    """For `gpunode snapshot`: copy the binary files detection reads (bounded, regular files
    only) into the snapshot's files/ tree. -> the host paths copied."""
    from gpunode.inputs import InputError, read_bytes

    copied = []
    for path in BINARY_FILES:
        try:
            data = read_bytes(os.path.join(root, path.lstrip("/")), MAX_GZ)
        except InputError:
            continue
        target = os.path.join(files_dir, path.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(data)
        copied.append(path)
    return copied
