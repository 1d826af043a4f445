"""Which diag backend runs here (torch only so far), imported only when asked: apart from the
backend protocol (diag/backend.py) so that the backend imports the protocol and this module
imports the backend, with no circle."""

from __future__ import annotations

from collections.abc import Callable

from gpunode.bench import discover as bench_discover
from gpunode.diag.backend import DiagBackend, Injector


def find_backend(prefer: str = "auto", injector: Injector | None = None,
                 importer: Callable | None = None) -> tuple[DiagBackend | None, str]:
    """-> (backend, "") or (None, why not). Only torch runs diag's kernels so far."""
    if prefer not in ("auto", "torch"):
        return None, f"diag backend {prefer!r}: only torch is implemented"
    found, why = bench_discover.find_backend("torch", **({"importer": importer} if importer else {}))
    if found is None:
        return None, why
    from gpunode.diag.backend_torch import TorchDiag

    return TorchDiag(found.torch, injector=injector), ""  # type: ignore[attr-defined]
