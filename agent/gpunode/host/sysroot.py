"""SysRoot: every file the program reads or writes on a machine goes through here.

The root is `/` on a live host, or a directory (a fixture tree or a snapshot's files/)
in tests and offline audits. Reads never raise: a missing or unreadable file is None.

Under a root other than `/`, a path never leads out of it: every symlink on the way is read
as if the root were `/` (an image's `/etc/x -> /etc/shadow` means the image's own file) and
`..` stops at the root, like a chroot. Reads take regular files only (a FIFO or a device is
None at once, never a hang) up to MAX_READ bytes.

Every read, write, listing and stat (on `/` too) walks the path from the root's fd one
component at a time with O_NOFOLLOW (`_walk`): a symlink met on the way is read with
readlinkat and its target walked the same way, inside the root. No path is resolved first
and opened by name afterwards, so a directory swapped for a link mid-way cannot lead out.
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

# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_ACTIVE = r"\[([^\]]+)\]"
MAX_READ = 16 << 20  # /proc/interrupts of a big host is ~2 MiB; nothing apply or audit reads is near this
MAX_LINKS = 40  # as the kernel's ELOOP limit
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_STEP_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC  # search, no read right needed
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR)  # what an O_NOFOLLOW open of a symlink says


class Absent(FileNotFoundError):
    """A directory on the way is missing: `found` are the in-root components reached,
    `rest` the ones after them (none of which can be a link: they do not exist)."""

    def __init__(self, path: str, found: list[str], rest: list[str]):
        super().__init__(errno.ENOENT, "No such file or directory", path)
        self.found, self.rest = found, rest


def active_choice(text: str | None) -> str | None:
    """`always [madvise] never` -> `madvise`; a plain value is returned as is."""
    if text is None:
        return None
    match = re.search(_ACTIVE, text)
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


def _up(fds: list[int], names: list[str]) -> None:
    """`..` during a walk: back to the parent directory, never above the root (fds[0])."""
    if len(fds) > 1:
        os.close(fds.pop())
        names.pop()


def _final(final, dfd: int, name: str, path: str, names: list[str]):
    """final(dfd, name) on a walk's last component; a missing one is Absent from there."""
    try:
        return final(dfd, name)
    except FileNotFoundError as exc:
        raise Absent(path, list(names), [name]) from exc


def _to_root(fds: list[int], names: list[str]) -> None:
    """An absolute link during a walk: its target is walked from the root."""
    while len(fds) > 1:
        os.close(fds.pop())
    names.clear()


