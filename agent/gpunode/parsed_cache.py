"""A content-addressed cache of parsed YAML documents, kept as JSON, for the gate.

The gate runs before every Slurm job and reads the same profile (and config) each time:
importing PyYAML alone costs ~12 ms there. The cache maps BLAKE2b(the file's text and the parse
bounds) to the document that text parsed to, so a hit can never be stale: a changed file is a
different key. Only a document JSON represents exactly (mappings with string keys, lists,
strings, finite numbers, booleans, null) is kept; anything else is parsed every time.

Trust: the cache lives in the state directory, written only by its owner. A directory or entry
the state-dir guard (gpunode.state_dir) does not trust is neither read nor written, only a
miss; entries are opened without following links, size-bounded and read as JSON only (never
executed, never YAML). A damaged entry is a miss and is rewritten. Callers validate the document as they would a fresh parse.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

try:  # CPython's built-in BLAKE2: hashlib would load OpenSSL first (~3 ms of every gate)
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - another interpreter
    from hashlib import blake2b

SCHEMA = b"gpunode.parsed-yaml/2\0"  # /2: numbers YAML 1.1 and 1.2 read differently are refused (an entry from before holds 010 as 8)
MAX_ENTRY_BYTES = 8 * 1024 * 1024
MAX_ENTRIES = 64  # each edit of a config or profile adds one; the oldest go beyond this
SUBDIR = "cache"


class ParsedCache:
    def __init__(self, state_dir: str | os.PathLike):
        self.directory = os.path.join(os.fspath(state_dir), SUBDIR)

    def key(self, text: str, limits: tuple) -> str:
        return blake2b(SCHEMA + repr(limits).encode() + b"\0" + text.encode("utf-8"), digest_size=32).hexdigest()

    def get(self, key: str) -> tuple[bool, Any]:
        """(True, document) on a hit; (False, None) on a miss, an unsafe directory or a damaged entry."""
        from gpunode.state_dir import UntrustedState, open_file

        if not self._trusted(create=False):
            return False, None
        try:  # the guard: a regular file, ours, writable by nobody else, not a link
            fd = open_file(self._path(key))
        except (OSError, UntrustedState):
            return False, None
        try:
            if os.fstat(fd).st_size > MAX_ENTRY_BYTES:
                return False, None
            data = os.read(fd, MAX_ENTRY_BYTES + 1)
        except OSError:
            return False, None
        finally:
            os.close(fd)
        try:
            entry = json.loads(data.decode("utf-8"))
        except ValueError:
            return False, None
        if not isinstance(entry, dict) or entry.get("key") != key or "document" not in entry:
            return False, None
        return True, entry["document"]

    def put(self, key: str, document: Any) -> None:
        """Keep the document if JSON holds it exactly; a cache that cannot be written is no error."""
        if not exact_json(document) or not self._trusted(create=True):
            return
        text = json.dumps({"key": key, "document": document}, allow_nan=False, separators=(",", ":"))
        tmp = self._path(key) + f".{os.getpid()}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                os.write(fd, text.encode("utf-8"))
            finally:
                os.close(fd)
            os.replace(tmp, self._path(key))  # readers see the old entry or the whole new one
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            return
        self._prune()

    def _prune(self) -> None:
        """Only on a write (a miss): drop the least recently written entries over MAX_ENTRIES."""
        try:
            names = [n for n in os.listdir(self.directory) if n.endswith(".json")]
            if len(names) <= MAX_ENTRIES:
                return
            aged = sorted(names, key=lambda n: os.lstat(os.path.join(self.directory, n)).st_mtime_ns)
            for name in aged[: len(names) - MAX_ENTRIES]:
                os.unlink(os.path.join(self.directory, name))
        except OSError:
            pass  # another gate pruned at the same time, or the directory went away

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, f"{key}.json")

    def _trusted(self, create: bool) -> bool:
        """The state directory and the cache directory in it pass the state-dir guard (else
        someone else could choose what the gate reads); `create` makes them 0700 when missing."""
        from gpunode.state_dir import dir_trusted

        return all(dir_trusted(path, create) for path in (os.path.dirname(self.directory), self.directory))


def exact_json(value: Any, depth: int = 0) -> bool:
    """True when json.loads(json.dumps(value)) == value with the same types throughout."""
    if depth > 64:
        return False
    if value is None or isinstance(value, (str, bool, int)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(exact_json(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and exact_json(v, depth + 1) for k, v in value.items())
    return False
