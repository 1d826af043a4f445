"""The setting kinds, by name. A new kind is one module with one SettingKind class and one line
here; nothing else compares kind names."""

from __future__ import annotations

from gpunode.tune.kinds.base import SettingKind
from gpunode.tune.kinds.cmdline import Cmdline
from gpunode.tune.kinds.gpu import Gpu
from gpunode.tune.kinds.irq import Irq
from gpunode.tune.kinds.jsonkey import JsonKey
from gpunode.tune.kinds.limits import Limits
from gpunode.tune.kinds.module import Module
from gpunode.tune.kinds.service import Service
from gpunode.tune.kinds.sysctl import Sysctl
from gpunode.tune.kinds.sysfs import Sysfs
from gpunode.tune.kinds.unit import Unit

KINDS: dict[str, SettingKind] = {k.name: k for k in (
    Sysctl(), Sysfs(), Limits(), Cmdline(), Service(), Unit(), Irq(), Gpu(), JsonKey(), Module(),
)}


def kind_of(setting_or_name) -> SettingKind:
    """The kind of a Setting (or a kind name); KeyError for a name no kind has."""
    name = setting_or_name if isinstance(setting_or_name, str) else setting_or_name.kind
    return KINDS[name]


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)
