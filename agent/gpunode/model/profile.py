"""Profile data: one Setting per profile line and the loaded Profile, as the setting kinds, the
checks, audit and apply all read them. Loading, validating and merging profiles is
gpunode.tune.profiles; this module holds only the data, so that everything that reads a profile
imports it from below."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gpunode.ids import normalise
from gpunode.ids import setting_id as make_setting_id


@dataclass(frozen=True)
class Setting:
    """One profile line: what a kind must make true (key, op, target) and why."""

    kind: str
    key: str
    target: Any
    op: str = "="
    why: str = ""
    path: str | None = None  # sysfs: a path glob
    severity: str = "warning"
    area: str | None = None
    tags: tuple[str, ...] = ()
    when: str = "always"
    source: str = ""  # the file it came from

    @property
    def id(self) -> str:
        return make_setting_id(self.kind, self.key)

    @property
    def target_text(self) -> str:
        return f"{'' if self.op == '=' else self.op + ' '}{format_value(self.target)}"


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


@dataclass
class Profile:
    """A loaded profile: its settings by id, after parents, overlays and --set."""

    name: str
    description: str = ""
    settings: dict[str, Setting] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def get(self, setting_id: str) -> Setting | None:
        return self.settings.get(normalise(setting_id))
