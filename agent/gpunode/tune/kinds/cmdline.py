"""Kernel command line parameters (/proc/cmdline). A change takes effect at the next boot.

Written the way the distribution expects (gpunode.host.facts.boot_loader):
- Debian/Ubuntu: a drop-in /etc/default/grub.d/90-gpunode.cfg that update-grub sources after
  /etc/default/grub; gpunode's parameters are appended to GRUB_CMDLINE_LINUX_DEFAULT, the end
  of the kernel line, so they win over an earlier value of the same parameter;
- RHEL/Rocky BLS: `grubby --update-kernel=ALL --args=...` (action "grubby").
update-grub sources these files as shell: every token is checked against a kernel-parameter
grammar when the profile is loaded, and the file is rendered from those tokens only.
"""

from __future__ import annotations

import re
from typing import Any

from gpunode.host.facts.boot_loader import BLS_ENTRIES, BLS_GRUBBY, GRUB_DROPIN_DIR, boot_loader
from gpunode.host.facts.iommu import param_not_applicable
from gpunode.host.facts.procfs import parse_cmdline
from gpunode.tune.kinds.base import VERIFY_NONE, Observed, SettingKind
from gpunode.tune.kinds.values import MAX_INT64, SettingInvalid, whole_number

NOT_SET = "(not set)"
DROPIN = f"{GRUB_DROPIN_DIR}/90-gpunode.cfg"
# Parameter names: letters, digits, _ - and . (module.param); values add , : + / @ % =.
# No quotes, $, backticks, ;, spaces, backslashes, |, &, <, >, (, ), {, }, *, ?, !, #, ~.
PARAM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}")
PARAM_VALUE = re.compile(r"^[A-Za-z0-9_.,:+/@%=-]{1,256}")
# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_DROPIN_LINE = r'^GRUB_CMDLINE_LINUX_DEFAULT="\$\{GRUB_CMDLINE_LINUX_DEFAULT\}((?: [^ "$`\\]+)*)"'
DROPIN_HEADER = (
    "# Written by `gpunode apply`; `gpunode rollback` restores the previous state.\n"
    "# update-grub sources this after /etc/default/grub: gpunode's kernel parameters go last.\n"
)


def param_token(key: str, target) -> str | None:
    """iommu + pt -> 'iommu=pt'; a boolean parameter is present (True) or absent (False)."""
    if target is True:
        return key
    if target is False:
        return None
    return f"{key}={target}"


def valid_token(token: str) -> bool:
    name, sep, value = token.partition("=")
    return bool(PARAM_NAME.fullmatch(name)) and (not sep or bool(PARAM_VALUE.fullmatch(value)))


def format_param(key: str, value) -> str:
    if value is True:
        return key
    if value == NOT_SET or value is None:
        return f"(no {key})"
    return f"{key}={value}"


# --- the Debian drop-in: one line gpunode writes and reads back ---------------------------------
def dropin_tokens(text: str | None) -> list[str] | None:
    """The parameters in gpunode's drop-in ([] when absent), None when it is not gpunode's format."""
    if text is None:
        return []
    tokens: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(_DROPIN_LINE, line)
        if not match:
            return None
        tokens += match.group(1).split()
    return tokens if all(valid_token(t) for t in tokens) else None


def render_dropin(tokens: list[str]) -> str:
    for token in tokens:  # the last guard before a shell-sourced file
        if not valid_token(token):
            raise ValueError(f"refusing to write kernel parameter {token!r} into {DROPIN}")
    return DROPIN_HEADER + 'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} ' + " ".join(tokens) + '"\n'


def with_param(tokens: list[str], key: str, target) -> list[str]:
    token = param_token(key, target)
    return [t for t in tokens if t.partition("=")[0] != key] + ([token] if token else [])


