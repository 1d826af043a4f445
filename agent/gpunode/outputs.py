"""How gpunode writes its documents: JSON text, timestamps, and files replaced atomically."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def write_atomic(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """tmp file in the same directory + fsync + rename: readers never see half a file."""
    import tempfile  # here, not at the top: the gate imports this module and never writes a file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"
