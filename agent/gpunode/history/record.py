"""record(): the one call with which bench, diag and audit keep their result in the node's history.

It never raises: a history that cannot be written (no permission, a damaged or foreign file)
must not turn a good bench or audit into a failure. It returns a one-line warning instead, which
the caller prints to stderr.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter
from collections.abc import Mapping

from gpunode.bench import trust
from gpunode.bench.results import comparable_conditions, metric_status
from gpunode.history.store import DEFAULT_KEEP, Figure, HistoryError, Store, history_path


def state_dir_of(state_dir: str | None, environ: Mapping[str, str] | None = None) -> str:
    from gpunode.state_dir import resolve_state_dir

    return str(resolve_state_dir(state_dir, dict(os.environ if environ is None else environ)))


def figures_of(doc: dict) -> list[Figure]:
    """The measured figures of a bench or diag document (metrics with status PASS, once ok, and a number)."""
    out = []
    for m in doc.get("metrics") or []:
        if not isinstance(m, dict) or metric_status(m.get("status")) != "PASS":
            continue
        value = m.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        gpu = m.get("gpu") if isinstance(m.get("gpu"), int) else None
        raw = m.get("conditions")
        cond = comparable_conditions(raw if isinstance(raw, dict) else {})
        spread_raw = m.get("spread")
        spread: dict = spread_raw if isinstance(spread_raw, dict) else {}
        cov = spread.get("cov") if isinstance(spread.get("cov"), (int, float)) else None
        tel = m.get("telemetry") if isinstance(m.get("telemetry"), dict) else None
        out.append(Figure(str(m.get("name")), gpu, float(value), str(m.get("unit") or ""),
                          json.dumps(cond, sort_keys=True, default=str), cov,
                          not trust.untrusted(trust.concerns(tel, None))))
    return out


def summary_of(doc: dict) -> str:
    """One short line: the counts of a result's statuses."""
    summary = doc.get("summary")
    if isinstance(summary, dict):
        return ", ".join(f"{n} {s}" for s, n in summary.items() if isinstance(n, int) and n)
    metrics = [m for m in doc.get("metrics") or [] if isinstance(m, dict)]
    counts = Counter(str(m.get("status")) for m in metrics)
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def record(kind: str, doc: dict, state_dir: str | None = None, environ: Mapping[str, str] | None = None,
           now: float | None = None, keep: int = DEFAULT_KEEP) -> str | None:
    """Keep `doc` (a bench, diag or audit document) in the history; -> None, or why it was not kept."""
    try:
        root = state_dir_of(state_dir, environ)
        when = now if now is not None else time.time()
        epoch = doc.get("time_epoch")
        epoch = float(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else when
        with Store.open(history_path(root)) as store:
            store.add(kind, doc, str(doc.get("host") or ""), epoch, str(doc.get("time") or ""),
                      str(doc.get("status") or ""), summary_of(doc), figures_of(doc))
            store.prune(when, keep=keep)
        return None
    except HistoryError as exc:
        return f"result not kept in the history: {exc}"
    except (OSError, ValueError) as exc:
        return f"result not kept in the history ({state_dir or 'state dir'}): {getattr(exc, 'strerror', None) or exc}"
    except Exception as exc:  # noqa: BLE001 - the history must never fail the command that measured
        return f"result not kept in the history: {type(exc).__name__}: {exc}"
