"""Slurm's gres.conf GPU lines as this node reads them, and Slurm's abstract core numbering.

    Name=gpu Type=h100 File=/dev/nvidia[0-3] Cores=0-55
    NodeName=gpu[01-16] Name=gpu File=/dev/nvidia[4-7] Cores=56-111
    AutoDetect=nvml

Cores= are Slurm's core indices, not Linux CPU ids: Slurm numbers physical cores by socket, then
core, so on a host with SMT core k is every hardware thread of the k-th (package, core) pair.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gpunode.host.facts.cpulist import read_cpulist
from gpunode.host.facts.slurm_conf import expand_names, line_fields

GRES_PATHS = ("/etc/slurm/gres.conf", "/etc/slurm-llnl/gres.conf")
_DEVICE = re.compile(r"/dev/nvidia(\d+)")
MAX_LINES = 10_000


@dataclass(frozen=True)
class GresGpu:
    """One GPU device file of a gres.conf line and the Slurm cores it is bound to (None: unbound)."""

    line: int
    device: str  # /dev/nvidia3
    minor: int
    cores: frozenset[int] | None


@dataclass
class GresConf:
    path: str
    autodetect: str | None  # nvml | nrt | off | None
    gpus: list[GresGpu]
    errors: list[str]


def read_gres(host, hostname: str) -> GresConf | None:
    """This node's GPU lines of gres.conf, or None when the file is absent."""
    for path in GRES_PATHS:
        text = host.sys.read(path)
        if text is not None:
            return parse_gres(text, path, hostname)
    return None


def parse_gres(text: str, path: str, hostname: str) -> GresConf:
    conf = GresConf(path=path, autodetect=None, gpus=[], errors=[])
    short = hostname.split(".", 1)[0]
    for number, raw in enumerate(text.splitlines()[:MAX_LINES], start=1):
        fields = line_fields(raw.split("#", 1)[0])
        if not fields:
            continue
        try:
            if "nodename" in fields and short not in expand_names(fields["nodename"]):
                continue
            if "autodetect" in fields:
                conf.autodetect = fields["autodetect"].lower()
            if fields.get("name") != "gpu" or "file" not in fields:
                continue
            cores = None
            if "cores" in fields:
                cores = read_cpulist(fields["cores"])
                if cores is None:
                    raise ValueError(f"Cores={fields['cores']!r} is not a core list")
            for device in expand_names(fields["file"]):
                match = _DEVICE.fullmatch(device)
                if match:
                    conf.gpus.append(GresGpu(number, device, int(match.group(1)),
                                             None if cores is None else frozenset(cores)))
        except ValueError as exc:
            conf.errors.append(f"{path} line {number}: {exc}")
    return conf


def slurm_cores(host) -> dict[int, set[int]]:
    """Slurm core index -> the Linux CPUs (hardware threads) of that core."""
    pairs: dict[tuple[int, int], set[int]] = {}
    for name in host.sys.listdir("/sys/devices/system/cpu") or []:
        if not (name.startswith("cpu") and name[3:].isdigit()):
            continue
        base = f"/sys/devices/system/cpu/{name}/topology"
        package, core = host.sys.read_int(f"{base}/physical_package_id"), host.sys.read_int(f"{base}/core_id")
        if package is None or core is None:
            continue
        pairs.setdefault((package, core), set()).add(int(name[3:]))
    return {index: pairs[key] for index, key in enumerate(sorted(pairs))}


def gpu_minors(host) -> dict[int, str]:
    """Device minor (the N of /dev/nvidiaN) -> the GPU's PCI address, from the driver's procfs."""
    out = {}
    for bdf in host.sys.listdir("/proc/driver/nvidia/gpus") or []:
        text = host.sys.read(f"/proc/driver/nvidia/gpus/{bdf}/information") or ""
        match = re.search(r"^Device Minor:\s*(\d+)\s*$", text, re.MULTILINE)
        if match:
            out[int(match.group(1))] = bdf.lower()
    return out