class Cmdline(SettingKind):
    name = "cmdline"
    area = "kernel"
    needs_reboot = True
    verify = VERIFY_NONE  # /proc/cmdline changes at the next boot

    def validate_key(self, key: str) -> None:
        if not PARAM_NAME.fullmatch(key):
            raise SettingInvalid(f"cmdline key {key!r} must be a kernel parameter name such as iommu "
                                 "(letters, digits, _ - .)")

    def validate_target(self, key, target):
        if isinstance(target, bool):
            return target
        if isinstance(target, (int, float)):
            return whole_number(target, "target", 0, MAX_INT64)
        if not isinstance(target, str) or not PARAM_VALUE.fullmatch(target):
            raise SettingInvalid(f"target {target!r} is not a kernel parameter value: use letters, digits "
                                 "and _.,:+/@%=- only (no spaces, quotes, $, `, ;, \\)")
        return target

    def observe(self, ctx, setting) -> list[Observed]:
        text = ctx.host.sys.read("/proc/cmdline")
        if text is None:
            return [Observed("/proc/cmdline", None)]
        pending = self._pending(ctx.host, setting)
        return [Observed("/proc/cmdline", parse_cmdline(text).get(setting.key, NOT_SET),
                         note=f"set for the next boot in {pending}; reboot pending" if pending else "",
                         extra={"reboot": True, "pending": bool(pending)})]

    def _pending(self, host, setting) -> str | None:
        """Where the wanted parameter already waits for the next boot (gpunode's drop-in)."""
        token = param_token(setting.key, setting.target)
        return DROPIN if token and token in (dropin_tokens(host.sys.read(DROPIN)) or []) else None

    def cannot_apply(self, ctx, setting, wrong) -> str | None:
        why = param_not_applicable(ctx.host, setting.key, setting.target)
        return why or boot_loader(ctx.host).why_not or None

    def plan(self, ctx, setting, wrong, files, allow_reboot=False) -> list:
        if not wrong:
            return []
        current = format_param(setting.key, wrong[0].value)
        wanted = param_token(setting.key, setting.target) or f"(no {setting.key})"
        loader = boot_loader(ctx.host)
        gate = "" if allow_reboot else "needs a reboot: rerun with --allow-reboot-settings to change the boot loader"
        common: dict[str, Any] = {"current_text": current, "after_text": wanted, "reboot_required": True}
        if loader.style == BLS_GRUBBY and loader.grubby:
            return [self._plan_grubby(ctx, setting, loader.grubby, gate, common)]
        return self._plan_dropin(setting, wrong, files, gate, common)

    def _plan_dropin(self, setting, wrong, files, gate: str, common: dict) -> list:
        """Debian GRUB: the parameter in gpunode's drop-in under /etc/default/grub.d, then
        update-grub; blocked where the drop-in is not gpunode's format, where a parameter to remove
        comes from the boot loader's own configuration, or where the drop-in has it already."""
        from gpunode.tune.kinds.change import Change

        tokens = dropin_tokens(files.text(DROPIN))
        if tokens is None:
            return [Change(setting.id, "/proc/cmdline", "file", DROPIN, None, None, **common,
                           blocked=f"{DROPIN} is not in the format gpunode writes; fix or remove it by hand")]
        if setting.target is False and wrong[0].value is not NOT_SET and setting.key not in {
                t.partition("=")[0] for t in tokens}:
            return [Change(setting.id, "/proc/cmdline", "file", DROPIN, None, None, **common,
                           blocked=f"{setting.key} comes from the boot loader's own configuration; "
                                   "remove it there by hand")]
        new = with_param(tokens, setting.key, setting.target)
        if new == tokens:
            return [Change(setting.id, "/proc/cmdline", "file", DROPIN, None, None, **common,
                           blocked=f"already in {DROPIN}; reboot to take effect")]
        text = render_dropin(new) if new else None
        from gpunode.tune.kinds.change import FileState

        state = FileState(True, text.encode(), 0o644) if text else FileState(False)
        change = files.change(setting.id, DROPIN, state, **common, blocked=gate, post=[["update-grub"]],
                              note=f"{DROPIN}: {' '.join(new) or '(removed)'}")
        return [change] if change else []

    def _plan_grubby(self, ctx, setting, grubby: str, gate: str, common: dict):
        """grubby --update-kernel=ALL --args=TOKEN; undo puts back the token the entries had
        (or removes the parameter). Read-only `grubby --info=ALL` tells what they hold now."""
        from gpunode.tune.kinds.change import Change

        token = param_token(setting.key, setting.target)
        base = [grubby, "--update-kernel=ALL"]
        do = base + ([f"--args={token}"] if token else [f"--remove-args={setting.key}"])
        before, why = entries_token(ctx.host, setting.key)
        blocked = gate or why
        if not token:
            blocked = blocked or f"removing {setting.key} from every boot entry is left to the operator: `{' '.join(do)}`"
        undo = base + ([f"--args={before}"] if before else [f"--remove-args={setting.key}"])
        return Change(setting.id, "/proc/cmdline", "grubby", BLS_ENTRIES, before, token, **common,
                      blocked=blocked, note=f"`{' '.join(do)}`", extra={"do": do, "undo": undo})


def entries_token(host, key: str) -> tuple[str | None, str]:
    """-> (the token `key` has in every BLS entry or None, why it cannot be told)."""
    result = host.runner.run(["grubby", "--info=ALL"], timeout=60)
    if not result.ok:
        return None, "cannot read the boot entries (`grubby --info=ALL` failed)"
    found = set()
    for line in result.stdout.splitlines():
        if line.startswith("args="):
            tokens = [t for t in line.partition("=")[2].strip().strip('"').split() if t.partition("=")[0] == key]
            found.add(tokens[-1] if tokens else None)
    if len(found) > 1:
        return None, f"the boot entries differ on {key} ({', '.join(sorted(map(str, found)))}): change them by hand"
    token = next(iter(found), None)
    if token is not None and not valid_token(token):
        return None, f"the boot entries hold {token!r}, which gpunode would not write back"
    return token, ""
