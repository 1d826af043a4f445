"""The node's result history: one SQLite file in the state directory (history.sqlite, 0600 in a
0700 directory), written by bench, diag and audit, read by `gpunode history`, `bench --compare`
and the fleet's trend report.

The schema is versioned (PRAGMA user_version) and marked as ours (PRAGMA application_id): a file
that is not SQLite, another program's database or one written by a newer gpunode is refused with
one line (HistoryError), never a traceback and never rewritten; so is a state directory or file
the state-dir guard does not trust (a link, not ours, writable by others). Each result keeps its whole
document (compressed) plus one row per measured figure, so trends need no JSON parsing. Old
results are pruned on every write (per kind: a count and an age).
"""

from __future__ import annotations

import functools
import json
import os
import sqlite3
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "history.sqlite"
APPLICATION_ID = 0x67706E68  # "gpnh"
KINDS = ("bench", "diag", "audit")
DEFAULT_KEEP = 500  # results per kind
DEFAULT_MAX_AGE_DAYS = 400.0


class HistoryError(RuntimeError):
    """The history cannot be used; the message is one line naming the file."""


def _guarded(method):
    """A damaged file can pass the open checks and fail in a query: one HistoryError, never more."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.Error as exc:
            raise HistoryError(f"{self.path}: history unreadable ({exc}); move it away to start a new one") from None

    return wrapper


def _v1(db: sqlite3.Connection) -> None:
    db.executescript("""
        CREATE TABLE results (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL,
            time_epoch REAL NOT NULL,
            time TEXT NOT NULL,
            host TEXT NOT NULL,
            status TEXT NOT NULL,
            summary TEXT NOT NULL,
            doc BLOB NOT NULL
        );
        CREATE INDEX results_kind_time ON results (kind, time_epoch);
        CREATE TABLE figures (
            result_id INTEGER NOT NULL REFERENCES results (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            gpu INTEGER,
            value REAL NOT NULL,
            unit TEXT NOT NULL,
            conditions TEXT NOT NULL,
            cov REAL,
            trusted INTEGER NOT NULL
        );
        CREATE INDEX figures_name ON figures (name, gpu, unit, conditions);
    """)


# One function per schema version, applied in order: a file at version N gets N+1.. on open.
MIGRATIONS = (_v1,)
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass(frozen=True)
class Figure:
    """One measured figure of a result, as trends compare them."""

    name: str
    gpu: int | None
    value: float
    unit: str
    conditions: str  # canonical JSON of the conditions that make figures comparable
    cov: float | None
    trusted: bool  # measured without a foreign process, throttling or new errors


@dataclass(frozen=True)
class Entry:
    id: int
    kind: str
    time_epoch: float
    time: str
    host: str
    status: str
    summary: str


def history_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / FILE_NAME


class Store:
    """An open history. `Store.open(path)` creates or migrates it; `readonly=True` never writes
    (and a missing file reads as empty)."""

    def __init__(self, db: sqlite3.Connection | None, path: Path):
        self._db, self.path = db, path

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False) -> Store:
        path = Path(path)
        try:
            return cls._open(path, readonly)
        except OSError as exc:  # not root: the state dir is 0700 root's
            raise HistoryError(f"{path}: cannot {'read' if readonly else 'write'} the history: "
                               f"{exc.strerror or exc}") from None

    @classmethod
    def _open(cls, path: Path, readonly: bool) -> Store:
        from gpunode.state_dir import UntrustedState, check_dir, open_file

        try:
            if not check_dir(path.parent, create=not readonly) or (readonly and not os.path.lexists(path)):
                return cls(None, path)  # nothing recorded yet
            os.close(open_file(path, os.O_RDONLY if readonly else os.O_RDWR, create_mode=None if readonly else 0o600))
        except UntrustedState as exc:
            raise HistoryError(str(exc)) from None
        # SQLite opens it again by name (its journal lives beside it): in a directory only we can
        # write, the file just judged is the one it opens.
        uri = f"file:{path}?mode={'ro' if readonly else 'rw'}"
        try:
            db = sqlite3.connect(uri, uri=True, timeout=10)
            db.execute("PRAGMA foreign_keys = ON")
            _check_and_migrate(db, path, readonly)
        except sqlite3.DatabaseError as exc:
            raise HistoryError(f"{path}: not a usable gpunode history ({exc}); move it away to start a new one") from None
        return cls(db, path)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- writing

    @_guarded
    def add(self, kind: str, doc: dict, host: str, time_epoch: float, time: str, status: str, summary: str,
            figures: Iterable[Figure]) -> int:
        if kind not in KINDS:
            raise ValueError(f"history kind {kind!r} not in {KINDS}")
        assert self._db is not None, "a read-only history of a missing file cannot be written"
        blob = zlib.compress(json.dumps(doc, sort_keys=True, default=str).encode(), 6)
        with self._db:
            cur = self._db.execute(
                "INSERT INTO results (kind, time_epoch, time, host, status, summary, doc) VALUES (?,?,?,?,?,?,?)",
                (kind, time_epoch, time, host, status, summary, blob))
            rid = int(cur.lastrowid or 0)
            self._db.executemany(
                "INSERT INTO figures (result_id, name, gpu, value, unit, conditions, cov, trusted) VALUES (?,?,?,?,?,?,?,?)",
                [(rid, f.name, f.gpu, f.value, f.unit, f.conditions, f.cov, int(f.trusted)) for f in figures])
        return rid

    @_guarded
    def prune(self, now: float, keep: int = DEFAULT_KEEP, max_age_days: float = DEFAULT_MAX_AGE_DAYS) -> int:
        """Drop results beyond `keep` per kind and older than `max_age_days`; -> rows removed."""
        assert self._db is not None
        with self._db:
            old = self._db.execute("DELETE FROM results WHERE time_epoch < ?", (now - max_age_days * 86400,)).rowcount
            extra = 0
            for kind in KINDS:
                extra += self._db.execute(
                    "DELETE FROM results WHERE kind = ? AND id NOT IN "
                    "(SELECT id FROM results WHERE kind = ? ORDER BY time_epoch DESC, id DESC LIMIT ?)",
                    (kind, kind, keep)).rowcount
        return old + extra

    # ---------------------------------------------------------------- reading

    @_guarded
    def entries(self, kind: str | None = None, limit: int | None = None) -> list[Entry]:
        """Newest first."""
        if self._db is None:
            return []
        sql = "SELECT id, kind, time_epoch, time, host, status, summary FROM results"
        args: list = []
        if kind:
            sql += " WHERE kind = ?"
            args.append(kind)
        sql += " ORDER BY time_epoch DESC, id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [Entry(*row) for row in self._db.execute(sql, args)]

    @_guarded
    def document(self, result_id: int) -> dict | None:
        if self._db is None:
            return None
        row = self._db.execute("SELECT doc FROM results WHERE id = ?", (result_id,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(zlib.decompress(row[0]))
        except (zlib.error, ValueError) as exc:
            raise HistoryError(f"{self.path}: result {result_id} is damaged ({exc})") from None

    @_guarded
    def figures(self, kind: str = "bench", before: float | None = None) -> list[tuple[Entry, Figure]]:
        """Every figure of `kind` results (oldest first), optionally only those older than `before`."""
        if self._db is None:
            return []
        sql = ("SELECT r.id, r.kind, r.time_epoch, r.time, r.host, r.status, r.summary, "
               "f.name, f.gpu, f.value, f.unit, f.conditions, f.cov, f.trusted "
               "FROM figures f JOIN results r ON r.id = f.result_id WHERE r.kind = ?")
        args: list = [kind]
        if before is not None:
            sql += " AND r.time_epoch < ?"
            args.append(before)
        sql += " ORDER BY r.time_epoch, r.id"
        return [(Entry(*row[:7]), Figure(row[7], row[8], row[9], row[10], row[11], row[12], bool(row[13])))
                for row in self._db.execute(sql, args)]


def _check_and_migrate(db: sqlite3.Connection, path: Path, readonly: bool) -> None:
    app = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if app != APPLICATION_ID and (app != 0 or tables):
        raise HistoryError(f"{path}: another program's SQLite database, not a gpunode history; leaving it alone")
    if version > SCHEMA_VERSION:
        raise HistoryError(f"{path}: written by a newer gpunode (history schema {version}, this one knows "
                           f"{SCHEMA_VERSION}); upgrade gpunode to read it")
    if version == SCHEMA_VERSION:
        return
    if readonly:
        raise HistoryError(f"{path}: history schema {version} needs an upgrade to {SCHEMA_VERSION}; run any "
                           "gpunode command that records (bench, audit) to migrate it")
    with db:
        for step in MIGRATIONS[version:]:
            step(db)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
