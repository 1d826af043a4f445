"""A host's own baseline from repeated bench runs: the median of each metric and, as the warn and
fail margins, the spread that was observed (never tighter than a floor per metric family).

Margins: `drop` is the larger of the worst shortfall of a single figure against the median (over
runs and GPUs) and the largest within-run coefficient of variation of the repeats. warn margin =
max(floor_warn, 2 x drop), fail margin = max(floor_fail, 2 x warn margin), so a figure as bad as
the worst seen while recording still PASSes, and one twice as far out WARNs.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from fnmatch import fnmatchcase
from typing import Any

import yaml

from gpunode.baselines.schema import NAME, SCHEMA, BaselineError, family_unit
from gpunode.bench.trust import DEFAULT_MAX_COV

# (warn margin floor, fail margin floor) per family: storage varies more with fill and caches.
FLOORS: tuple[tuple[str, tuple[float, float]], ...] = (
    ("fio.*", (0.10, 0.25)),
    ("*", (0.05, 0.10)),
)
MAX_WARN_MARGIN = 0.5
MAX_FAIL_MARGIN = 0.8
# Conditions that describe how a figure was taken, not what was measured: never pinned.
NOT_PINNED = frozenset({
    "aggregate", "note", "placement", "binding", "numa_node", "purpose", "output", "backend",
    "flops_per_gemm", "iters", "iters_per_batch", "warmup", "check", "min_bytes", "max_bytes",
})
_GLOB_CHARS = re.compile(r"[*?\[\]]")


def floors(metric: str) -> tuple[float, float]:
    return next(f for pattern, f in FLOORS if fnmatchcase(metric, pattern))


def margins(values: Sequence[float], better: str, cov: float | None, metric: str) -> tuple[float, float]:
    """-> (warn ratio, fail ratio) from the observed figures of one metric."""
    median = statistics.median(values)
    drop = cov or 0.0  # within a run: the repeats' coefficient of variation
    if len(values) >= 2 and median > 0:
        worst = min(values) if better == "higher" else max(values)
        drop = max(drop, abs(median - worst) / median)  # between runs and GPUs
    floor_warn, floor_fail = floors(metric)
    warn_margin = min(MAX_WARN_MARGIN, max(floor_warn, 2 * drop))
    fail_margin = min(MAX_FAIL_MARGIN, max(floor_fail, 2 * warn_margin))
    # Round outwards (towards wider margins) so that the recorded figures themselves PASS.
    return _floor3(1 - warn_margin), _floor3(1 - fail_margin)


def _floor3(x: float) -> float:
    return math.floor(x * 1000 + 1e-9) / 1000  # 1e-9: (1 - 0.8) * 1000 is 199.99999999999997


def pinned_conditions(samples: list[dict]) -> dict[str, Any]:
    """The conditions every sample shares, minus the descriptive ones; `algo env` is flattened
    to `algo env.NAME` entries and an empty one pins NCCL_ALGO as unset."""
    flat = [_flatten(s) for s in samples]
    common = dict(flat[0])
    for other in flat[1:]:
        common = {k: v for k, v in common.items() if k in other and other[k] == v}
    return dict(sorted(common.items()))


def _flatten(conditions: dict) -> dict:
    out = {}
    for key, value in conditions.items():
        if key in NOT_PINNED:
            continue
        if key == "algo env" and isinstance(value, dict):
            out.update({f"algo env.{k}": v for k, v in value.items() if isinstance(v, (str, int, float))})
            out.setdefault("algo env.NCCL_ALGO", None)
        elif value is None or isinstance(value, (str, int, float, bool)):
            out[key] = value
    return out


def build_baseline(docs: list[dict], name: str, description: str | None = None) -> tuple[dict, list[str]]:
    """Bench result documents (one per run) -> (a baseline mapping ready for YAML, notes on what
    was left out)."""
    from gpunode.bench.results import BenchDocument

    if not NAME.fullmatch(name):
        raise BaselineError(f"--name {name!r}: use letters, digits, '.', '_', '-'")
    if not docs:
        raise BaselineError("no bench runs to record from")
    benches = [BenchDocument.from_json(d) for d in docs]
    groups, notes = _recordable(benches)
    if not groups:
        raise BaselineError("no metric was measured successfully; nothing to record")
    first = benches[0]
    when = first.time or datetime.now(timezone.utc).isoformat(timespec="seconds")
    runs = len(benches)
    metrics = {}
    for metric_name, samples in groups.items():
        metrics[metric_name], note = _metric_entry(metric_name, samples, first, when, runs)
        notes += [note] if note else []
    mapping: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name,
        "description": description or f"{first.host}'s own baseline: {runs} run(s) of gpunode bench --{first.mode}",
        "recorded": {
            "host": first.host,
            "time": when,
            "runs": runs,
            "mode": first.mode,
            "gpunode_version": first.gpunode_version,
            "tools": dict(first.tools),
        },
    }
    match = match_for(first.gpus)
    if match:
        mapping["match"] = match
    else:
        notes.append("no GPU identity in the results: the baseline has no `match` and is used only by --baseline")
    mapping["metrics"] = metrics
    return mapping, notes


def _recordable(benches: list) -> tuple[dict[str, list], list[str]]:
    """The figures worth recording, by metric name, and a note for each one left out."""
    notes: list[str] = []
    groups: dict[str, list] = {}
    for m in (m for bench in benches for m in bench.metrics):
        note, once = _left_out(m)
        if not note:
            groups.setdefault(m.name, []).append(m)
        elif not (once and note in notes):
            notes.append(note)
    return groups, notes


def _left_out(m) -> tuple[str, bool]:
    """Why a figure is not recorded ("": it is), and whether that note is said once for all runs."""
    if m.status != "PASS" or m.value is None:
        return f"{m.name}{'' if m.gpu is None else f' GPU{m.gpu}'}: {m.status} ({m.message}), not recorded", False
    purpose = str(m.conditions.get("purpose") or "")
    if purpose.startswith("information"):  # pageable copies: reported, never judged
        return f"{m.name}: {purpose}, not recorded", True
    if family_unit(m.name) != m.unit:
        return f"{m.name}: no baseline family for this metric/unit ({m.unit}), not recorded", False
    return "", False


def _metric_entry(metric_name: str, samples: list, first, when: str, runs: int) -> tuple[dict[str, Any], str]:
    """One metric's baseline entry from its recorded figures, and a note if its runs spread widely."""
    unit = samples[0].unit
    better = "lower" if unit == "us" else "higher"
    values = [m.value for m in samples]
    covs = [m.spread.cov for m in samples if m.spread is not None]
    warn, fail = margins(values, better, max(covs) if covs else None, metric_name)
    entry: dict[str, Any] = {"value": _round(statistics.median(values)), "unit": unit}
    if better == "lower":
        entry["better"] = "lower"
    entry.update({"warn": warn, "fail": fail})
    note = ""
    if covs and max(covs) > DEFAULT_MAX_COV:  # never call the recorded runs themselves unstable
        entry["max_cov"] = round(max(covs) * 1.25, 3)
        note = (f"{metric_name}: the recorded runs spread up to CoV {max(covs):.1%}: "
                f"its stability bound is {entry['max_cov']:.1%} (default {DEFAULT_MAX_COV:.0%})")
    conditions = pinned_conditions([m.conditions for m in samples])
    if conditions:
        entry["conditions"] = conditions
    entry["basis"] = "recorded"
    gpus = sorted({m.gpu for m in samples if m.gpu is not None})
    over = f"{runs} run(s)" + (f" x {len(gpus)} GPU(s)" if gpus else "")
    entry["source"] = (
        f"recorded on {first.host} {when}: median of {len(values)} figures ({over}) of gpunode bench "
        f"--{first.mode}, observed {_round(min(values))}..{_round(max(values))} {unit}"
    )
    return entry, note


