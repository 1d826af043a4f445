"""The kernel log of the current boot, read once per run and shared by the checks that need it.

Read through the Host's runner with fixed argv (no times in it, so snapshots replay): first
`journalctl -k`, then `dmesg --time-format=iso` when the journal holds no kernel messages (no
journald, as on many VMs and containers, or a non-root reader without journal access, which
journalctl answers with rc 0 and no lines). Both print absolute ISO times; filter by time in
Python. Messages that span several lines (indented continuations) become one record.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import NamedTuple

# -n bounds the work on a long-running host; -q drops "-- Boot ... --" banners.
JOURNAL_ARGV = ("journalctl", "-k", "-o", "short-iso", "--no-pager", "-q", "-n", "50000")
DMESG_ARGV = ("dmesg", "--time-format=iso")  # util-linux >= 2.26
READ_TIMEOUT_S = 4.0  # both tries stay inside a check's 10 s watchdog

# journalctl short-iso (systemd 252): 2026-11-24T00:07:20+0000 vm kernel: msg
# dmesg iso (util-linux 2.38):       2026-11-23T23:51:59,277574+00:00 msg
_STAMP = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:[.,](\d{1,9}))?(Z|[+-]\d\d:?\d\d)\s(.*)"
)
_JOURNAL_PREFIX = re.compile(r"^\S+ kernel: ")
_DENIED = ("operation not permitted", "permission denied", "insufficient permissions")


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class LogRecord(NamedTuple):
    """One kernel log message (continuation lines joined)."""

    time: float | None  # epoch seconds; None when the line carried no time
    text: str


@dataclass
class KernelLog:
    """The kernel log of this boot and where it came from, or why it could not be read."""

    source: str | None  # "journalctl" | "dmesg" | None when unreadable
    records: list[LogRecord] = field(default_factory=list)
    error: str | None = None  # why it could not be read
    denied: bool = False  # unreadable for lack of permission (dmesg_restrict, journal groups)


def parse_time(match: re.Match) -> float:
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = match.group(7) or "0"
    zone = match.group(8)
    if zone == "Z":
        offset = timedelta(0)
    else:
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    stamp = datetime(year, month, day, hour, minute, second, tzinfo=timezone(offset))
    return stamp.timestamp() + float(f"0.{fraction}")


def parse(text: str, journal: bool) -> list[LogRecord]:
    """Lines with an ISO time start a record; indented or time-less lines continue the last one."""
    records: list[LogRecord] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _STAMP.fullmatch(line)
        if match is None:
            if records and line[:1].isspace():
                last = records[-1]
                records[-1] = LogRecord(last.time, f"{last.text} {line.strip()}")
            else:
                records.append(LogRecord(None, line.strip()))
            continue
        try:
            when = parse_time(match)
        except (ValueError, OverflowError):
            when = None  # a garbled stamp: keep the message, time unknown
        message = match.group(9)
        if journal:
            message = _JOURNAL_PREFIX.sub("", message, count=1)
        records.append(LogRecord(when, message))
    return records


def _denied(stderr: str, error: str | None) -> bool:
    said = f"{stderr} {error or ''}".lower()
    return any(word in said for word in _DENIED)


def read(host) -> KernelLog:
    """Try journalctl, then dmesg; say why neither worked."""
    tried = []
    denied = False
    for argv, journal in ((JOURNAL_ARGV, True), (DMESG_ARGV, False)):
        result = host.runner.run(list(argv), timeout=READ_TIMEOUT_S)
        if result.ok:
            records = parse(result.stdout, journal)
            if records:
                return KernelLog(source=argv[0], records=records)
            tried.append(f"{argv[0]}: no kernel messages")
            continue
        denied = denied or _denied(result.stderr, result.error)
        if result.timed_out:
            why = f"timed out after {READ_TIMEOUT_S:.0f}s"
        else:
            why = result.error or (result.stderr.strip().splitlines() or [f"exit code {result.rc}"])[-1]
        tried.append(why if why.startswith(f"{argv[0]}:") else f"{argv[0]}: {why}")
    return KernelLog(source=None, error="; ".join(tried), denied=denied)


def kernel_log(host) -> KernelLog:
    """The kernel log, read at most once per run (several checks share it)."""
    return host.cached("kernel_log", lambda: read(host))
