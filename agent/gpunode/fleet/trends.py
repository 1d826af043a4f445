"""Trends across the fleet from each node's exported history (gpunode.history-export/1): per SKU
and metric the distribution of the hosts' current figures, and the hosts drifting down over time.

A host's current figure is the median of its last runs (one odd run does not move it). A host
drifts down when the median of its last runs is worse than the median of its first runs by more
than a threshold AND by more than `k` times the SKU's spread (so a noisy metric needs a bigger
drop), and its Theil-Sen slope points the same way. Only trusted figures count (no foreign process
or throttling while measured). Each GPU is its own series; a host is as bad as its worst GPU.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from typing import Any

from gpunode.bench.results import lower_is_better
from gpunode.history.trend import drift
from gpunode.host.gpu.model import gpu_label

TRENDS_SCHEMA = "gpunode.trends/1"
EXPORT_SCHEMA = "gpunode.history-export/1"
DEFAULT_WINDOW = 3  # runs in "first" and "last"
DEFAULT_MIN_DROP = 0.03  # a drift below 3 % is not reported whatever the spread
DEFAULT_K = 3.0  # ... and it must exceed 3 robust standard deviations of the SKU's hosts
MAX_POINTS = 60  # per series kept for plots


@dataclass(frozen=True)
class Settings:
    window: int = DEFAULT_WINDOW
    min_drop: float = DEFAULT_MIN_DROP
    k: float = DEFAULT_K


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def robust_spread(values: list[float]) -> float:
    """1.4826 x MAD / median: a standard deviation, relative, that a few bad hosts do not inflate."""
    med = statistics.median(values)
    if med == 0 or len(values) < 2:
        return 0.0
    mad = statistics.median(abs(v - med) for v in values)
    return 1.4826 * mad / abs(med)


def thin(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[list[float]]:
    """At most `limit` points, evenly spaced over the series, first and last kept."""
    if len(points) <= limit:
        return [[round(t, 1), v] for t, v in points]
    step = (len(points) - 1) / (limit - 1)
    return [[round(points[round(i * step)][0], 1), points[round(i * step)][1]] for i in range(limit)]


def collect(exports: list[tuple[str, str, dict]]) -> dict[tuple, dict[str, list[tuple[float, float]]]]:
    """(host, sku, export) -> {(sku, metric, unit, conditions): {"host" or "host:GPUn": points}}."""
    groups: dict[tuple, dict[str, list[tuple[float, float]]]] = {}
    for host, sku, doc in exports:
        for t, f in _trusted_figures(doc):
            cond = json.dumps(f.get("conditions") or {}, sort_keys=True, default=str)
            key = (sku, str(f.get("name")), str(f.get("unit") or ""), cond)
            label = host if f.get("gpu") is None else f"{host}:{gpu_label(f['gpu'])}"
            groups.setdefault(key, {}).setdefault(label, []).append((float(t), float(f["value"])))
    return groups


def _trusted_figures(doc) -> list[tuple[float, dict]]:
    """(run time, figure) for each usable figure of an export; a node's file: any shape may come back."""
    runs = doc.get("runs") if isinstance(doc, dict) else None
    found = []
    for run in runs if isinstance(runs, list) else []:
        t = run.get("time_epoch") if isinstance(run, dict) else None
        if not _is_number(t):
            continue
        figures = run.get("figures")
        found += [(t, f) for f in (figures if isinstance(figures, list) else []) if _usable(f)]
    return found


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _usable(f) -> bool:
    """A figure measured without interference, with a finite value, dict conditions and an int GPU."""
    if not isinstance(f, dict) or not isinstance(f.get("conditions") or {}, dict):
        return False
    value = f.get("value")
    return (bool(f.get("trusted", True)) and _is_number(value) and math.isfinite(value)
            and isinstance(f.get("gpu"), (int, type(None))))


def metric_trend(key: tuple, series: dict[str, list[tuple[float, float]]], s: Settings) -> dict:
    sku, name, unit, cond = key
    lower = lower_is_better(name, unit)
    current: dict[str, float] = {}
    for label, pts in series.items():
        pts.sort()
        current[label] = statistics.median(v for _, v in pts[-s.window:])
    values = sorted(current.values())
    spread = robust_spread(values)
    threshold = max(s.min_drop, s.k * spread)
    drifting: list[dict[str, Any]] = []
    for label, pts in series.items():
        d = drift(pts, s.window)
        if d is None:
            continue
        worse = -d.change if not lower else d.change  # > 0: got worse
        slope_worse = d.slope_per_day is not None and (d.slope_per_day > 0 if lower else d.slope_per_day < 0)
        if worse > threshold and slope_worse:
            host, _, gpu = label.partition(":")
            drifting.append({"host": host, "series": label, "gpu": int(gpu.removeprefix("GPU")) if gpu else None,
                             "first": d.first, "last": d.last, "change": d.change, "worse_by": round(worse, 5),
                             "slope_per_day": d.slope_per_day, "runs": d.runs})
    drifting.sort(key=lambda x: -x["worse_by"])
    hosts = sorted({label.partition(":")[0] for label in series})
    return {
        "sku": sku, "metric": name, "unit": unit, "conditions": json.loads(cond), "lower_is_better": lower,
        "hosts": len(hosts), "series": len(series),
        "distribution": {"min": values[0], "p10": round(quantile(values, 0.1), 4),
                         "median": round(statistics.median(values), 4), "p90": round(quantile(values, 0.9), 4),
                         "max": values[-1]},
        "spread": round(spread, 5), "threshold": round(threshold, 5),
        "drifting": drifting,
        "current": {label: round(v, 4) for label, v in sorted(current.items())},
        "points": {label: thin(pts) for label, pts in sorted(series.items())},
    }


def trends(exports: list[tuple[str, str, dict]], settings: Settings | None = None) -> dict:
    """The trend section of a fleet report from (host, sku, export document) triples."""
    s = settings or Settings()
    rows = [metric_trend(key, series, s) for key, series in sorted(collect(exports).items())]
    drifting_hosts = sorted({d["host"] for r in rows for d in r["drifting"]})
    return {"schema": TRENDS_SCHEMA, "window": s.window, "min_drop": s.min_drop, "k": s.k,
            "metrics": rows, "drifting_hosts": drifting_hosts}


def exports_of(hosts) -> list[tuple[str, str, dict]]:
    """The history exports among a fleet run's host reports (fleet.report.HostReport)."""
    return [(h.host, h.sku, h.doc) for h in hosts if h.doc and h.doc.get("schema") == EXPORT_SCHEMA]