def _link_target(exc: OSError, name: str, dfd: int, follow: bool) -> str:
    """The target of link `name` in `dfd`, which the step into it (or final on it) failed on with
    `exc`; `exc` itself when that was no link error, or a last component not to follow."""
    if isinstance(exc, Absent) or exc.errno not in _LINK_ERRNOS or not follow:
        raise exc
    try:
        return os.readlink(name, dir_fd=dfd)
    except OSError:
        raise exc from None  # not a link after all (a file, or swapped back): as it was


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
        """Host path -> where it lies under the root, links not followed: for messages only;
        nothing is opened by this name (the `_walk` chain does that)."""
        if not path.startswith("/"):
            raise ValueError(f"SysRoot paths are absolute, got {path!r}")
        return self.root.joinpath(*[p for p in path.split("/") if p not in ("", ".")])

    def _walk(self, path: str, final, follow_last: bool = True, create: int | None = None, into: bool = False):
        """final(dirfd, name) on the last component of host path `path`, the directory reached
        from the root's fd one component at a time with O_NOFOLLOW. A link on the way (and the
        last component when follow_last and final raised ELOOP/ENOTDIR on it) is read by
        readlinkat and its target walked the same way: absolute from the root, `..` stopping
        at the root, as openat2's RESOLVE_IN_ROOT does. into: the last component is a directory
        walked into too, and final gets ".". create: make missing directories on the way with
        this mode. -> (final's result, the host paths of the directories made)."""
        if not path.startswith("/"):
            raise ValueError(f"SysRoot paths are absolute, got {path!r}")
        todo = _parts(path)
        names: list[str] = []  # in-root components of the directory reached
        fds = [os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)]
        created: list[str] = []
        links = 0
        try:
            while True:
                if not todo or todo == [".."]:
                    if todo:
                        _up(fds, names)
                    return final(fds[-1], "."), created
                name = todo.pop(0)
                if name == "..":
                    _up(fds, names)
                    continue
                last = not todo and not into
                try:
                    if last:
                        return _final(final, fds[-1], name, path, names), created
                    fds.append(self._step(fds[-1], name, create, names, created, path, todo))
                    names.append(name)
                    continue
                except OSError as exc:
                    target = _link_target(exc, name, fds[-1], follow=follow_last or not last)
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "too many levels of symbolic links", path)
                if target.startswith("/"):
                    _to_root(fds, names)
                todo = _parts(target) + todo
        finally:
            for fd in fds:
                os.close(fd)

    def _step(self, dfd: int, name: str, create, names, created, path, todo) -> int:
        """An O_PATH fd of directory `name` in `dfd`, never through a link (ELOOP/ENOTDIR)."""
        try:
            return os.open(name, _STEP_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            if create is None:
                raise Absent(path, list(names), [name, *todo]) from None
        os.mkdir(name, create, dir_fd=dfd)
        sync = os.open(".", _DIR_FLAGS, dir_fd=dfd)
        try:
            os.fsync(sync)  # the new entry is durable before anything is written in it
        finally:
            os.close(sync)
        created.append("/" + "/".join([*names, name]))
        return os.open(name, _STEP_FLAGS, dir_fd=dfd)

    def read_bytes(self, path: str, max_bytes: int = MAX_READ) -> bytes | None:
        """The bytes of a regular file (links followed inside the root), at most max_bytes; else None."""
        if self.index is not None and path in self.index.absent:
            return None
        from gpunode.inputs import InputError, read_fd

        def final(dfd, name):
            fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            try:
                return read_fd(fd, max_bytes, path)
            finally:
                os.close(fd)

        try:
            return self._walk(path, final)[0]
        except (InputError, OSError, ValueError):
            return None

    def file_state(self, path: str) -> tuple[bytes | None, int | None, str | None] | None:
        """A file exactly as it is, the last component not followed: None when absent,
        (None, None, target) for a symlink, (bytes, mode, None) for a regular file; anything
        else, or more than MAX_READ bytes, is an OSError naming the path."""
        from gpunode.inputs import InputError, read_fd

        def final(dfd, name):
            try:
                fd = os.open(name, _READ_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                return None, None, os.readlink(name, dir_fd=dfd)  # EINVAL if swapped back: an error, no guess
            try:
                mode = stat.S_IMODE(os.fstat(fd).st_mode)
                return read_fd(fd, MAX_READ, path), mode, None
            except InputError as exc:
                raise OSError(errno.EINVAL, str(exc).removeprefix(f"{path}: "), path) from None
            finally:
                os.close(fd)

        try:
            return self._walk(path, final, follow_last=False)[0]
        except (FileNotFoundError, NotADirectoryError):
            return None  # as lstat says: no such file (a component on the way is missing or a file)

    def read(self, path: str) -> str | None:
        debug("read: %s", path if self.is_live else f"{path} (under {self.root})")  # `gpunode --debug`
        data = self.read_bytes(path)
        return None if data is None else data.decode("utf-8", errors="replace")

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
        try:
            self._walk(path, _lstat, follow_last=False)
        except (OSError, ValueError):
            return False
        return True

    def listdir(self, path: str) -> list[str] | None:
        if self.index is not None and path in self.index.listdir:
            entries = self.index.listdir[path]
            return None if entries is None else list(entries)
        try:
            return sorted(self._walk(path, _list_dir)[0])
        except (OSError, ValueError):
            return None

    def readlink(self, path: str) -> str | None:
        if self.index is not None and path in self.index.readlink:
            return self.index.readlink[path]
        try:
            return self._walk(path, _read_link, follow_last=False)[0]
        except (OSError, ValueError):
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
        raw = data.encode("utf-8")

        def final(dfd, name):
            fd = os.open(name, _WRITE_FLAGS, dir_fd=dfd)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(errno.EINVAL, "not a regular file (a knob is one)", path)
                if os.write(fd, raw) != len(raw):
                    raise OSError(errno.EIO, "short write", path)
            finally:
                os.close(fd)

        self._walk(path, final)

    def missing_dirs(self, directory: str) -> list[str]:
        """The directories open_dir(directory, create=True) would make, deepest first, as host
        paths after resolving links inside the root (what rollback must remove again)."""
        try:
            self._walk(directory, _lstat, into=True)
        except Absent as gone:
            found, missing = list(gone.found), []
            for name in gone.rest:
                if name == "..":
                    found.pop() if found else None
                    continue
                found.append(name)
                missing.append("/" + "/".join(found))
            return list(reversed(missing))
        except OSError:
            pass  # in the way but not missing (a file where a directory goes): the write says why
        return []

    def open_dir(self, path: str, create: bool = False, mode: int = 0o755) -> tuple[int, list[str]]:
        """An fd of the directory `path` under the root, reached by the `_walk` chain (on `/`
        too: /var/run -> /run), so a link swapped in during the walk cannot lead out.
        create: make missing directories; their host paths come back (outermost first)."""
        if create and not self.writable:
            raise OSError(errno.EROFS, "this sysroot is read-only (a snapshot)", path)
        return self._walk(path, _open_dir, create=mode if create else None, into=True)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def _lstat(dfd: int, name: str) -> os.stat_result:
    return os.stat(name, dir_fd=dfd, follow_symlinks=False)


def _open_dir(dfd: int, name: str) -> int:
    return os.open(name, _DIR_FLAGS, dir_fd=dfd)


def _list_dir(dfd: int, name: str) -> list[str]:
    fd = _open_dir(dfd, name)
    try:
        return os.listdir(fd)
    finally:
        os.close(fd)


def _read_link(dfd: int, name: str) -> str:
    return os.readlink(name, dir_fd=dfd)


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
    index_file = directory / "fs.json"
    index = load_index(index_file) if index_file.exists() else FsIndex()
    return SysRoot(directory / "files", index=index, writable=False)


def load_index(path: Path):
    """fs.json (load_snapshot_sysroot): listings, links, absent paths."""
    from gpunode.inputs import MAX_RECORDED_BYTES, InputError, expect_mapping, load_json

    data = expect_mapping(load_json(path, max_bytes=MAX_RECORDED_BYTES), path)
    listdir, readlink, absent = data.get("listdir", {}), data.get("readlink", {}), data.get("absent", [])
    if not isinstance(listdir, dict) or not all(
        isinstance(v, list) and all(isinstance(n, str) for n in v) or v is None for v in listdir.values()
    ):
        raise InputError(f"{path}: listdir: expected a mapping of path to a list of names (or null)")
    if not isinstance(readlink, dict) or not all(isinstance(v, (str, type(None))) for v in readlink.values()):
        raise InputError(f"{path}: readlink: expected a mapping of path to a link target (or null)")
    if not isinstance(absent, list) or not all(isinstance(v, str) for v in absent):
        raise InputError(f"{path}: absent: expected a list of paths")
    return FsIndex(listdir=dict(listdir), readlink=dict(readlink), absent=set(absent))
