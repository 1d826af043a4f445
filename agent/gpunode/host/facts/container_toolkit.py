"""The NVIDIA Container Toolkit as a host shows it: `nvidia-ctk --version` and the CDI specs it
generates (`nvidia-ctk cdi generate`: /etc/cdi/nvidia.yaml, /var/run/cdi/*.yaml), whose mounts
name the driver libraries of the driver they were generated for."""

from __future__ import annotations

import re

from gpunode.inputs import InputError, parse_yaml

CTK_ARGV = ("nvidia-ctk", "--version")
CDI_DIRS = ("/etc/cdi", "/var/run/cdi")
NVIDIA_KIND = "nvidia.com/gpu"
_CTK_VERSION = re.compile(r"NVIDIA Container Toolkit CLI version\s+v?(\d+\.\d+\.\d+)")
_DRIVER_LIB = re.compile(r"/lib(?:cuda|nvidia-ml)\.so\.(\d{3}\.\d{1,3}(?:\.\d{1,3})?)")


def parse_ctk_version(text: str) -> str | None:
    """"NVIDIA Container Toolkit CLI version 1.17.8" -> "1.17.8"."""
    m = _CTK_VERSION.search(text)
    return m.group(1) if m else None


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def cdi_spec_files(sys) -> list[str]:
    return [f"{d}/{n}" for d in CDI_DIRS for n in sorted(sys.listdir(d) or [])
            if n.endswith((".yaml", ".yml", ".json"))]


def parse_cdi_spec(text: str, source: str) -> tuple[str | None, set[str]]:
    """-> (the spec's kind, the driver versions its library mounts name); InputError when the
    file is not a CDI spec (YAML or JSON mapping)."""
    data = parse_yaml(text, source)
    if not isinstance(data, dict):
        raise InputError(f"{source}: not a CDI spec (no mapping at the top level)")
    kind = data.get("kind") if isinstance(data.get("kind"), str) else None
    versions: set[str] = set()
    edits = [data.get("containerEdits")] + [d.get("containerEdits") for d in data.get("devices") or []
                                            if isinstance(d, dict)]
    for edit in edits:
        for mount in (edit or {}).get("mounts") or [] if isinstance(edit, dict) else []:
            host_path = mount.get("hostPath") if isinstance(mount, dict) else None
            m = _DRIVER_LIB.search(host_path or "") if isinstance(host_path, str) else None
            if m:
                versions.add(m.group(1))
    return kind, versions
