"""Standard streams that never crash a command on a character they cannot encode.

Kept free of heavy imports: `gpunode gate` (a Slurm prolog) calls it before its fast path."""

from __future__ import annotations

import sys


def tolerant_output() -> None:
    """A terminal or pipe that cannot encode a character (LANG=C, PYTHONIOENCODING=ascii) gets
    a `?` instead of a UnicodeEncodeError, which would crash a command after apply changed the host."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):  # a closed or detached stream: nothing to protect
                pass


def discard_output() -> None:
    """The terminal hung up (SIGHUP: the operator's ssh session closed): what is still to be
    written, and the interpreter's last flush, go to /dev/null instead of failing with EIO, so
    that the command still ends with its own exit code."""
    import os

    fd = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                os.dup2(fd, stream.fileno())
            except (ValueError, OSError):  # a detached stream: nothing left to write there
                pass
    finally:
        os.close(fd)
