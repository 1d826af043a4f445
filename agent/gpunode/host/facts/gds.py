"""GPUDirect Storage: the nvidia-fs module (/proc/driver/nvidia-fs/), cuFile's configuration
(/etc/cufile.json: JSON with // comments, as NVIDIA ships it) and `gdscheck -p`'s report."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from gpunode.inputs import InputError, expect_mapping, parse_json

NVIDIA_FS = "/proc/driver/nvidia-fs"
CUFILE_JSON = "/etc/cufile.json"
GDSCHECK = ("/usr/local/cuda/gds/tools/gdscheck", "/usr/local/gds/tools/gdscheck")
_KV = re.compile(r"\s*(?:--)?([A-Za-z][\w .]*?)\s*:\s*(.*?)\s*")
_GPU = re.compile(r"^\s*GPU index (\d+) (.+?) bar:.*?(supports GDS|does not support GDS)", re.I)


def strip_comments(text: str) -> str:
    """cufile.json as shipped has `//` comments; drop them outside strings (a path or a URL in a
    string keeps its slashes)."""
    out, i, in_str = [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith("//", i):
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


def parse_cufile(text: str, source: str = CUFILE_JSON) -> tuple[dict, list[str]]:
    """-> (the document, problems with the documented keys); InputError when not one JSON object."""
    data = expect_mapping(parse_json(strip_comments(text), source), source)
    problems: list[str] = []
    props = data.get("properties", {})
    if not isinstance(props, dict):
        return data, ["properties is not an object"]
    size = props.get("max_direct_io_size_kb")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0 or size % 64):
        problems.append(f"properties.max_direct_io_size_kb {size!r}: a positive multiple of 64 (KiB)")
    for key in ("allow_compat_mode", "use_poll_mode"):
        if key in props and not isinstance(props[key], bool):
            problems.append(f"properties.{key} {props[key]!r}: true or false")
    addrs = props.get("rdma_dev_addr_list", [])
    if not isinstance(addrs, list):
        problems.append("properties.rdma_dev_addr_list: a list of IP addresses")
    else:
        for addr in addrs:
            try:
                ipaddress.ip_address(addr if isinstance(addr, str) else "")
            except ValueError:
                problems.append(f"properties.rdma_dev_addr_list: {addr!r} is not an IP address")
    return data, problems


@dataclass
class GdsCheck:
    """What `gdscheck -p` reports: versions, per-filesystem support, GPUs, platform verdict."""

    fields: dict[str, str] = field(default_factory=dict)
    gpus: dict[int, bool] = field(default_factory=dict)  # GPU index -> supports GDS
    verified: bool | None = None  # "Platform verification succeeded" / "... error"


def parse_gdscheck(text: str) -> GdsCheck:
    """`gdscheck -p` text (GDS docs, "gdscheck"); ValueError when it names no GPU and gives no
    platform verdict (not gdscheck output, or cut off)."""
    out = GdsCheck()
    for line in text.splitlines():
        m = _GPU.match(line)
        if m:
            out.gpus[int(m.group(1))] = m.group(3).lower() == "supports gds"
            continue
        low = line.strip().lower()
        if low.startswith("platform verification"):
            out.verified = "succeeded" in low
            continue
        kv = _KV.fullmatch(line)
        if kv and kv.group(1).strip() not in out.fields:
            out.fields[kv.group(1).strip()] = kv.group(2)
    if out.verified is None and not out.gpus:
        raise ValueError("no GPU line and no platform verdict: not gdscheck -p output, or cut off")
    return out


def supported_filesystems(report: GdsCheck) -> list[str]:
    names = ("NVMe", "NVMeOF", "SCSI", "NFS", "WekaFS", "DDN EXAScaler", "IBM Spectrum Scale", "BeeGFS",
             "ScaleFlux CSD", "NVMesh", "Userspace RDMA")
    return [n for n in names if report.fields.get(n, "").lower() == "supported"]


__all__ = ["CUFILE_JSON", "GDSCHECK", "NVIDIA_FS", "GdsCheck", "InputError", "parse_cufile", "parse_gdscheck",
           "strip_comments", "supported_filesystems"]
