"""Kernel command line parameters (/proc/cmdline). Changing one needs a reboot."""

from __future__ import annotations

from gpunode.settings.base import Observed

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
