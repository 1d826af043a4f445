"""`gpunode bench` commands (being built; see the issue for this area)."""

from __future__ import annotations


def register(app) -> None:
    return None
