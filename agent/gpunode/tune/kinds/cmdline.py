"""Kernel command line parameters (/proc/cmdline). Changing one needs a reboot."""

from __future__ import annotations

import re

from gpunode.tune.kinds.base import Observed

NOT_SET = "(not set)"


def validate(key: str, target) -> str | None:
    if " " in key or "=" in key:
        return f"cmdline key {key!r} must be a parameter name such as iommu"
    return None


def parse_cmdline(text: str) -> dict[str, str | bool]:
    params: dict[str, str | bool] = {}
    for token in text.split():
        name, sep, value = token.partition("=")
        params[name] = value if sep else True
    return params


def observe(host, setting) -> list[Observed]:
    text = host.sys.read("/proc/cmdline")
    if text is None:
        return [Observed("/proc/cmdline", None)]
    return [Observed("/proc/cmdline", parse_cmdline(text).get(setting.key, NOT_SET), extra={"reboot": True})]


# --- write side: GRUB_CMDLINE_LINUX in /etc/default/grub (takes effect after update-grub + reboot)
GRUB_DEFAULT = "/etc/default/grub"
_GRUB_LINE = re.compile(r"""^(\s*GRUB_CMDLINE_LINUX=)(["']?)(.*?)\2\s*$""")
_GRUB_DEFAULT_LINE = re.compile(r"""^(\s*GRUB_CMDLINE_LINUX_DEFAULT=)(["']?)(.*?)\2\s*$""")


def param_token(key: str, target) -> str | None:
    """iommu + pt -> 'iommu=pt'; a boolean parameter is present (True) or absent (False)."""
    if target is True:
        return key
    if target is False:
        return None
    return f"{key}={target}"


def _edit_line(lines: list[str], pattern, key: str, token: str | None) -> tuple[str, str] | None:
    """Drop `key` from the last line the pattern matches (and append `token`): -> (old, new value)."""
    for i in range(len(lines) - 1, -1, -1):
        match = pattern.match(lines[i].rstrip("\n"))
        if not match:
            continue
        prefix, quote, value = match.groups()
        tokens = [t for t in value.split() if t.partition("=")[0] != key] + ([token] if token else [])
        new_value = " ".join(tokens)
        newline = "\n" if lines[i].endswith("\n") else ""
        lines[i] = f'{prefix}{quote or chr(34)}{new_value}{quote or chr(34)}{newline}'
        return value, new_value
    return None


def edit_grub(text: str, key: str, target) -> tuple[str, str, str] | None:
    """-> (new text, old value, new value) of the last GRUB_CMDLINE_LINUX line, or None if absent.
    The key is also dropped from GRUB_CMDLINE_LINUX_DEFAULT: GRUB puts that after
    GRUB_CMDLINE_LINUX on the kernel line, and for a repeated parameter the last one wins."""
    lines = text.splitlines(keepends=True)
    edited = _edit_line(lines, _GRUB_LINE, key, param_token(key, target))
    if edited is None:
        return None
    _edit_line(lines, _GRUB_DEFAULT_LINE, key, None)
    return "".join(lines), *edited


def plan(host, setting, wrong: list[Observed], files, allow_reboot: bool = False, **_) -> list:
    from gpunode.tune.kinds.change import Change

    if not wrong:
        return []
    current = format_param(setting.key, wrong[0].value)
    wanted = param_token(setting.key, setting.target) or f"(no {setting.key})"
    text = files.text(GRUB_DEFAULT)
    edited = edit_grub(text, setting.key, setting.target) if text is not None else None
    if edited is None:
        return [Change(setting.id, "/proc/cmdline", "file", GRUB_DEFAULT, None, None, current_text=current,
                       after_text=wanted, reboot_required=True,
                       blocked=f"no GRUB_CMDLINE_LINUX in {GRUB_DEFAULT}: add {wanted} to the boot loader by hand")]
    new_text, old_value, new_value = edited
    if old_value.split() == new_value.split() and new_text.split() == text.split():
        return [Change(setting.id, "/proc/cmdline", "file", GRUB_DEFAULT, None, None, current_text=current,
                       after_text=wanted, reboot_required=True,
                       blocked=f"already in {GRUB_DEFAULT}; reboot to take effect")]
    blocked = "" if allow_reboot else "needs a reboot: rerun with --allow-reboot-settings to edit GRUB"
    change = files.write_text(
        setting.id, GRUB_DEFAULT, new_text, current_text=current, after_text=wanted, reboot_required=True,
        blocked=blocked, note=f'GRUB_CMDLINE_LINUX="{old_value}" -> "{new_value}"' + _default_note(text, setting.key),
        post=[["update-grub"]],
    )
    return [change] if change else []


def _default_note(text: str, key: str) -> str:
    default = _edit_line(text.splitlines(keepends=True), _GRUB_DEFAULT_LINE, key, None)
    if default is None or default[0].split() == default[1].split():
        return ""
    return f'; GRUB_CMDLINE_LINUX_DEFAULT="{default[0]}" -> "{default[1]}" (it would override {key})'


def format_param(key: str, value) -> str:
    if value is True:
        return key
    if value == NOT_SET or value is None:
        return f"(no {key})"
    return f"{key}={value}"
