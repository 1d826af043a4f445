"""Figures over time: a figure against this node's own recent median, and robust drift of a series.

Only trusted figures (no foreign process, throttling or new errors while measured) form the
median: one disturbed run must not move the yardstick. Drift uses the Theil-Sen slope (the
median of pairwise slopes, robust to a few bad runs) and the change from the first runs' median
to the last runs' median; both are relative to the series' median so that metrics in different
units compare.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gpunode.bench.results import comparable_conditions, lower_is_better, metric_status
from gpunode.status import PASS, SKIP, WARN

DEFAULT_LAST = 10  # runs that make "this node's recent median"
DEFAULT_WARN = 0.95  # a figure below 95 % of it is WARN
DEFAULT_MIN_RUNS = 3  # fewer earlier runs: no verdict


@dataclass(frozen=True)
class NodeVerdict:
    metric: str
    subject: str
    status: str  # PASS | WARN | SKIP
    message: str
    measured: float | None
    median: float | None
    runs: int
    ratio: float | None
    warn: float

    def to_json(self) -> dict:
        return asdict(self)


def ratio(value: float, reference: float, lower_better: bool) -> float | None:
    if value <= 0 or reference <= 0:
        return None
    return reference / value if lower_better else value / reference


def judge_against_history(doc: dict, earlier: list[tuple], last: int = DEFAULT_LAST, warn: float = DEFAULT_WARN,
                          min_runs: int = DEFAULT_MIN_RUNS) -> list[NodeVerdict]:
    """Each measured figure of `doc` (a bench document) against the median of the node's last
    `last` trusted figures of the same metric, GPU and conditions. `earlier`: (Entry, Figure)
    pairs of results older than this one, oldest first (Store.figures)."""
    series: dict[tuple, list[float]] = {}
    for _entry, f in earlier:
        if f.trusted:
            series.setdefault((f.name, f.gpu, f.unit, f.conditions), []).append(f.value)
    out = []
    for m in doc.get("metrics") or []:
        if not isinstance(m, dict) or metric_status(m.get("status")) != "PASS" or not isinstance(m.get("value"), (int, float)):
            continue
        values = series.get(_series_key(m), [])[-last:]
        out.append(_node_verdict(m, values, warn, min_runs))
    return out


def _series_key(m: dict) -> tuple:
    """(name, gpu, unit, conditions as stored) of a bench metric: its figures' series."""
    import json

    cond = json.dumps(comparable_conditions(m.get("conditions") or {}), sort_keys=True, default=str)
    return str(m["name"]), m.get("gpu"), str(m.get("unit") or ""), cond


def _node_verdict(m: dict, values: list[float], warn: float, min_runs: int) -> NodeVerdict:
    """One measured figure against the median of its earlier `values` on this node."""
    name, gpu, unit = str(m["name"]), m.get("gpu"), str(m.get("unit") or "")
    subject = f"GPU{gpu}" if gpu is not None else ""
    base: dict[str, Any] = {"metric": name, "subject": subject, "measured": float(m["value"]), "runs": len(values), "warn": warn}
    if len(values) < min_runs:
        return NodeVerdict(status=SKIP, median=None, ratio=None, **base,
                           message=f"{len(values)} earlier comparable run(s) on this node; {min_runs} needed")
    med = statistics.median(values)
    r = ratio(float(m["value"]), med, lower_is_better(name, unit))
    if r is None:
        return NodeVerdict(status=SKIP, median=med, ratio=None, **base, message="no usable ratio")
    status = PASS if r + 1e-9 >= warn else WARN
    word = "below" if r < 1 else "above"
    better = " (lower is better)" if lower_is_better(name, unit) else ""
    message = (f"{abs(1 - r):.1%} {word} this node's last {len(values)} runs (median {med:,.1f} {unit}){better}; "
               f"warn below {warn:.0%}")
    return NodeVerdict(status=status, median=round(med, 4), ratio=round(r, 4), message=message, **base)


def theil_sen(points: Sequence[tuple[float, float]]) -> float | None:
    """Median of the slopes between every pair of points with different x; None for < 2 such points."""
    slopes = []
    for i, (x1, y1) in enumerate(points):
        for x2, y2 in points[i + 1:]:
            if x2 != x1:
                slopes.append((y2 - y1) / (x2 - x1))
    return statistics.median(slopes) if slopes else None


@dataclass(frozen=True)
class Drift:
    runs: int
    median: float
    first: float  # median of the first `window` runs
    last: float  # median of the last `window` runs
    change: float  # (last - first) / median, signed; negative = got worse for a rate
    slope_per_day: float | None  # Theil-Sen, relative to the median, per day

    def to_json(self) -> dict:
        return asdict(self)


def drift(points: Sequence[tuple[float, float]], window: int = 3) -> Drift | None:
    """points: (epoch seconds, value), any order. None when there are fewer than 2*window points."""
    pts = sorted(points)
    if len(pts) < 2 * window:
        return None
    values = [v for _, v in pts]
    med = statistics.median(values)
    if med == 0:
        return None
    first, last = statistics.median(values[:window]), statistics.median(values[-window:])
    slope = theil_sen([(t / 86400.0, v) for t, v in pts])
    return Drift(len(pts), round(med, 6), round(first, 6), round(last, 6), round((last - first) / med, 5),
                 None if slope is None else round(slope / med, 6))
