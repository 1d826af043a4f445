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
