"""The watcher's memory across restarts: each GPU's remediations (by serial, for escalation)
and whether a drain of ours stands. One JSON file in the state dir (watch-memory.json, 0600),
read and written through the state-dir guard; a damaged file is refused with one line, never
trusted in part (a lemon must not be forgotten by a half-read file).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from gpunode.state_dir import UntrustedState, check_dir, read_file
from gpunode.watch.events import PolicyState

SCHEMA = "gpunode.watch-memory/1"
FILE = "watch-memory.json"
MAX_BYTES = 1 << 20
KEEP_S = 90 * 86400.0  # remediations older than this say nothing about a lemon any more


class WatchMemoryError(RuntimeError):
    """watch-memory.json cannot be used; the message is one line naming it."""


def memory_path(state_dir: str | os.PathLike) -> Path:
    return Path(state_dir) / FILE


def load(state_dir: str | os.PathLike) -> PolicyState:
    """The remembered state; an empty one when nothing was kept yet."""
    path = memory_path(state_dir)
    try:
        data = json.loads(read_file(path, MAX_BYTES))
    except FileNotFoundError:
        return PolicyState()
    except (UntrustedState, OSError) as exc:
        raise WatchMemoryError(f"{path}: {getattr(exc, 'strerror', None) or exc}") from None
    except ValueError as exc:
        raise WatchMemoryError(f"{path}: not JSON ({exc})") from None
    try:
        return _parse(data)
    except ValueError as exc:
        raise WatchMemoryError(f"{path}: {exc}") from None


def _parse(data) -> PolicyState:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"not a {SCHEMA} document")
    drained = data.get("drained_by_us", False)
    rows = data.get("remediations", [])
    if not isinstance(drained, bool) or not isinstance(rows, list):
        raise ValueError("drained_by_us must be true/false and remediations a list")
    remediations = []
    for row in rows:
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str) and isinstance(row[2], str)
                and isinstance(row[1], (int, float)) and not isinstance(row[1], bool) and math.isfinite(row[1])):
            raise ValueError(f"remediation {row!r} is not [serial, time, action]")
        remediations.append((row[0], float(row[1]), row[2]))
    return PolicyState(drained_by_us=drained, remediations=remediations)


def save(state_dir: str | os.PathLike, state: PolicyState, now: float) -> None:
    """Keep the remediations of the last KEEP_S and the drain flag (atomically, 0600)."""
    from gpunode.outputs import write_atomic

    path = memory_path(state_dir)
    rows = [[s, t, a] for s, t, a in state.remediations if t >= now - KEEP_S]
    doc = {"schema": SCHEMA, "drained_by_us": state.drained_by_us, "remediations": rows}
    try:
        check_dir(path.parent, create=True)  # never chmod'ed: an untrusted directory is refused
        write_atomic(path, json.dumps(doc, indent=1) + "\n", mode=0o600)
    except (OSError, UntrustedState) as exc:
        raise WatchMemoryError(f"cannot keep the watcher's memory in {path}: {getattr(exc, 'strerror', None) or exc}") from None
