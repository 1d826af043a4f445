"""What every setting kind shares: the SettingKind protocol (one class per kind, registered in
gpunode.tune.kinds.registry), an observation per subject, and the comparison rules."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from gpunode.model.profile import format_value
from gpunode.tune.kinds.values import SettingInvalid, knob_value, one_line

UNLIMITED = "unlimited"


@dataclass
class Observed:
    """One place a setting lives (a file, a GPU, a NIC) and its current value.

    value None means the knob is absent or unreadable here (the check SKIPs); kinds report
    an unset-but-meaningful value explicitly, e.g. "(not set)".
    """

    subject: str
    value: Any
    note: str = ""
    extra: dict = field(default_factory=dict)


def normalize(value: Any) -> Any:
    if isinstance(value, str):
        text = " ".join(value.split())
        if text.lower() in ("infinity", "unlimited", "-1"):
            return UNLIMITED
        return text
    return value


def _ints(value: Any) -> list[int] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, float) and value.is_integer():
        return [int(value)]
    parts = str(value).split()
    try:
        return [int(p) for p in parts] if parts else None
    except ValueError:
        return None


def satisfies(op: str, current: Any, target: Any) -> bool:
    """`=`: same value (numbers compared as numbers); `>=`/`<=`: every field at least/at most."""
    current, target = normalize(current), normalize(target)
    if isinstance(target, bool) or isinstance(current, bool):
        return isinstance(current, bool) and isinstance(target, bool) and current == target
    if target == UNLIMITED:
        return current == UNLIMITED
    if current == UNLIMITED:
        return op == ">="  # unlimited is at least any number
    cur, tgt = _ints(current), _ints(target)
    if cur is not None and tgt is not None and len(cur) == len(tgt):
        if op == ">=":
            return all(c >= t for c, t in zip(cur, tgt, strict=True))
        if op == "<=":
            return all(c <= t for c, t in zip(cur, tgt, strict=True))
        return cur == tgt
    if op != "=":
        return False
    return str(current) == str(target)


def value_to_write(op: str, current: Any, target: Any) -> str:
    """What apply writes for `op target` given `current`: for `>=`/`<=` each field moves only
    as far as needed, so a bigger (or smaller) value someone set is never lowered (raised)."""
    tgt = _ints(normalize(target))
    cur = _ints(normalize(current))
    if op == "=" or tgt is None or cur is None or len(cur) != len(tgt):
        return str(target) if not isinstance(target, bool) else ("1" if target else "0")
    pick = max if op == ">=" else min
    return " ".join(str(pick(c, t)) for c, t in zip(cur, tgt, strict=True))


def plan_knob_writes(setting, wrong: list[Observed]) -> list:
    """One write per wrong subject of a one-value knob (a sysctl, a sysfs file)."""
    from gpunode.tune.kinds.change import Change

    changes = []
    for obs in wrong:
        after = value_to_write(setting.op, obs.value, setting.target)
        changes.append(
            Change(setting.id, obs.subject, "knob", obs.subject, obs.value, after,
                   current_text=str(obs.value), after_text=after)
        )
    return changes


# Where a kind's value is kept across a reboot (class attribute `persists_in`), read by
# gpunode.tune.persist: it writes sysctl.d and the boot spec; the others persist by themselves.
SYSCTL_D = "/etc/sysctl.d"  # gpunode.tune.persist writes the value into its sysctl.d file
BOOT_SPEC = "boot spec"  # runtime only: re-applied at boot by gpunode-apply.service
ITSELF = "itself"  # a file, a unit's enablement, the boot loader, the GPU's own memory
# How apply verifies a kind after writing (class attribute `verify`), read by gpunode.tune.execute.
VERIFY_SUBJECTS = "subjects"  # re-judge the subjects written
VERIFY_ALL = "all"  # one file or unit covers every subject: re-judge them all
VERIFY_NONE = "none"  # the effect shows only later (reboot, GPU reset) or through NVML


class SettingKind:
    """One kind of profile setting: how its values are validated, observed, judged and planned.

    The facts about a kind are class attributes; everything else asks the registry
    (gpunode.tune.kinds.registry.kind_of) instead of comparing kind names.
    """

    name: ClassVar[str]
    area: ClassVar[str] = "host"  # audit area when the setting names none
    needs_gpu: ClassVar[bool] = False  # observed through NVML: the audit skips it without GPUs
    needs_reboot: ClassVar[bool] = False  # a change takes effect at the next boot only
    persists_in: ClassVar[str] = ITSELF
    verify: ClassVar[str] = VERIFY_SUBJECTS
    signed_values: ClassVar[bool] = False  # may a numeric target be below zero?

    def validate(self, setting):
        """-> the setting with normalised fields; raises SettingInvalid naming the problem."""
        self.validate_key(setting.key)
        if setting.path is not None:
            raise SettingInvalid(f"'path' is only for sysfs settings, not {self.name}")
        return replace(setting, target=self.validate_target(setting.key, setting.target))

    def validate_key(self, key: str) -> None:
        one_line(key, "key")

    def validate_target(self, key: str, target: Any) -> Any:
        return knob_value(target, "target", signed=self.signed_values)

    def persistence(self, setting) -> str:
        """Where this setting's value is kept across a reboot (SYSCTL_D, BOOT_SPEC, ITSELF)."""
        return self.persists_in

    def area_of(self, setting) -> str:
        return setting.area or self.area

    def precondition(self, ctx, setting) -> str | None:
        """Why this setting cannot even be observed here (no systemd, no GPU), or None."""
        return None

    def observe(self, ctx, setting) -> list[Observed]:
        raise NotImplementedError

    def satisfied(self, setting, obs: Observed) -> bool:
        return satisfies(setting.op, obs.value, setting.target)

    def cannot_apply(self, ctx, setting, wrong: list[Observed]) -> str | None:
        """Why the wrong subjects cannot be changed here (a module the kernel lacks, a read-only
        mount, no boot loader), or None. Plan and audit both say "not applicable here: <why>"."""
        return None

    def plan(self, ctx, setting, wrong: list[Observed], files, allow_reboot: bool = False) -> list:
        """The Changes (gpunode.tune.kinds.change) that bring the wrong subjects to the target."""
        raise NotImplementedError

    def where(self, setting) -> str:
        """Where the knob lives, for "knob absent on this host: <where>"."""
        return setting.path or setting.key

    def show(self, setting, obs: Observed) -> str:
        """An observed value as the audit prints it."""
        return format_value(obs.value)
