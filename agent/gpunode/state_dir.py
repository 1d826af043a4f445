"""Where gpunode keeps its state (journal, history, counters, the gate's parse cache)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_STATE_DIR = "/var/lib/gpunode"
STATE_ENV = "GPUNODE_STATE_DIR"


def resolve_state_dir(option: str | None, environ) -> Path:
    """--state-dir > $GPUNODE_STATE_DIR > /var/lib/gpunode."""
    return Path(option or environ.get(STATE_ENV) or DEFAULT_STATE_DIR)
