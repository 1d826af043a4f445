"""slurm.conf's top-level `Key=Value` lines (one parser for `slurm install` and the checks), and
this node's `NodeName=` line."""

from __future__ import annotations

import re

SLURM_CONF = "/etc/slurm/slurm.conf"
MAX_LINES = 100_000  # bound what a damaged file makes us walk
_LINE = re.compile(r"^\s*(?P<key>[A-Za-z]+)\s*=\s*(?P<value>\S.*?)\s*")


def parse_values(text: str) -> dict[str, str]:
    """Keys in lower case (Slurm's keys are case insensitive), the last one winning as in
    Slurm; `#` starts a comment, so a trailing `# note` is never part of a value. Include files
    are not followed."""
    found = {}
    for line in text.splitlines():
        match = _LINE.fullmatch(line.split("#", 1)[0])
        if match:
            found[match.group("key").lower()] = match.group("value").strip('"')
    return found


def read_values(host, path: str = SLURM_CONF) -> dict[str, str]:
    """{} when the file cannot be read."""
    text = host.sys.read(path)
    return parse_values(text) if text is not None else {}


def line_fields(line: str) -> dict[str, str]:
    """The `Key=Value` words of one slurm.conf or gres.conf line, keys in lower case."""
    out = {}
    for token in line.split():
        key, eq, value = token.partition("=")
        if eq:
            out[key.lower()] = value
    return out


def expand_names(pattern: str) -> list[str]:
    """A Slurm host or file list with brackets (/dev/nvidia[0-3], gpu[01-16]) expanded."""
    import hostlist  # python-hostlist: Slurm's own bracket syntax

    try:
        return hostlist.expand_hostlist(pattern)
    except hostlist.BadHostlist as exc:
        raise ValueError(f"{pattern!r}: {exc}") from None


def node_values(text: str, hostname: str) -> dict[str, str] | None:
    """This node's `NodeName=` line as {key in lower case: value}, over the `NodeName=DEFAULT`
    values before it; None when no line names the host (short name, brackets expanded)."""
    short = hostname.split(".", 1)[0]
    defaults: dict[str, str] = {}
    for line in text.splitlines()[:MAX_LINES]:
        fields = line_fields(line.split("#", 1)[0])
        name = fields.get("nodename")
        if name is None:
            continue
        if name.upper() == "DEFAULT":
            defaults.update(fields)
            continue
        try:
            if short in expand_names(name):
                return {**defaults, **fields}
        except ValueError:
            continue  # a host list Slurm would refuse too
    return None
