"""The node's own result history (SQLite in the state directory) and trends over it."""

from gpunode.history.record import record

__all__ = ["record"]