def match_for(gpus: dict) -> dict | None:
    """Exactly this hardware: the GPU model name(s), PCI device id(s) and count."""
    devices = gpus.get("devices") or []
    if not gpus.get("available") or not devices:
        return None
    names = sorted({str(d.get("name")) for d in devices if d.get("name")})
    pci = sorted({str(d.get("pci_device")) for d in devices if d.get("pci_device")})
    match: dict[str, Any] = {}
    if names and not any(_GLOB_CHARS.search(n) for n in names):
        match["gpu_name"] = names[0] if len(names) == 1 else names
    elif names:
        match["gpu_name_regex"] = [re.escape(n) for n in names]
    if pci:
        match["pci_device"] = pci
    match["gpu_count"] = int(gpus.get("count", len(devices)))
    return match


def _round(value: float) -> float:
    """Four significant digits: the run-to-run noise is far larger than that."""
    if value == 0:
        return 0.0
    digits = 3 - int(math.floor(math.log10(abs(value))))
    return round(value, max(digits, 0))


def to_yaml(mapping: dict) -> str:
    header = (
        "# A host's own gpunode baseline, written by `gpunode baseline record` (see docs/baselines.md).\n"
        "# Keep it in a site baselines directory (--baselines DIR or config baselines_dir).\n"
    )
    return header + yaml.safe_dump(mapping, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)


def record_runs(run_once: Callable[[int], dict], runs: int) -> list[dict]:
    """Run the bench `runs` times (run_once(i) -> a bench result document)."""
    if runs < 1:
        raise BaselineError(f"--runs must be at least 1 (got {runs})")
    return [run_once(i) for i in range(runs)]
