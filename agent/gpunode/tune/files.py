"""Writing whole files under a SysRoot exactly: bytes and mode, a symlink, or no file at all.

The one write path for files apply owns. The directory is reached from the root's fd one
component at a time without following a link (SysRoot.open_dir), so nothing is written
outside the root. The new content goes to `.NAME.gpunode.XXXXXXXX` in the same directory,
is fsync'ed, renamed over NAME and the directory fsync'ed: a kill at any instant leaves the
old or the new file. What a kill can leave besides (that temporary file, directories made
for the file) is known from the journal entry written before, and `clean_after` removes it.
"""

from __future__ import annotations

import errno
import os
import secrets

from gpunode.tune.kinds.change import FileState, read_file_state

TEMP_MARK = ".gpunode."


def temp_prefix(name: str) -> str:
    return f".{name}{TEMP_MARK}"


def write_file_state(sysroot, path: str, state: FileState) -> list[str]:
    """Make `path` hold `state`; -> the directories that had to be created (host paths)."""
    if not sysroot.writable:
        raise OSError(errno.EROFS, "this sysroot is read-only (a snapshot)", path)
    directory, name = os.path.split(path)
    dfd, created = sysroot.open_dir(directory, create=state.exists)
    try:
        if not state.exists:
            try:
                os.unlink(name, dir_fd=dfd)
            except FileNotFoundError:
                return created
            os.fsync(dfd)
            return created
        tmp = temp_prefix(name) + secrets.token_hex(4)
        try:
            if state.link is not None:
                os.symlink(state.link, tmp, dir_fd=dfd)
            else:
                _write_new(dfd, tmp, state.data or b"", state.mode if state.mode is not None else 0o644)
            os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            _unlink_quietly(dfd, tmp)
            raise
        os.fsync(dfd)
        return created
    finally:
        os.close(dfd)


def _write_new(dfd: int, name: str, data: bytes, mode: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, mode)  # after the data: the file is never readable by others half-written
        os.fsync(fd)
    finally:
        os.close(fd)


def clean_after(sysroot, path: str, created_dirs: list[str]) -> list[str]:
    """Remove what an interrupted write of `path` can have left: its temporary files, then the
    directories made for it, deepest first, while empty. -> the host paths removed."""
    removed: list[str] = []
    directory, name = os.path.split(path)
    try:
        dfd, _ = sysroot.open_dir(directory)
    except OSError:
        dfd = None  # the directory is not there: no temporary file either
    if dfd is not None:
        try:
            for entry in os.listdir(dfd):
                if entry.startswith(temp_prefix(name)):
                    _unlink_quietly(dfd, entry)
                    removed.append(os.path.join(directory, entry))
            if removed:
                os.fsync(dfd)
        finally:
            os.close(dfd)
    for created in sorted(created_dirs, key=len, reverse=True):
        parent, leaf = os.path.split(created)
        try:
            pfd, _ = sysroot.open_dir(parent)
        except OSError:
            continue
        try:
            os.rmdir(leaf, dir_fd=pfd)
            os.fsync(pfd)
            removed.append(created)
        except OSError:
            pass  # not empty (something else lives there now) or already gone
        finally:
            os.close(pfd)
    return removed


def _unlink_quietly(dfd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dfd)
    except FileNotFoundError:
        pass


__all__ = ["FileState", "clean_after", "read_file_state", "write_file_state"]
