"""What every setting kind shares: an observation per subject and the comparison rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
