"""Value grammars the setting kinds validate with, once, where a profile, overlay or --set is
loaded. Whatever gpunode later writes into a file that others parse or source (sysctl.d,
limits.d, GRUB, unit drop-ins) is rendered from values that passed these checks."""

from __future__ import annotations

import math
import re
from typing import Any

MAX_TEXT = 512
MAX_UINT64 = 2**64 - 1
MAX_INT64 = 2**63 - 1
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# A word a kernel knob takes: bbr, fq, performance, mq-deadline, 0-7, 4096, 1G, ...
WORD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.,:+@%-]*")
# What looks like a number but is not a whole one: 1e90, 0.5, .nan, 1_000.
_NOT_WHOLE = re.compile(r"^[+-]?(\d[\d_]*\.?\d*|\.\d+)([eE][+-]?\d+)?|^[+-]?\.?(nan|inf|infinity)", re.I)


class SettingInvalid(ValueError):
    """One problem with one setting's key or target; the caller adds the file and the id."""


def one_line(value: Any, what: str) -> str:
    """A string of printable characters on one line, at most MAX_TEXT long."""
    text = str(value)
    if _CONTROL.search(text):
        raise SettingInvalid(f"{what} {_show(text)} holds a control character (newline, tab, escape ...)")
    if len(text) > MAX_TEXT:
        raise SettingInvalid(f"{what} is {len(text)} characters long; at most {MAX_TEXT}")
    return text


def whole_number(value: Any, what: str, lo: int = 0, hi: int = MAX_UINT64) -> int:
    """An int (or a string of one) within [lo, hi]; booleans, floats, nan/inf and 1e90 refused."""
    if isinstance(value, bool):
        raise SettingInvalid(f"{what} must be a whole number, got {value!r}")
    shown = _show(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SettingInvalid(f"{what} must be a finite whole number, got {value!r}")
        if not value.is_integer():
            raise SettingInvalid(f"{what} must be a whole number, got {value!r}")
        value = int(value)
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"[+-]?\d{1,20}", text):
            raise SettingInvalid(f"{what} must be a whole number, got {_show(value)}")
        value = int(text)
    if not isinstance(value, int):
        raise SettingInvalid(f"{what} must be a whole number, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise SettingInvalid(f"{what} {shown} is out of range {lo}..{hi}")
    return value


def finite_number(value: Any, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingInvalid(f"{what} must be a number, got {_show(value)}")
    if not math.isfinite(value):
        raise SettingInvalid(f"{what} must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise SettingInvalid(f"{what} {value:g} is out of range {lo:g}..{hi:g}")
    return float(value)


def knob_value(value: Any, what: str, signed: bool = False) -> Any:
    """A value for a one-value kernel knob (/proc/sys, /sys): whole numbers (one or several
    fields, as tcp_rmem's `4096 87380 268435456`) or one word. Numbers below zero only where
    the knob takes them (`signed`)."""
    if isinstance(value, bool):
        return value
    lo = -MAX_INT64 - 1 if signed else 0
    if isinstance(value, (int, float)):
        return whole_number(value, what, lo)
    text = " ".join(one_line(value, what).split())
    if not text:
        raise SettingInvalid(f"{what} is empty")
    fields = text.split(" ")
    if all(re.fullmatch(r"[+-]?\d+", f) for f in fields):
        for f in fields:
            if re.fullmatch(r"[+-]?0\d+", f):  # the kernel's sysctl parser reads 010 as octal 8
                raise SettingInvalid(f"{what} {_show(text)}: a number with a leading 0 (the kernel reads it as octal)")
            whole_number(f, what, lo)
        return text
    if len(fields) == 1 and _NOT_WHOLE.fullmatch(text):
        raise SettingInvalid(f"{what} {_show(text)} is not a whole number or a word")
    if len(fields) != 1 or not WORD.fullmatch(text):
        raise SettingInvalid(f"{what} {_show(text)} must be whole numbers or one word of letters, digits and _.,:+@%-")
    return text


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
