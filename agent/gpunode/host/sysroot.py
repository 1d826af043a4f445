"""SysRoot: every file the program reads or writes on a machine goes through here.

The root is `/` on a live host, or a directory (a fixture tree or a snapshot's files/)
in tests and offline audits. Reads never raise: a missing or unreadable file is None.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

_ACTIVE = re.compile(r"\[([^\]]+)\]")


def active_choice(text: str | None) -> str | None:
    """`always [madvise] never` -> `madvise`; a plain value is returned as is."""
    if text is None:
        return None
    match = _ACTIVE.search(text)
    return match.group(1) if match else text.strip()


@dataclass
class FsIndex:
    """What a snapshot knows beyond file contents: directory listings, links, absent files."""

    listdir: dict[str, list[str] | None] = field(default_factory=dict)
    readlink: dict[str, str | None] = field(default_factory=dict)
    absent: set[str] = field(default_factory=set)

    def to_json(self) -> dict:
        return {
            "listdir": dict(sorted(self.listdir.items())),
            "readlink": dict(sorted(self.readlink.items())),
            "absent": sorted(self.absent),
        }

    @classmethod
    def from_json(cls, data: dict) -> FsIndex:
        return cls(
            listdir=dict(data.get("listdir", {})),
            readlink=dict(data.get("readlink", {})),
            absent=set(data.get("absent", [])),
        )


class SysRoot:
    """Files under `root`. `index` (from a snapshot) answers listings and links when present."""

    def __init__(self, root: str | os.PathLike = "/", index: FsIndex | None = None, writable: bool = True):
        self.root = Path(root)
        self.index = index
        self.writable = writable

    @property
    def is_live(self) -> bool:
        return self.root == Path("/") and self.index is None

    def path(self, path: str) -> Path:
        """Host path -> real path under the root."""
        if not path.startswith("/"):
            raise ValueError(f"SysRoot paths are absolute, got {path!r}")
        return self.root / path.lstrip("/") if str(self.root) != "/" else Path(path)

    def read(self, path: str) -> str | None:
        if self.index is not None and path in self.index.absent:
            return None
        try:
            with open(self.path(path), encoding="utf-8", errors="replace") as fh:
                return fh.read()
        except (OSError, ValueError):
            return None

    def read_value(self, path: str) -> str | None:
        """The stripped content of a one-value file (sysctl, sysfs knob)."""
        text = self.read(path)
        return None if text is None else text.strip()

    def read_active(self, path: str) -> str | None:
        return active_choice(self.read(path))

    def read_int(self, path: str) -> int | None:
        text = self.read_value(path)
        try:
            return int(text) if text is not None else None
        except ValueError:
            return None

    def exists(self, path: str) -> bool:
        if self.index is not None:
            if path in self.index.absent:
                return False
            if path in self.index.listdir:
                return self.index.listdir[path] is not None
            if path in self.index.readlink and self.index.readlink[path] is not None:
                return True
            parent, name = os.path.split(path)
            if name in (self.index.listdir.get(parent) or []):
                return True
        return os.path.lexists(self.path(path))

    def listdir(self, path: str) -> list[str] | None:
        if self.index is not None and path in self.index.listdir:
            entries = self.index.listdir[path]
            return None if entries is None else list(entries)
        try:
            return sorted(os.listdir(self.path(path)))
        except OSError:
            return None

    def readlink(self, path: str) -> str | None:
        if self.index is not None and path in self.index.readlink:
            return self.index.readlink[path]
        try:
            return os.readlink(self.path(path))
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        """Glob with `*` per path component, through listdir (so snapshots replay it)."""
        parts = [p for p in pattern.split("/") if p]
        found = ["/"]
        for part in parts:
            nxt = []
            for base in found:
                prefix = base.rstrip("/") + "/"
                if any(ch in part for ch in "*?["):
                    for name in self.listdir(base) or []:
                        if fnmatch.fnmatchcase(name, part):
                            nxt.append(prefix + name)
                else:
                    candidate = prefix + part
                    if self.exists(candidate) or self.read(candidate) is not None:
                        nxt.append(candidate)
            found = nxt
        return sorted(found)

    def write(self, path: str, data: str) -> None:
        """Write a value (apply only). Raises OSError with the path on failure."""
        if not self.writable:
            raise OSError(errno.EROFS, "this sysroot is read-only (a snapshot)", path)
        with open(self.path(path), "w", encoding="utf-8") as fh:
            fh.write(data)


class RecordingSysRoot(SysRoot):
    """A live SysRoot that remembers everything read, for `gpunode snapshot`."""

    def __init__(self, root: str | os.PathLike = "/"):
        super().__init__(root, writable=False)
        self.files: dict[str, str] = {}
        self.recorded = FsIndex()

    def read(self, path: str) -> str | None:
        text = super().read(path)
        if text is None:
            self.recorded.absent.add(path)
        else:
            self.files[path] = text
        return text

    def listdir(self, path: str) -> list[str] | None:
        entries = super().listdir(path)
        self.recorded.listdir[path] = entries
        return entries

    def readlink(self, path: str) -> str | None:
        target = super().readlink(path)
        self.recorded.readlink[path] = target
        return target

    def exists(self, path: str) -> bool:
        present = super().exists(path)
        if not present:
            self.recorded.absent.add(path)
        elif path not in self.files and path not in self.recorded.listdir:
            # Remember existence through a listing of the parent entry.
            parent, name = os.path.split(path)
            listed = self.recorded.listdir.setdefault(parent, super().listdir(parent))
            if listed is not None and name not in listed:
                listed.append(name)
        return present

    def save(self, directory: Path) -> None:
        files_dir = directory / "files"
        for path, text in self.files.items():
            target = files_dir / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        files_dir.mkdir(parents=True, exist_ok=True)
        (directory / "fs.json").write_text(json.dumps(self.recorded.to_json(), indent=1) + "\n")


def load_snapshot_sysroot(directory: Path) -> SysRoot:
    from gpunode.host.snapshot import load_index  # bounded and type-checked: InputError naming the file

    index_file = directory / "fs.json"
    index = load_index(index_file) if index_file.exists() else FsIndex()
    return SysRoot(directory / "files", index=index, writable=False)
