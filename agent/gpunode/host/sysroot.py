"""SysRoot: every file the program reads or writes on a machine goes through here.

The root is `/` on a live host, or a directory (a fixture tree or a snapshot's files/)
in tests and offline audits. Reads never raise: a missing or unreadable file is None.

Under a root other than `/`, a path never leads out of it: every symlink on the way is read
as if the root were `/` (an image's `/etc/x -> /etc/shadow` means the image's own file) and
`..` stops at the root, like a chroot. Reads take regular files only (a FIFO or a device is
None at once, never a hang) up to MAX_READ bytes.
"""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from gpunode.host.debug import debug

_ACTIVE = re.compile(r"\[([^\]]+)\]")
MAX_READ = 16 << 20  # /proc/interrupts of a big host is ~2 MiB; nothing apply or audit reads is near this
MAX_LINKS = 40  # as the kernel's ELOOP limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


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
        """Host path -> real path under the root; the last component itself is not followed
        (lstat, readlink, replace or remove that name), the ones before it stay inside the root."""
        return self._real(path, follow_last=False)

    def resolve(self, path: str) -> Path:
        """Host path -> real path under the root with the last component followed too (inside the root)."""
        return self._real(path, follow_last=True)

    def _real(self, path: str, follow_last: bool) -> Path:
        if not path.startswith("/"):
            raise ValueError(f"SysRoot paths are absolute, got {path!r}")
        if str(self.root) == "/":
            return Path(path)  # nothing leads out of /
        return self.root.joinpath(*in_root_parts(str(self.root), path, follow_last))

    def read(self, path: str) -> str | None:
        debug("read: %s", path if self.is_live else f"{path} (under {self.root})")  # `gpunode --debug`
        if self.index is not None and path in self.index.absent:
            return None
        from gpunode.inputs import InputError, read_bytes

        try:
            return read_bytes(self.resolve(path), MAX_READ).decode("utf-8", errors="replace")
        except (InputError, OSError, ValueError):
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
            return sorted(os.listdir(self.resolve(path)))
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
        """Write a one-value knob (/proc/sys, /sys) in one write(2), as `echo v > knob` does.
        Raises OSError with the path on failure. Whole files go through gpunode.tune.files."""
        if not self.writable:
            raise OSError(errno.EROFS, "this sysroot is read-only (a snapshot)", path)
        real = self.resolve(path)
        fd = os.open(real, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file (a knob is one)", path)
            raw = data.encode("utf-8")
            if os.write(fd, raw) != len(raw):
                raise OSError(errno.EIO, "short write", path)
        finally:
            os.close(fd)

    def missing_dirs(self, directory: str) -> list[str]:
        """The directories open_dir(directory, create=True) would make, deepest first, as host
        paths after resolving links inside the root (what rollback must remove again)."""
        parts = in_root_parts(str(self.root), directory, follow_last=True)
        missing = []
        for i in range(len(parts)):
            host_path = "/" + "/".join(parts[: i + 1])
            if not os.path.lexists(self.root.joinpath(*parts[: i + 1])):
                missing.append(host_path)
        return list(reversed(missing))

    def open_dir(self, path: str, create: bool = False, mode: int = 0o755) -> tuple[int, list[str]]:
        """An fd of the directory `path` under the root, reached one component at a time with
        O_NOFOLLOW from the root's own fd, so a link swapped in after resolving cannot lead out.
        create: make missing directories; their host paths come back (outermost first)."""
        if create and not self.writable:
            raise OSError(errno.EROFS, "this sysroot is read-only (a snapshot)", path)
        parts = in_root_parts(str(self.root), path, follow_last=True)  # on / too: /var/run -> /run
        fd = os.open(self.root, _DIR_FLAGS)
        created: list[str] = []
        try:
            for i, name in enumerate(parts):
                try:
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        raise
                    os.mkdir(name, mode, dir_fd=fd)
                    os.fsync(fd)  # the new entry is durable before anything is written in it
                    created.append("/" + "/".join(parts[: i + 1]))
                    nxt = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nxt
        except BaseException:
            os.close(fd)
            raise
        return fd, created


def in_root_parts(root: str, path: str, follow_last: bool) -> list[str]:
    """The components under `root` that host path `path` names, reading each symlink on the
    way as if `root` were `/` and stopping `..` at the root (what openat2 RESOLVE_IN_ROOT does)."""
    todo = [p for p in path.split("/") if p not in ("", ".")]
    done: list[str] = []
    links = 0
    while todo:
        name = todo.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        if not todo and not follow_last:
            done.append(name)
            break
        real = os.path.join(root, *done, name)
        try:
            is_link = stat.S_ISLNK(os.lstat(real).st_mode)
        except OSError:
            is_link = False  # missing (or unreadable): nothing below it can be a link either
        if not is_link:
            done.append(name)
            continue
        links += 1
        if links > MAX_LINKS:
            raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
        target = os.readlink(real)
        if target.startswith("/"):
            done = []
        todo = [p for p in target.split("/") if p not in ("", ".")] + todo
    return done


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
        from gpunode.outputs import write_atomic  # the one writer of output files

        files_dir = directory / "files"
        for path, text in self.files.items():
            target = files_dir / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, text, mode=0o600)
        files_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "fs.json", json.dumps(self.recorded.to_json(), indent=1) + "\n", mode=0o600)


def load_snapshot_sysroot(directory: Path) -> SysRoot:
    from gpunode.host.snapshot import load_index  # bounded and type-checked: InputError naming the file

    index_file = directory / "fs.json"
    index = load_index(index_file) if index_file.exists() else FsIndex()
    return SysRoot(directory / "files", index=index, writable=False)
