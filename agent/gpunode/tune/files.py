"""Writing whole files under a SysRoot exactly: bytes and mode, a symlink, or no file at all.

Writes go to a temporary file in the same directory, are fsync'ed and renamed over the
target, so a crash leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import errno
import os
import tempfile

from gpunode.tune.kinds.change import FileState, read_file_state


def write_file_state(sysroot, path: str, state: FileState) -> None:
    if not sysroot.writable:
        raise OSError(errno.EROFS, "this sysroot is read-only (a snapshot)", path)
    real = sysroot.path(path)
    if not state.exists:
        try:
            os.unlink(real)
        except FileNotFoundError:
            pass
        return
    real.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{real.name}.gpunode.", dir=real.parent)
    try:
        if state.link is not None:
            os.close(fd)
            os.unlink(tmp)
            os.symlink(state.link, tmp)
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(state.data or b"")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, state.mode if state.mode is not None else 0o644)
        os.replace(tmp, real)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(real.parent)


def _fsync_dir(directory) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["FileState", "read_file_state", "write_file_state"]
