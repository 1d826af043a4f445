"""The NCCL settings a job on this node gets from the node: /etc/nccl.conf (NCCL reads it at
init, below the environment) and the `export NCCL_...` lines Slurm's TaskProlog prints into
every task's environment (slurm.conf TaskProlog=, slurm.conf(5): "export NAME=value").
A user's ~/.nccl.conf and the job's own environment are the user's, not the node's.

Pure parsers plus `node_settings(host)`; the judgement is checks/nccl.py.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from gpunode.host.facts.slurm_conf import read_values

NCCL_CONF = "/etc/nccl.conf"
_CONF_LINE = re.compile(r"^\s*(?P<key>NCCL_[A-Z0-9_]+)\s*=(?P<value>.*)\Z")
_EXPORT = re.compile(r"\bexport\s+(?P<key>NCCL_[A-Z0-9_]+)=(?P<value>\"[^\"]*\"|'[^']*'|[^\s;\"']*)")


@dataclass(frozen=True)
class NcclSetting:
    """One NCCL_* value and the file that sets it."""

    key: str
    value: str
    source: str  # "/etc/nccl.conf" or "TaskProlog /etc/slurm/task_prolog.sh"


def parse_nccl_conf(text: str) -> dict[str, str]:
    """NAME=VALUE lines (NCCL's own format: `#` starts a comment line); the last one wins."""
    found = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        match = _CONF_LINE.match(line)
        if match:
            found[match.group("key")] = match.group("value").strip()
    return found


def parse_task_prolog(text: str) -> dict[str, str]:
    """`export NCCL_X=value` as a TaskProlog prints it (echo "export ..."), quotes removed."""
    found = {}
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            continue
        for match in _EXPORT.finditer(line):
            value = match.group("value")
            try:
                value = " ".join(shlex.split(value)) if value else ""
            except ValueError:
                pass
            found[match.group("key")] = value
    return found


def node_settings(host) -> tuple[list[NcclSetting], list[str]]:
    """-> (settings, the sources read). TaskProlog is read only where slurm.conf names one."""
    settings: list[NcclSetting] = []
    sources: list[str] = []
    text = host.sys.read(NCCL_CONF)
    if text is not None:
        sources.append(NCCL_CONF)
        settings += [NcclSetting(k, v, NCCL_CONF) for k, v in parse_nccl_conf(text).items()]
    prolog = read_values(host).get("taskprolog")
    if prolog and prolog.startswith("/"):
        text = host.sys.read(prolog)
        if text is not None:
            where = f"TaskProlog {prolog}"
            sources.append(where)
            settings += [NcclSetting(k, v, where) for k, v in parse_task_prolog(text).items()]
    return settings, sources


@dataclass(frozen=True)
class NameFilter:
    """NCCL_IB_HCA / NCCL_SOCKET_IFNAME grammar (NCCL env docs): `^` excludes, `=` matches whole
    names (else each token is a prefix), tokens separated by `,`, an HCA token may end in `:port`."""

    exclude: bool
    exact: bool
    tokens: tuple[tuple[str, int | None], ...]  # (name, port)


def parse_filter(value: str, ports: bool) -> NameFilter:
    text = value.strip()
    exclude = text.startswith("^")
    text = text[1:] if exclude else text
    exact = text.startswith("=")
    text = text[1:] if exact else text
    tokens = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        name, port = raw, None
        if ports and ":" in raw:
            name, _, p = raw.rpartition(":")
            port = int(p) if p.isdigit() else None
        tokens.append((name, port))
    return NameFilter(exclude, exact, tuple(tokens))


def unmatched(flt: NameFilter, devices: dict[str, set[int]]) -> list[str]:
    """Tokens that match no device (or no port of it). `devices`: name -> port numbers ({} for
    network interfaces, which have none)."""
    missing = []
    for name, port in flt.tokens:
        hits = [d for d in devices if (d == name if flt.exact else d.startswith(name))]
        if port is not None:
            hits = [d for d in hits if port in devices[d]]
        if not hits:
            missing.append(f"{name}:{port}" if port is not None else name)
    return missing
