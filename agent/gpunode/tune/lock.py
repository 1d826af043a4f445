"""One apply or rollback at a time: an fcntl lock on <state>/lock.

The kernel drops the lock when the holder dies (even by SIGKILL), so a crashed apply never
leaves a stale lock behind; the pid written into the file is only for the message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .journal import FILE_MODE


class LockBusy(RuntimeError):
    pass


class StateLock:
    def __init__(self, state_dir: Path, what: str):
        self.path = state_dir / "lock"
        self.what = what
        self.fd: int | None = None

    def __enter__(self) -> StateLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
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
