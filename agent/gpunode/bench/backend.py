"""The GPU array library the microbenchmarks run on: torch or cupy, whichever is installed.

Neither is a dependency of gpunode. A backend offers a few primitives (make a GEMM or a copy,
time a batch of it with CUDA events); micro.py owns the measuring protocol, so both backends
are measured the same way and tests can drive the protocol with a fake backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

INSTALL_HINT = (
    "neither PyTorch nor CuPy is installed in gpunode's Python: `pip install torch` "
    "(or cupy-cuda12x / cupy-cuda13x, matching the driver's CUDA)"
)
GEMM_DTYPES = ("bf16", "fp16", "tf32", "fp8")


@dataclass(frozen=True)
class Device:
    index: int  # the backend's CUDA ordinal
    name: str
    bdf: str | None  # PCI address in sysfs form (0000:18:00.0)
    capability: tuple[int, int]
    memory_bytes: int


class Op:
    """One enqueued operation (a GEMM, a copy): call it to enqueue, close() to free its buffers."""

    def __init__(self, run: Callable[[], object], close: Callable[[], None] | None = None, **conditions):
        self._run = run
        self._close = close
        self.conditions = conditions  # what the backend chose (e.g. fp8 scaling), for the report

    def __call__(self) -> None:
        self._run()

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


class Backend(Protocol):
    name: str

    def unusable(self) -> str | None:
        """Why this backend cannot run here (no CUDA device, CPU-only build), or None."""
        ...

    def versions(self) -> dict[str, str]: ...

    def devices(self) -> list[Device]: ...

    def gemm_unsupported(self, device: Device, dtype: str) -> str | None: ...

    def gemm(self, device: Device, dtype: str, m: int, n: int, k: int) -> Op: ...

    def copy(self, kind: str, device: Device, nbytes: int, peer: Device | None = None) -> Op: ...

    def can_access_peer(self, src: Device, dst: Device) -> bool: ...

    def time(self, device: Device, op: Op, iters: int) -> float:
        """Seconds for `iters` calls of op on the device's current stream, by CUDA events."""
        ...

    def release(self) -> None: ...
