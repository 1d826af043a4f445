"""Resource limits for login sessions and jobs: pam_limits files (limits.conf, limits.d/*.conf).

The wildcard domain `*` is what ordinary users and their jobs get; later files override
earlier ones for the same type and item, as pam_limits reads limits.d after limits.conf.
"""

from __future__ import annotations

from gpunode.settings.base import Observed, normalize

LIMITS_CONF = "/etc/security/limits.conf"
LIMITS_DIR = "/etc/security/limits.d"
ITEMS = ("memlock", "nofile", "nproc", "stack", "core")
NOT_SET = "(not set)"


def validate(key: str, target) -> str | None:
    if key not in ITEMS:
        return f"limits key must be one of {', '.join(ITEMS)}"
    return None


def limits_files(host) -> list[str]:
    files = [LIMITS_CONF]
    files += [f"{LIMITS_DIR}/{n}" for n in host.sys.listdir(LIMITS_DIR) or [] if n.endswith(".conf")]
    return files


def parse_limits(text: str) -> list[tuple[str, str, str, str]]:
    """-> [(domain, type, item, value)] for each well-formed line."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        parts = line.split()
        if len(parts) == 4 and parts[1] in ("soft", "hard", "-"):
            entries.append((parts[0], parts[1], parts[2], parts[3]))
    return entries


def wildcard_limit(host, item: str) -> dict[str, str]:
    """{'soft': value, 'hard': value, 'soft_file': path, 'hard_file': path} for domain `*`."""
    found: dict[str, str] = {}
    for path in limits_files(host):
        text = host.sys.read(path)
        if text is None:
            continue
        for domain, kind, name, value in parse_limits(text):
            if domain != "*" or name != item:
                continue
            for t in ("soft", "hard") if kind == "-" else (kind,):
                found[t] = normalize(value)
                found[f"{t}_file"] = path
    return found


def observe(host, setting) -> list[Observed]:
    found = wildcard_limit(host, setting.key)
    return [
        Observed(f"* {t} {setting.key}", found.get(t, NOT_SET), note=found.get(f"{t}_file", ""))
        for t in ("soft", "hard")
    ]
