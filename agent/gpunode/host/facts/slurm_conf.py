"""slurm.conf's top-level `Key=Value` lines (one parser for `slurm install` and the checks)."""

from __future__ import annotations

import re

SLURM_CONF = "/etc/slurm/slurm.conf"
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
