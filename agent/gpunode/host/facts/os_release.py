"""os-release(5): which distribution this is (read by the host check, the boot-loader fact and
the golden file's header)."""

from __future__ import annotations

import shlex

OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")  # os-release(5): /etc first, then /usr/lib


def parse_os_release(text: str) -> dict[str, str]:
    """KEY="value" lines with shell quoting, as os-release(5) defines them."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, raw = line.strip().partition("=")
        if not sep or key.startswith("#"):
            continue
        try:
            parts = shlex.split(raw)
        except ValueError:
            continue  # an unbalanced quote: skip the line, not the file
        values[key] = parts[0] if parts else ""
    return values
