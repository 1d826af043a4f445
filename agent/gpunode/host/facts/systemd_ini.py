"""systemd's ini files (units, drop-ins, system.conf): the values of one key in one section."""

from __future__ import annotations


def section_values(text: str, section: str, key: str) -> list[str]:
    """Every `key=value` of `[section]`, in file order (the last one is what systemd uses)."""
    values, current = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section:
            name, sep, value = line.partition("=")
            if sep and name.strip() == key:
                values.append(value.strip())
    return values
