"""The apply journal: one append-only JSON-lines file per apply in the state directory.

Each change is appended and fsync'ed *before* it is written, so after a crash (even
SIGKILL) `gpunode rollback` knows every value that may have changed and what was there
before. A line that cannot be read (a torn last line left by a kill, or one damaged by
hand or disk, or one whose fields are not of the types gpunode writes) never blocks anything:
it is reported, and under the lock moved aside into <state>/quarantine/<id>.jsonl (0600); the
rest of that journal still counts. The directory and each journal pass the state-dir guard
(gpunode.state_dir: ours, not a link, writable by nobody else) and are read through the
bounded loader (a FIFO is refused at once, size bound, finite numbers, no duplicate keys).

    <state>/applies/<id>.jsonl   records: begin, change, done, failed, end,
                                 rollback, restore, rollback-end
    <state>/quarantine/<id>.jsonl   lines taken out of applies/<id>.jsonl, with why
    <state>/sysroots/<key>/applies/, .../quarantine/   the same for applies made under --sysroot
                                 (key: the root's path), apart from the live host's
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.inputs import parse_json
from gpunode.state_dir import FILE_MODE, SYSROOTS, UntrustedState, check_dir, open_file, read_file
from gpunode.state_dir import sysroot_home as _sysroot_home
from gpunode.tune.kinds.change import Change

from . import journal_check as check

MAX_JOURNAL_BYTES = 64 * 1024 * 1024  # a journal holds whole config files (before and after); a few KB in practice
MAX_LINE_DEPTH = 12  # gpunode's own records nest 5 deep


class JournalError(RuntimeError):
    pass


class JournalWriteError(JournalError):
    """A record could not be made durable: the disk is full or failing under the state dir."""


def ensure_dir(path: Path) -> Path:
    """Create the directory 0700 when missing; an existing one is used only when the state-dir
    guard trusts it, and its mode is never changed."""
    try:
        check_dir(path, create=True)
    except UntrustedState as exc:
        raise JournalError(str(exc)) from None
    return path


def new_apply_id(now: float, seq: int) -> str:
    """Time for people, the sequence number (taken under the lock) for order and uniqueness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{seq}"


