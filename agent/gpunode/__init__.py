"""gpunode: audit, tune, benchmark and gate GPU servers."""

__version__ = "0.1.0"
