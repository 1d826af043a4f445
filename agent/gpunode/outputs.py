"""How gpunode writes its documents: JSON text, timestamps, and the one function that writes
an output file (write_atomic)."""

from __future__ import annotations

import errno
import json
import os
import re
import stat
from datetime import datetime, timezone

# A path that names one of this process's own file descriptors: write to that descriptor, as
# printing would (a pipe, a terminal, a file the shell opened), never replace what it points at.
# Pattern compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs it (issue 21).
_OWN_FD = r"/dev/(?:stdout|stderr|fd/\d+)|/proc/(?:self|thread-self)/fd/\d+"
_FD_NUMBER = {"/dev/stdout": 1, "/dev/stderr": 2}


class OutputError(OSError):
    """An output path gpunode refuses to write (its strerror is the one-line reason)."""


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """Write `text` to the output path `path`, by what is there:
    - nothing (a new name in an existing directory) or a regular file: tmp file in the same
      directory + fsync + rename, so readers never see half a file; `mode` is the file's mode;
    - a symlink to a regular file: the file it points at is replaced that way; the link stays;
    - this process's stdout/stderr (/dev/stdout, /dev/fd/N, /proc/self/fd/N): written to that
      descriptor, as printing would;
    - a FIFO or a character device (or a symlink to one): written through, never replaced
      (a FIFO nobody reads is an error, not a hang);
    - anything else (a directory, a block device, a socket, a dangling symlink) is refused.
    Missing directories are never created: a wrong path is an error (OutputError, an OSError
    whose strerror says why), never a file nobody reads."""
    name = os.fspath(path)
    data = text.encode("utf-8")
    if re.fullmatch(_OWN_FD, name):
        _write_fd(name, data)
        return
    st = _target(name)
    if st is None:
        _replace(name, data, mode, new=True)
    elif stat.S_ISREG(st.st_mode):
        _replace(os.path.realpath(name), data, mode, new=False)
    else:
        _write_through(name, data, st)


def check_output(path: str | os.PathLike) -> None:
    """Raise OutputError now for a path write_atomic would refuse: said before a long run, not
    after it (a FIFO's reader may still come: that is judged when writing)."""
    name = os.fspath(path)
    if not re.fullmatch(_OWN_FD, name):
        _target(name)


def _target(name: str) -> os.stat_result | None:
    """What a write to `name` reaches (links followed): None for a new name in an existing
    directory, else a regular file, a FIFO or a character device; OutputError for the rest."""
    try:
        st = os.stat(name)
    except FileNotFoundError:
        if os.path.islink(name):
            raise OutputError(errno.ENOENT, f"a symlink to {os.readlink(name)}, which does not exist") from None
        parent = os.path.dirname(name) or "."
        if not os.path.isdir(parent):
            raise OutputError(errno.ENOENT, f"no directory {parent} (gpunode creates none: check the path)") from None
        return None
    if stat.S_ISREG(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode):
        return st
    what = "a directory" if stat.S_ISDIR(st.st_mode) else \
        "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file, FIFO or character device"
    raise OutputError(errno.EINVAL, f"{what}: refusing to write a report there")


def _replace(target: str, data: bytes, mode: int, new: bool) -> None:
    """tmp + fsync + rename in the target's directory. A new name is linked, not renamed, so a
    node someone made there meanwhile is never replaced (EEXIST: try again as a replacement)."""
    import tempfile  # here, not at the top: the gate imports this module and never writes a file

    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=os.path.dirname(target) or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if new and _link_new(tmp, target):
            os.unlink(tmp)
            return
        if not new or stat.S_ISREG(os.lstat(target).st_mode):
            os.replace(tmp, target)
            return
        raise OutputError(errno.EEXIST, "appeared while writing and is not a regular file: not replaced")
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _link_new(tmp: str, target: str) -> bool:
    """Give the new file its name only if the name is still free. -> False when it is taken."""
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError as exc:  # a filesystem without hard links: the name was free a moment ago
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(tmp, target)
    return True


def _write_through(name: str, data: bytes, seen: os.stat_result) -> None:
    """Open without O_CREAT/O_TRUNC and write: a FIFO's reader or a device gets the text. O_NONBLOCK
    on open: a FIFO without a reader is ENXIO at once, not a hang; then writes block as usual."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENXIO and stat.S_ISFIFO(seen.st_mode):
            raise OutputError(errno.ENXIO, "a FIFO with no reader: nothing would read the report") from None
        raise
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino):
            raise OutputError(errno.EAGAIN, "changed while opening it: not written")
        os.set_blocking(fd, True)
        _write_all(fd, data)
    finally:
        os.close(fd)


def _write_fd(name: str, data: bytes) -> None:
    number = _FD_NUMBER.get(name)
    fd = number if number is not None else int(name.rsplit("/", 1)[1])
    import sys

    for stream in (sys.stdout, sys.stderr):  # what Python buffered for this descriptor goes first
        try:
            if stream is not None and stream.fileno() == fd:
                stream.flush()
        except (OSError, ValueError):
            pass
    try:
        _write_all(fd, data)
    except OSError as exc:
        if exc.errno == errno.EBADF:
            raise OutputError(errno.EBADF, f"descriptor {fd} is not open for writing") from None
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"


def discard_into_devnull(fds: list[int]) -> None:
    """Point these descriptors (standard streams whose reader is gone: a closed terminal, a pipe
    nobody reads) at /dev/null, so what is still written there is dropped instead of failing.
    Not an output file: the one place gpunode opens /dev/null for writing."""
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in fds:
            os.dup2(null, fd)
    finally:
        os.close(null)


def discard_output() -> None:
    """The reader of stdout/stderr is gone (a closed terminal, a pipe nobody reads): what is
    still to be written, and the interpreter's last flush, go to /dev/null instead of failing, so
    that the command still ends with its own exit code."""
    import sys

    fds = []
    for stream in (sys.stdout, sys.stderr):
        try:
            fds.append(stream.fileno())
        except (ValueError, OSError, AttributeError):  # a detached stream: nothing left to write there
            pass
    discard_into_devnull(fds)
