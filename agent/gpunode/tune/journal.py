"""The apply journal: one append-only JSON-lines file per apply in the state directory.

Each change is appended and fsync'ed *before* it is written, so after a crash (even
SIGKILL) `gpunode rollback` knows every value that may have changed and what was there
before. A torn last line (a crash inside a write) is ignored when reading.

    <state>/applies/<id>.jsonl   records: begin, change, done, failed, end,
                                 rollback, restore, rollback-end
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.tune.kinds.change import Change

DEFAULT_STATE_DIR = "/var/lib/gpunode"
STATE_ENV = "GPUNODE_STATE_DIR"
DIR_MODE = 0o700
FILE_MODE = 0o600


class JournalError(RuntimeError):
    pass


def resolve_state_dir(option: str | None, environ: dict) -> Path:
    return Path(option or environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def ensure_dir(path: Path) -> Path:
    """Create the directory 0700 (and tighten an existing one gpunode made)."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if path.stat().st_mode & 0o077:
            os.chmod(path, DIR_MODE)
    except OSError as exc:
        raise JournalError(f"cannot use state directory {path}: {exc.strerror or exc}") from exc
    return path


def new_apply_id(now: float, seq: int) -> str:
    """Time for people, the sequence number (taken under the lock) for order and uniqueness."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + f"-{seq}"


class JournalWriter:
    """Appends records to one apply's journal, each one flushed and fsync'ed."""

    def __init__(self, path: Path):
        self.path = path
        created = not path.exists()
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        if created:
            os.fchmod(self.fd, FILE_MODE)
            _fsync_dir(path.parent)

    def append(self, record: dict) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        os.write(self.fd, line.encode("utf-8"))
        os.fsync(self.fd)

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
    torn: bool = False  # the last line was cut by a crash

    @property
    def seq(self) -> int:
        return int(self.begin.get("seq", 0))

    @property
    def status(self) -> str:
        if self.rollbacks:
            return "rolled-back" if self.rollbacks[-1].get("result") == "complete" else "partly-rolled-back"
        if self.end is None:
            return "interrupted" if self.changes else "empty"
        return self.end.get("result", "?")

    @property
    def needs_rollback(self) -> bool:
        return self.status in ("applied", "interrupted", "partly-rolled-back") and bool(self.changes)

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
        }


class StateDir:
    """The applies directory of a state dir: list, read, start a journal."""

    def __init__(self, root: Path):
        self.root = root
        self.applies = root / "applies"

    def ensure(self) -> StateDir:
        ensure_dir(self.root)
        ensure_dir(self.applies)
        return self

    def start(self, apply_id: str) -> JournalWriter:
        path = self.applies / f"{apply_id}.jsonl"
        if path.exists():
            raise JournalError(f"apply id {apply_id} already exists")
        return JournalWriter(path)

    def append_to(self, apply_id: str) -> JournalWriter:
        return JournalWriter(self.path_of(apply_id))

    def path_of(self, apply_id: str) -> Path:
        if "/" in apply_id or apply_id.startswith(".") or not apply_id:
            raise JournalError(f"not an apply id: {apply_id!r}")
        path = self.applies / f"{apply_id}.jsonl"
        if not path.exists():
            raise JournalError(f"no apply with id {apply_id} in {self.applies} (see `gpunode history`)")
        return path

    def ids(self) -> list[str]:
        if not self.applies.is_dir():
            return []
        return sorted(p.stem for p in self.applies.glob("*.jsonl"))

    def load(self, apply_id: str) -> ApplyRecord:
        return parse_journal(apply_id, self.path_of(apply_id).read_text(encoding="utf-8", errors="replace"))

    def records(self) -> list[ApplyRecord]:
        """Oldest first, by the sequence number in each begin record."""
        return sorted((self.load(i) for i in self.ids()), key=lambda r: (r.seq, r.id))

    def next_seq(self) -> int:
        return max((r.seq for r in self.records()), default=0) + 1


def parse_journal(apply_id: str, text: str) -> ApplyRecord:
    record = ApplyRecord(apply_id)
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1 or all(not rest.strip() for rest in lines[i + 1:]):
                record.torn = True  # a crash cut the last record; everything before it holds
                continue
            raise JournalError(f"journal {apply_id}: line {i + 1} is corrupt: {exc}") from exc
        kind = entry.get("type")
        if kind == "begin":
            record.begin = entry
        elif kind == "change":
            record.changes[entry["seq"]] = Change.from_json(entry["change"])
        elif kind == "done":
            record.done[entry["seq"]] = entry.get("result")
        elif kind == "failed":
            record.failed[entry["seq"]] = entry.get("reason", "")
        elif kind == "end":
            record.end = entry
        elif kind == "rollback-end":
            record.rollbacks.append(entry)
    return record