class JournalWriter:
    """Appends records to one apply's journal, each one flushed and fsync'ed."""

    def __init__(self, path: Path):
        self.path = path
        created = not os.path.lexists(path)
        try:  # never through a link, and only into a journal that is ours alone
            self.fd = open_file(path, os.O_WRONLY | os.O_APPEND, create_mode=FILE_MODE)
        except UntrustedState as exc:
            raise JournalError(str(exc)) from None
        if created:
            os.fchmod(self.fd, FILE_MODE)
            _fsync_dir(path.parent)

    def append(self, record: dict) -> None:
        """Raises JournalWriteError when the record is not durable (disk full, I/O error); the
        part of it that reached the file is cut off again, so that the journal stays readable."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        start = None
        try:
            start = os.fstat(self.fd).st_size
            if os.write(self.fd, line) != len(line):
                raise OSError(errno.ENOSPC, "short write (disk full?)")
            os.fsync(self.fd)  # durable before the caller goes on to change anything
        except OSError as exc:
            if start is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, start)
            raise JournalWriteError(f"journal {self.path}: cannot write: {exc.strerror or exc}") from exc

    def close(self) -> None:
        os.close(self.fd)

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class ApplyRecord:
    """One apply as read back from its journal."""

    id: str
    begin: dict = field(default_factory=dict)
    changes: dict[int, Change] = field(default_factory=dict)
    done: dict[int, dict | None] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    end: dict | None = None
    rollbacks: list[dict] = field(default_factory=list)  # rollback-end records
    rollback_open: bool = False  # a rollback record with no rollback-end after it: that rollback was killed
    restored: set[int] = field(default_factory=set)  # seqs whose last restore record put them back
    bad_lines: list[tuple[int, str, str]] = field(default_factory=list)  # (line number, text, why)

    @property
    def torn(self) -> bool:
        """The last line was cut by a crash (the only damage a kill can do to a journal)."""
        return any(why == TORN for _, _, why in self.bad_lines)

    @property
    def seq(self) -> int:
        """The apply's number: from its begin record, or, where that line was lost, from its id
        (`...-<seq>`), so a damaged journal keeps its place among the applies."""
        if "seq" in self.begin:
            return int(self.begin["seq"])
        _, _, tail = self.id.rpartition("-")
        return int(tail) if tail.isascii() and tail.isdigit() and len(tail) < 19 else 0

    @property
    def status(self) -> str:
        if self.rollback_open:
            return "rollback-interrupted"
        if self.rollbacks:
            return "rolled-back" if self.rollbacks[-1].get("result") == "complete" else "partly-rolled-back"
        if self.end is None:
            return "interrupted" if self.changes else "empty"
        return self.end.get("result", "?")

    @property
    def needs_rollback(self) -> bool:
        return self.status in ("applied", "interrupted", "partly-rolled-back", "rollback-interrupted") \
            and bool(self.changes)

    @property
    def unfinished(self) -> bool:
        """Killed in the middle: the host may be half-changed until this is rolled back."""
        return self.status in ("interrupted", "rollback-interrupted")

    def summary(self) -> dict:
        return {
            "id": self.id,
            "time": self.begin.get("time"),
            "profile": self.begin.get("profile"),
            "host": self.begin.get("host"),
            "mode": self.begin.get("mode", "apply"),
            "changes": len(self.changes),
            "status": self.status,
            "reason": (self.end or {}).get("reason") or "",
            "rolled_back_at": self.rollbacks[-1].get("time") if self.rollbacks else None,
            "damaged_lines": len(self.bad_lines),
        }


class StateDir:
    """The applies directory of a state dir: list, read, start a journal. `sysroot` (an absolute
    resolved path): the applies made under that --sysroot, kept in <root>/sysroots/<key>/ so
    they never appear in, or block, the live host's history and rollback."""

    def __init__(self, root: Path, sysroot: str | os.PathLike | None = None):
        self.root = root
        self.sysroot = None if sysroot is None or os.fspath(sysroot) == "/" else os.fspath(sysroot)
        self.home = root if self.sysroot is None else _sysroot_home(root, self.sysroot)
        self.applies = self.home / "applies"
        self.quarantine = self.home / "quarantine"
        self.warnings: list[str] = []  # damaged journals met so far, for the CLI to print

    def _dirs(self) -> list[Path]:
        """From the state dir down to applies/: each must pass the guard."""
        middle = [] if self.home == self.root else [self.root / SYSROOTS, self.home]
        return [self.root, *middle, self.applies]

    def ensure(self) -> StateDir:
        for path in self._dirs():
            ensure_dir(path)
        return self

    def exists(self) -> bool:
        """Whether any apply was recorded here (applies/ there); an untrusted one raises JournalError."""
        try:
            return all(check_dir(path) for path in self._dirs())
        except UntrustedState as exc:
            raise JournalError(str(exc)) from None

    def start(self, apply_id: str) -> JournalWriter:
        path = self.applies / f"{apply_id}.jsonl"
        if path.exists():
            raise JournalError(f"apply id {apply_id} already exists")
        return JournalWriter(path)

    def append_to(self, apply_id: str) -> JournalWriter:
        return JournalWriter(self.path_of(apply_id))

    def path_of(self, apply_id: str) -> Path:
        if "/" in apply_id or "\0" in apply_id or apply_id.startswith(".") or not apply_id:
            raise JournalError(f"not an apply id: {apply_id!r}")
        path = self.applies / f"{apply_id}.jsonl"
        if not self.exists() or not os.path.lexists(path):  # a link is found, then refused by the guard
            raise JournalError(self._elsewhere(apply_id) or
                               f"no apply with id {apply_id} in {self.applies} (see `gpunode history`)")
        return path

    def _elsewhere(self, apply_id: str) -> str | None:
        """Where the state dir keeps an apply of that id made on another root, said as the flag to pass."""
        try:
            homes = [self.root, *sorted((self.root / SYSROOTS).iterdir())] if check_dir(self.root) else []
        except (OSError, UntrustedState):
            homes = [self.root]
        for home in homes:
            if home == self.home or not os.path.lexists(home / "applies" / f"{apply_id}.jsonl"):
                continue
            other = StateDir(self.root)
            other.home, other.applies, other.quarantine = home, home / "applies", home / "quarantine"
            try:
                root = other.load(apply_id).begin.get("root")
            except JournalError:
                root = None
            if root == "/" or home == self.root:
                return f"apply {apply_id} was made on the live host (no --sysroot)"
            return f"apply {apply_id} was made under another root{f'; pass --sysroot {root}' if root else ''}"
        return None

    def ids(self) -> list[str]:
        if not self.exists():
            return []
        try:
            names = os.listdir(self.applies)
        except FileNotFoundError:
            return []
        except OSError as exc:  # not root, on a root-only state dir: one line, not a traceback
            raise JournalError(f"{self.applies}: cannot read: {exc.strerror or exc}") from exc
        return sorted(n[: -len(".jsonl")] for n in names if n.endswith(".jsonl") and not n.startswith("."))

    def load(self, apply_id: str, repair: bool = False) -> ApplyRecord:
        """repair (only under the lock): move damaged lines aside so later appends stay readable."""
        path = self.path_of(apply_id)
        try:  # the guard (ours, a regular file, not a link) and the bound, on the opened fd
            data = read_file(path, MAX_JOURNAL_BYTES)
        except UntrustedState as exc:
            raise JournalError(f"journal {exc}") from None
        except OSError as exc:
            raise JournalError(f"journal {path}: cannot read: {exc.strerror or exc}") from exc
        # bytes that are not UTF-8 stay visible (as surrogates) so their line is quarantined, not altered
        text = data.decode("utf-8", errors="surrogateescape")
        record = parse_journal(apply_id, text)
        if record.bad_lines:
            where = self.quarantine / f"{apply_id}.jsonl"
            lines = ", ".join(f"{n} ({why})" for n, _, why in record.bad_lines[:3])
            if repair:
                self._quarantine(path, text, record)
                self._warn(f"journal {path}: line(s) {lines} could not be read; moved to {where}")
            else:
                self._warn(f"journal {path}: line(s) {lines} could not be read (the next apply or "
                           f"rollback moves them to {where})")
        return record

    def records(self, repair: bool = False) -> list[ApplyRecord]:
        """Oldest first, by the sequence number in each begin record."""
        return sorted((self.load(i, repair) for i in self.ids()), key=lambda r: (r.seq, r.id))

    def next_seq(self) -> int:
        return max((r.seq for r in self.records()), default=0) + 1

    def _warn(self, text: str) -> None:
        if text not in self.warnings:
            self.warnings.append(text)

    def _quarantine(self, path: Path, text: str, record: ApplyRecord) -> None:
        """Append the bad lines to quarantine/<id>.jsonl (fsync'ed first), then replace the
        journal by its good lines (temp + fsync + rename + fsync dir): a kill in between
        leaves a line in both places, never in neither."""
        ensure_dir(self.quarantine)
        bad = {n for n, _, _ in record.bad_lines}
        with JournalWriter(self.quarantine / f"{record.id}.jsonl") as out:
            for n, line, why in record.bad_lines:
                out.append({"type": "quarantined", "line": n, "why": why, "text": line})
        keep = [line for n, line in enumerate(text.split("\n"), 1) if n not in bad and line.strip()]
        tmp = path.with_name(f".{path.name}.gpunode.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        try:
            os.write(fd, "".join(line + "\n" for line in keep).encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        record.bad_lines = []


TORN = "cut short by a crash"


def parse_journal(apply_id: str, text: str) -> ApplyRecord:
    """Every line that reads is used; the others are listed in record.bad_lines, never raised."""
    record = ApplyRecord(apply_id)
    lines = text.split("\n")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if n == len(lines):  # no newline after it: the write of this record never finished
            record.bad_lines.append((n, line, TORN))
            continue
        try:
            if _not_utf8(line):
                raise UnicodeError("not UTF-8")
            _take(record, parse_json(line, f"line {n}", max_depth=MAX_LINE_DEPTH))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            why = "not JSON" if "not valid JSON" in str(exc) else f"{type(exc).__name__}: {exc}"
            record.bad_lines.append((n, line, " ".join(why.split())[:200]))
    return record


def _not_utf8(line: str) -> bool:
    return any("\udc80" <= c <= "\udcff" for c in line)


_BEGIN_TEXT = ("id", "time", "profile", "host", "root", "mode", "gpunode_version")


def _take(record: ApplyRecord, entry) -> None:
    """One record, its fields type-checked (TypeError/ValueError/KeyError: the line is quarantined)."""
    if not isinstance(entry, dict):
        raise TypeError("a record is a mapping")
    kind = entry["type"]
    take = _TAKE.get(kind) if isinstance(kind, str) else None
    if take is None:
        raise ValueError(f"unknown record type {kind!r}")
    take(record, entry)


def _take_begin(record: ApplyRecord, entry: dict) -> None:
    if "seq" in entry:
        check.need_int(entry["seq"], "seq", 1)
    for name in _BEGIN_TEXT:
        check.need_text(entry.get(name), name, optional=True)
    if not isinstance(entry.get("settings", []), list):
        raise TypeError("settings is not a list")
    record.begin = entry


def _take_change(record: ApplyRecord, entry: dict) -> None:
    record.changes[check.need_int(entry["seq"], "seq", 1)] = check.change_from_line(entry["change"])


def _take_done(record: ApplyRecord, entry: dict) -> None:
    record.done[check.need_int(entry["seq"], "seq", 1)] = check.done_result(entry.get("result"))


def _take_failed(record: ApplyRecord, entry: dict) -> None:
    record.failed[check.need_int(entry["seq"], "seq", 1)] = str(check.need_text(entry.get("reason", ""), "reason"))


def _take_end(record: ApplyRecord, entry: dict) -> None:
    check.need_text(entry.get("result"), "result")
    check.need_text(entry.get("reason"), "reason", optional=True)
    record.end = entry


def _take_rollback(record: ApplyRecord, entry: dict) -> None:
    check.need_text(entry.get("time"), "time", optional=True)
    record.rollback_open = True


def _take_rollback_end(record: ApplyRecord, entry: dict) -> None:
    check.need_text(entry.get("result"), "result")
    check.need_text(entry.get("time"), "time", optional=True)
    if not isinstance(entry.get("left", []), list):
        raise TypeError("left is not a list")
    record.rollbacks.append(entry)
    record.rollback_open = False


def _take_restore(record: ApplyRecord, entry: dict) -> None:
    seq = check.need_int(entry["seq"], "seq", 1)
    if entry["status"] not in check.RESTORE_STATUSES:
        raise ValueError(f"unknown restore status {entry['status']!r}")
    if entry["status"] in ("restored", "not-written"):
        record.restored.add(seq)
    else:
        record.restored.discard(seq)


# What each record type of the journal does to the record being rebuilt.
_TAKE: dict[str, Callable[[ApplyRecord, dict], None]] = {
    "begin": _take_begin, "change": _take_change, "done": _take_done, "failed": _take_failed, "end": _take_end,
    "rollback": _take_rollback, "rollback-end": _take_rollback_end, "restore": _take_restore,
}
