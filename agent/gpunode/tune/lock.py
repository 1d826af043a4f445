"""One apply or rollback at a time per root, and per state directory.

RootLock: flock(2) on the root directory itself (`/` live, the --sysroot tree otherwise).
The lock belongs to the directory's inode, so two applies on one root exclude each other
whatever --state-dir, path spelling (symlink, bind mount) or user they run with, and it
creates nothing: no file appears in the root (a --sysroot stays byte-exact) and nothing
depends on /run/lock being writable. StateLock: flock on <state>/lock, so two roots sharing
one state directory do not interleave journal sequence numbers.

The kernel drops both locks when the holder dies (even by SIGKILL), so a crashed apply never
leaves a stale lock behind; the pid shown is only for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from gpunode.state_dir import UntrustedState, open_file

from .journal import FILE_MODE, JournalError


class LockBusy(RuntimeError):
    pass


class RootLock:
    def __init__(self, root: str | os.PathLike, what: str):
        self.root = Path(root)
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> RootLock:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            st = os.fstat(fd)
            os.close(fd)
            holder = flock_holder(st.st_dev, st.st_ino)
            raise LockBusy(f"another gpunode apply/rollback is changing {self.root}"
                           f"{f' (pid {holder})' if holder else ''}") from None
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last fd of the open file drops the flock
            self.fd = None


def flock_holder(dev: int, ino: int, locks_text: str | None = None) -> int | None:
    """The pid holding a flock on (dev, ino), from /proc/locks (`1: FLOCK ADVISORY WRITE 42 fd:01:77 0 EOF`)."""
    if locks_text is None:
        try:
            locks_text = Path("/proc/locks").read_text()
        except OSError:
            return None
    wanted = f"{os.major(dev):02x}:{os.minor(dev):02x}:{ino}"
    for line in locks_text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == wanted and fields[4].isdigit():
            return int(fields[4])
    return None


class StateLock:
    def __init__(self, state_dir: Path, what: str):
        self.path = state_dir / "lock"
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> StateLock:
        try:  # the state-dir guard: never through a link, never a FIFO or another user's file
            fd = open_file(self.path, os.O_RDWR, create_mode=FILE_MODE)
        except UntrustedState as exc:
            raise JournalError(str(exc)) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockBusy(
                f"another gpunode apply/rollback is running ({holder}); lock {self.path} is held"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {self.what}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


class ApplyLocks:
    """The root's lock, then the state directory's (always in this order)."""

    def __init__(self, root: str | os.PathLike, state_dir: Path, what: str):
        self.locks = [RootLock(root, what), StateLock(state_dir, what)]

    def __enter__(self) -> ApplyLocks:
        taken = []
        try:
            for lock in self.locks:
                lock.__enter__()
                taken.append(lock)
        except BaseException:
            for lock in reversed(taken):
                lock.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for lock in reversed(self.locks):
            lock.__exit__(*exc)
