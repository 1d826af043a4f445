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


SYSTEMD_CONF = "/etc/systemd/system.conf"
# systemd.conf(5): drop-ins from these directories, sorted by file name across all of them,
# a file in an earlier directory hiding one of the same name in a later one.
SYSTEMD_DROPIN_DIRS = (
    "/etc/systemd/system.conf.d",
    "/run/systemd/system.conf.d",
    "/usr/local/lib/systemd/system.conf.d",
    "/usr/lib/systemd/system.conf.d",
)


def systemd_manager_setting(host, key: str) -> tuple[str | None, str | None, bool]:
    """-> (value, file it came from, any systemd manager config present)."""
    chosen: dict[str, str] = {}
    for directory in SYSTEMD_DROPIN_DIRS:
        for name in host.sys.listdir(directory) or []:
            if name.endswith(".conf"):
                chosen.setdefault(name, f"{directory}/{name}")
    files = [SYSTEMD_CONF] + [chosen[n] for n in sorted(chosen)]
    value = source = None
    present = False
    for path in files:
        text = host.sys.read(path)
        if text is None:
            continue
        present = True
        found = section_values(text, "Manager", key)
        if found:
            value, source = found[-1], path
    return value, source, present
