"""Resource limits for login sessions and jobs: pam_limits files (limits.conf, limits.d/*.conf).

The wildcard domain `*` is what ordinary users and their jobs get; later files override
earlier ones for the same type and item, as pam_limits reads limits.d after limits.conf.
"""

from __future__ import annotations

import re

from gpunode.tune.kinds.base import UNLIMITED, VERIFY_ALL, Observed, SettingKind, normalize, value_to_write
from gpunode.tune.kinds.values import MAX_INT64, SettingInvalid, whole_number

LIMITS_CONF = "/etc/security/limits.conf"
LIMITS_DIR = "/etc/security/limits.d"
ITEMS = ("memlock", "nofile", "nproc", "stack", "core")
NOT_SET = "(not set)"
# Patterns compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs them (issue 21).
_VALUE = r"^(unlimited|\d{1,19})"
_DOMAIN = r"^[*@%:A-Za-z0-9_.-]+"


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


# --- write side: one managed file that pam_limits reads after limits.conf ---------------------
MANAGED_FILE = f"{LIMITS_DIR}/90-gpunode.conf"
MANAGED_HEADER = (
    "# Written by `gpunode apply`; `gpunode rollback` restores the previous state.\n"
    "# <domain> <type> <item> <value>\n"
)


def _bigger(a: str, b: str) -> bool:
    """Is limit a above limit b? (unlimited is above every number)."""
    if a == b or b == "unlimited":
        return False
    if a == "unlimited":
        return True
    try:
        return int(a) > int(b)
    except ValueError:
        return False


def render_managed(entries: dict[tuple[str, str, str], str]) -> str:
    lines = [f"{d:<8} {t:<5} {i:<8} {v}" for (d, t, i), v in entries.items()]
    return MANAGED_HEADER + "\n".join(lines) + "\n"


class Limits(SettingKind):
    name = "limits"
    area = "memory"
    verify = VERIFY_ALL  # one file sets soft and hard

    def validate_key(self, key: str) -> None:
        if key not in ITEMS:
            raise SettingInvalid(f"limits key must be one of {', '.join(ITEMS)}")

    def validate_target(self, key, target):
        # pam_limits ignores a line whose value is not a number or unlimited/infinity/-1, so a
        # typo would be written, verified as "set" by nothing, and silently not take effect.
        if isinstance(target, str) and normalize(target) == UNLIMITED:
            return UNLIMITED
        if target == -1 and not isinstance(target, bool):
            return UNLIMITED
        try:
            return whole_number(target, "target", 0, MAX_INT64)
        except SettingInvalid as exc:
            raise SettingInvalid(f"{exc} (a whole number or unlimited)") from None

    def where(self, setting) -> str:
        return f"{LIMITS_CONF}, {LIMITS_DIR}/*.conf"

    def observe(self, ctx, setting) -> list[Observed]:
        found = wildcard_limit(ctx.host, setting.key)
        return [
            Observed(f"* {t} {setting.key}", found.get(t, NOT_SET), note=found.get(f"{t}_file", ""))
            for t in ("soft", "hard")
        ]

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        """Put `* soft/hard ITEM VALUE` lines into 90-gpunode.conf (merged with what is there)."""
        if not wrong:
            return []
        current = {t: wildcard_limit(ctx.host, setting.key).get(t, NOT_SET) for t in ("soft", "hard")}
        new = _new_limits(setting, wrong, current)
        later = [o.note for o in wrong if o.note.startswith(LIMITS_DIR + "/") and o.note > MANAGED_FILE]
        entries = _kept_entries(files.text(MANAGED_FILE) or "")
        for kind, value in new.items():
            entries[("*", kind, setting.key)] = value
        change = files.write_text(
            setting.id,
            MANAGED_FILE,
            render_managed(entries),
            current_text=", ".join(f"{t} {current[t]}" for t in new),
            after_text=", ".join(f"{t} {v}" for t, v in new.items()),
            note="applies to new login sessions and jobs",
            blocked=(f"{later[0]} sorts after {MANAGED_FILE} and overrides it; change that file" if later else ""),
        )
        return [change] if change else []


def _new_limits(setting, wrong, current: dict) -> dict[str, str]:
    """soft/hard -> the value to write for each wrong one; hard raised along with soft, as
    pam_limits cannot set a soft limit above the hard one."""
    new: dict[str, str] = {}
    for obs in wrong:
        kind = obs.subject.split()[1]
        new[kind] = normalize(value_to_write(setting.op, obs.value, setting.target))
    if ("soft" in new and "hard" not in new and current["hard"] != NOT_SET
            and _bigger(new["soft"], str(current["hard"]))):
        new["hard"] = new["soft"]
    return new


def _kept_entries(text: str) -> dict[tuple[str, str, str], str]:
    """The entries of gpunode's limits file that it keeps: only what renders safely."""
    entries: dict[tuple[str, str, str], str] = {}
    for domain, kind, item, value in parse_limits(text):
        if re.fullmatch(_VALUE, value) and re.fullmatch(_DOMAIN, domain) and item in ITEMS:
            entries[(domain, kind, item)] = value
    return entries
