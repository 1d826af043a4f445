"""Where gpunode keeps its state (journal, history, counters, the gate's parse cache), and the
one guard every command passes before it trusts anything there.

The state directory is input: root obeys its journals (they say which files to write, with
which bytes and modes, and which commands to run after). So a directory or file there is used
only when it is what gpunode made: a real directory or regular file (never a symlink, FIFO or
device), owned by the user running gpunode, and writable by nobody else. Anything else is
refused with one line naming the path and what is wrong; gpunode never repairs it (no chmod,
no chown: `--state-dir /tmp` must not take /tmp's sticky bit away). Checks are made on the
opened fd (O_NOFOLLOW, then fstat), never by stat and then open.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/gpunode"
STATE_ENV = "GPUNODE_STATE_DIR"
DIR_MODE = 0o700
FILE_MODE = 0o600
SYSROOTS = "sysroots"  # <state>/sysroots/<key>/: the state of applies made under --sysroot


class UntrustedState(RuntimeError):
    """A state directory or file gpunode will not use; the message is one line naming it."""


def resolve_state_dir(option: str | None, environ) -> Path:
    """--state-dir > $GPUNODE_STATE_DIR > /var/lib/gpunode."""
    return Path(option or environ.get(STATE_ENV) or DEFAULT_STATE_DIR)


def sysroot_home(state_dir: Path, sysroot: str) -> Path:
    """The state of applies made under `sysroot` (an absolute, resolved path): its own directory
    below the state dir, keyed by the root's path, so they never mix with the live host's."""
    import hashlib  # not at import: the gate reaches this module and hashlib loads OpenSSL

    key = hashlib.sha256(os.fsencode(sysroot)).hexdigest()[:16]
    return state_dir / SYSROOTS / key


def _problem(info: os.stat_result, want_dir: bool) -> str | None:
    """What makes an opened entry untrustworthy, or None."""
    if want_dir and not stat.S_ISDIR(info.st_mode):
        return f"not a directory ({_kind(info.st_mode)})"
    if not want_dir and not stat.S_ISREG(info.st_mode):
        return f"not a regular file ({_kind(info.st_mode)})"
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not by uid {os.geteuid()} running gpunode"
    if info.st_mode & 0o022:
        who = "group and others" if info.st_mode & 0o022 == 0o022 else "group" if info.st_mode & 0o020 else "others"
        return f"writable by {who} (mode {stat.S_IMODE(info.st_mode):04o})"
    return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISREG, "a regular file"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "an unknown file type"


def _refuse(path, why: str) -> UntrustedState:
    return UntrustedState(f"{path}: {why}; refusing to use it as gpunode state (nothing was changed; gpunode "
                          f"never repairs its state directory: move it away or pass another --state-dir)")


def _open_error(path, exc: OSError, want_dir: bool) -> UntrustedState:
    """Why an open refused (ELOOP: a symlink; ENOTDIR, ENXIO, EISDIR: the wrong file type),
    named from lstat for the message only: the refusal itself came from the open."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return UntrustedState(f"{path}: cannot open: {exc.strerror or exc}")
    if stat.S_ISLNK(mode):
        return _refuse(path, "a symlink")
    if exc.errno in (errno.ENOTDIR, errno.ENXIO, errno.EISDIR):
        return _refuse(path, f"not a {'directory' if want_dir else 'regular file'} ({_kind(mode)})")
    return UntrustedState(f"{path}: cannot open: {exc.strerror or exc}")


def check_dir(path: str | os.PathLike, create: bool = False) -> bool:
    """The guard for a directory of gpunode's state. -> True when it is there and trusted,
    False when it is missing (and not `create`); raises UntrustedState otherwise. `create`
    makes a missing one 0700 (its missing parents with the usual mode); an existing directory's
    mode is never changed."""
    if create:
        try:
            parent = os.path.dirname(os.path.abspath(path))
            os.makedirs(parent, exist_ok=True)
            os.mkdir(path, DIR_MODE)
        except FileExistsError:
            pass
        except OSError as exc:
            raise UntrustedState(f"{path}: cannot create the state directory: {exc.strerror or exc}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _open_error(path, exc, want_dir=True) from None
    try:
        why = _problem(os.fstat(fd), want_dir=True)
    finally:
        os.close(fd)
    if why:
        raise _refuse(path, why)
    return True


def dir_trusted(path: str | os.PathLike, create: bool = False) -> bool:
    """check_dir for callers to whom an untrusted directory is only a miss (the gate's cache)."""
    try:
        return check_dir(path, create)
    except UntrustedState:
        return False


def open_file(path: str | os.PathLike, flags: int = os.O_RDONLY, create_mode: int | None = None) -> int:
    """The guard for a file of gpunode's state: open it without following a link or blocking
    on a FIFO, then judge the opened fd. -> the fd (the caller closes it); FileNotFoundError
    when missing (and not created); UntrustedState otherwise."""
    flags |= os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
    if create_mode is not None:
        flags |= os.O_CREAT
    try:
        fd = os.open(path, flags, FILE_MODE if create_mode is None else create_mode)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise _open_error(path, exc, want_dir=False) from None
    try:
        why = _problem(os.fstat(fd), want_dir=False)
    except BaseException:
        os.close(fd)
        raise
    if why:
        os.close(fd)
        raise _refuse(path, why)
    return fd


def read_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """A state file's bytes through the guard and the bounded reader (size bound, regular files only)."""
    from gpunode.inputs import InputError, read_fd

    fd = open_file(path)
    try:
        return read_fd(fd, max_bytes, path)
    except InputError as exc:
        raise UntrustedState(str(exc)) from None
    finally:
        os.close(fd)
