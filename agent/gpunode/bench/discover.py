"""Which GPU backend bench can use here: torch first, then CuPy, each imported only when asked
(the heavy border), with the reason and an install hint when none works. Apart from the protocol
(bench/backend.py) so that the backends import the protocol and this module imports them: no circle."""

from __future__ import annotations

import importlib

from gpunode.bench.backend import INSTALL_HINT, Backend


def _importable(module: str) -> tuple[object | None, str | None]:
    """-> (module, None), or (None, None) when not installed, or (None, why) when it is broken."""
    try:
        return importlib.import_module(module), None
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return None, None
        return None, f"import {module} failed: {exc}"
    except Exception as exc:  # noqa: BLE001 - a broken install is reported, not raised
        return None, f"import {module} failed: {type(exc).__name__}: {exc}"


def find_backend(prefer: str = "auto", importer=_importable) -> tuple[Backend | None, str]:
    """-> (backend, "") or (None, why not, with an install hint)."""
    if prefer not in ("auto", "torch", "cupy"):
        raise ValueError(f"backend {prefer!r}: choose auto, torch or cupy")
    order = ["torch", "cupy"] if prefer == "auto" else [prefer]
    reasons = []
    imported_any = False
    for name in order:
        module, why = importer(name)
        if module is None:
            if why:
                reasons.append(why)
            continue
        imported_any = True
        if name == "torch":
            from gpunode.bench.backend_torch import TorchBackend

            backend: Backend = TorchBackend(module)
        else:
            from gpunode.bench.backend_cupy import CupyBackend

            backend = CupyBackend(module)
        unusable = backend.unusable()
        if unusable:
            reasons.append(unusable)
            continue
        return backend, ""
    if not imported_any:
        return None, INSTALL_HINT + (f" ({'; '.join(reasons)})" if reasons else "")
    return None, "; ".join(reasons)
