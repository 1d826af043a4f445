"""Summaries of repeated measurements: median, min/max and coefficient of variation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from gpunode.bench.results import Spread


def median(values: Sequence[float]) -> float:
    if not values:
        raise ValueError("median of no values")
    return float(statistics.median(values))


def cov(values: Sequence[float]) -> float:
    """Sample standard deviation / mean; 0 for a single value (nothing to spread)."""
    if not values:
        raise ValueError("cov of no values")
    if len(values) == 1:
        return 0.0
    mean = statistics.fmean(values)
    if mean == 0:
        return 0.0 if all(v == 0 for v in values) else math.inf
    return float(statistics.stdev(values) / abs(mean))


def spread(values: Sequence[float], digits: int = 4) -> Spread:
    """The spread of per-repeat figures (already converted to the metric's unit)."""
    if not values:
        raise ValueError("spread of no values")
    bad = [v for v in values if not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite measurement {bad[0]!r}")
    return Spread(
        n=len(values),
        min=round(min(values), digits),
        max=round(max(values), digits),
        median=round(median(values), digits),
        cov=round(cov(values), 5),
    )
