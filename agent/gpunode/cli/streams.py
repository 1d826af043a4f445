"""Standard streams that never crash a command on a character they cannot encode.

Kept free of heavy imports: `gpunode gate` (a Slurm prolog) calls it before its fast path."""

from __future__ import annotations

import errno
import os
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


def output_gone(exc: OSError, hung_up: bool) -> bool:
    """Whether a failed write means the reader went away: a pipe nobody reads any more (EPIPE:
    `ssh host gpunode ...` without a terminal, the client gone) or, once a signal said the
    terminal hung up, that terminal (EIO). A command that changed the host then drops its report
    (discard_output) and keeps its exit code; any other write error is still an error."""
    return exc.errno == errno.EPIPE or (hung_up and exc.errno == errno.EIO)


def raise_broken_pipe(console):
    """rich ends the process with exit 1 when its pipe's reader is gone: for a command whose exit
    code says what it did to the host, let the BrokenPipeError reach it instead (output_gone)."""

    def broken_pipe() -> None:
        console.quiet = True  # nothing more to this pipe
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    console.on_broken_pipe = broken_pipe
    return console

