"""Verdicts: a bench result (gpunode.bench/1) judged against a baseline, metric by metric.

ratio = measured / expected (expected / measured where lower is better);
ratio >= warn -> PASS, fail <= ratio < warn -> WARN, ratio < fail -> FAIL. A metric the bench
itself marked fail/error is FAIL/ERROR whatever its figure. A metric measured under other
conditions than the baseline states (size, dtype, test, GPU count) is not compared, and says why.
Overall as in audit: any FAIL -> FAIL (2), else any ERROR -> UNKNOWN (3), else any WARN -> WARN (1),
else OK (0) — and UNKNOWN when nothing at all could be compared.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from gpunode.audit.engine import EXIT_CODES
from gpunode.baselines.schema import Baseline, BaselineError, Expectation
from gpunode.baselines.select import Catalogue, NoBaselineError, Selection, site_dirs
from gpunode.layout import show_table
from gpunode.status import ERROR, FAIL, PASS, RANK, SKIP, STYLE, WARN  # SKIP: not compared

COMPARE_SCHEMA = "gpunode.compare/1"
# A figure the baseline holds no number for: said in its row, but not a failed comparison.
NO_FIGURE = "nothing to compare: the baseline has no figure for this metric"
# Ratios are compared with this slack so that a figure exactly at a threshold is not pushed
# below it by binary floating point (0.9 * 796 / 796 == 0.8999999999999999).
EPSILON = 1e-9


@dataclass(frozen=True)
class Verdict:
    metric: str
    subject: str  # GPU0, or "" for node-wide metrics
    status: str  # PASS WARN FAIL ERROR SKIP
    message: str
    measured: float | None = None
    expected: float | None = None
    unit: str = ""
    ratio: float | None = None
    warn: float | None = None
    fail: float | None = None
    baseline_key: str | None = None
    source: str = ""
    peak_ratio: float | None = None  # measured / the datasheet peak the baseline cites
    concerns: tuple[str, ...] = ()  # why the figure is doubtful (bench/trust.py)
    topology_expected: float | None = None  # what the host's links say it should be (gpunode expect)
    topology_note: str = ""  # beside a baseline's verdict: the figure is below the links' expectation


@dataclass
class Verdicts:
    baseline: str
    baseline_file: str
    origin: str
    reason: str
    host: str
    mode: str
    rows: list[Verdict] = field(default_factory=list)

    @property
    def status(self) -> str:
        found = {r.status for r in self.rows}
        if FAIL in found:
            return "FAIL"
        if ERROR in found:
            return "UNKNOWN"
        if WARN in found:
            return "WARN"
        if PASS in found:
            return "OK"
        return "UNKNOWN"  # nothing was compared: no verdict, not a clean bill of health

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    @property
    def compared(self) -> bool:
        """Whether anything was up for comparison: rows of figures the baseline has no number
        for are not (a run of them alone has nothing to compare, which is not a failure)."""
        return any(not (r.status == SKIP and r.message == NO_FIGURE) for r in self.rows)

    def summary(self) -> dict[str, int]:
        counts = Counter(r.status for r in self.rows)
        return {s: counts.get(s, 0) for s in (PASS, WARN, FAIL, ERROR, SKIP)}

    def to_json(self) -> dict:
        return {
            "schema": COMPARE_SCHEMA,
            "host": self.host,
            "mode": self.mode,
            "baseline": self.baseline,
            "baseline_file": self.baseline_file,
            "baseline_origin": self.origin,
            "selected": self.reason,
            "status": self.status,
            "exit_code": self.exit_code,
            "summary": self.summary(),
            "verdicts": [asdict(r) for r in self.rows],
        }


def compare(bench, catalogue: Catalogue, baseline: str | os.PathLike | None = None, force: bool = False) -> Verdicts:
    """The one comparison: `gpunode compare FILE` and `gpunode bench --compare` both call it.
    bench: a BenchDocument; baseline: a name or file, else chosen from the bench's GPUs; a named
    one made for other hardware is refused unless `force` (--force-baseline).
    Raises NoBaselineError (nothing matches this hardware), BaselineError (bad file, mismatch)."""
    if baseline is not None and str(baseline) == TOPOLOGY_BASELINE:
        if not bench.topology:
            raise BaselineError("--baseline topology: this result records no topology expectations (made by a "
                                "gpunode before they were recorded, or the host's PCI tree could not be read)")
        return judge_topology(bench, "--baseline topology")
    if baseline is not None:
        selection = catalogue.resolve(str(baseline), gpus=bench.gpus, force=force)
    else:
        try:
            selection = catalogue.select(bench.gpus)
        except NoBaselineError as exc:
            if not bench.topology:
                raise
            return judge_topology(bench, str(exc).split(";", 1)[0])
    return beside_topology(judge(bench, selection), bench)


# An expectation from the links is accurate to about +-10 % on recorded healthy hosts
# (tests/test_topology.py): below 0.90 is worth a look, below 0.80 is broken.
TOPOLOGY_WARN, TOPOLOGY_FAIL = 0.90, 0.80
TOPOLOGY_BASELINE = "topology"


def _topology_index(bench) -> dict[tuple[str, int | None], dict]:
    return {(e["metric"], e["gpu"]): e for e in bench.topology}


def _topology_expectation(entry: dict) -> Expectation:
    return Expectation(key=f"topology:{entry['metric']}", metric=entry["metric"], value=entry["value"],
                       unit=entry["unit"], better="higher", warn=TOPOLOGY_WARN, fail=TOPOLOGY_FAIL, conditions={},
                       source=entry["arithmetic"], max_cov=entry.get("max_cov"))


def _limit_note(entry: dict) -> str:
    if not entry.get("limited_by"):
        return ""
    return f"limited by {entry['limited_by']} ({entry['limited_value']:,.1f} {entry['unit']})"


def judge_topology(bench, why: str) -> Verdicts:
    """No recorded baseline fits: each figure against what this host's links should give."""
    out = Verdicts(baseline=TOPOLOGY_BASELINE, baseline_file="", origin="topology",
                   reason=f"{why}; judged against the topology expectation (gpunode expect)",
                   host=bench.host, mode=bench.mode)
    index = _topology_index(bench)
    for metric in bench.metrics:
        entry = index.get((metric.name, metric.gpu))
        if entry is None or metric.status in ("FAIL", "ERROR", "SKIP"):
            verdict, _ = judge_metric(metric, Baseline(name=TOPOLOGY_BASELINE, path=Path("")))
            if entry is None and metric.status not in ("FAIL", "ERROR", "SKIP"):
                verdict = replace(verdict, message="not compared: no topology expectation for this metric")
            out.rows.append(verdict)
            continue
        subject = f"GPU{metric.gpu}" if metric.gpu is not None else ""
        base = {"metric": metric.name, "subject": subject, "measured": metric.value, "unit": metric.unit}
        exp = _topology_expectation(entry)
        verdict = with_trust(_rate(metric.value, exp, base), metric, exp)
        note = _limit_note(entry) if verdict.status != PASS else ""
        out.rows.append(replace(verdict, topology_expected=entry["value"],
                                message="; ".join(p for p in (verdict.message, note) if p)))
    return out


def beside_topology(verdicts: Verdicts, bench) -> Verdicts:
    """A baseline judged the figures; the topology expectation is shown beside each, and a figure
    below it names the link that limits it."""
    index = _topology_index(bench)
    rows = []
    for row in verdicts.rows:
        gpu = int(row.subject[3:]) if row.subject.startswith("GPU") and row.subject[3:].isdigit() else None
        entry = index.get((row.metric, gpu))
        if entry is None or row.measured is None:
            rows.append(row)
            continue
        extra = ""
        if row.measured < entry["value"] * TOPOLOGY_WARN:
            extra = "; ".join(p for p in (f"below the topology expectation {entry['value']:,.1f} {entry['unit']} "
                                          f"({entry['arithmetic']})", _limit_note(entry)) if p)
        rows.append(replace(row, topology_expected=entry["value"], topology_note=extra))
    verdicts.rows = rows
    return verdicts


def compare_document(
    doc: dict,
    baseline_file: str | os.PathLike | None = None,
    baselines_dir: str | os.PathLike | None = None,
    config_dir: str | None = None,
) -> Verdicts:
    """compare() on a bench result as JSON-decoded, with the catalogue of --baselines DIR / the
    config. Raises as compare(), and ValueError when it is not a bench result."""
    from gpunode.bench.results import BenchDocument

    return compare(BenchDocument.from_json(doc), catalogue_for(baselines_dir, config_dir), baseline_file)


def catalogue_for(baselines_dir: str | os.PathLike | None = None, config_dir: str | None = None) -> Catalogue:
    """The baselines to choose from: --baselines DIR, else the config's baselines_dir, then shipped.
    Raises BaselineError for a missing directory or a bad config."""
    if baselines_dir is None and config_dir is None:
        config_dir = _config_baselines_dir()
    return Catalogue(site_dirs(baselines_dir, config_dir))


def _config_baselines_dir() -> str | None:
    from gpunode.config import ConfigError, load_config

    try:
        return load_config().baselines_dir
    except ConfigError as exc:
        raise BaselineError(str(exc)) from exc


def judge(bench, selection: Selection, unmeasured: bool = True) -> Verdicts:
    """Pure: a parsed BenchDocument and a chosen baseline -> verdicts. `unmeasured`: also a row
    for each baseline figure the run did not measure (diag leaves them out: it never measures
    H2D or HBM copies, so they are not missing from its run)."""
    baseline = selection.baseline
    out = Verdicts(
        baseline=baseline.name,
        baseline_file=str(baseline.path),
        origin=selection.origin,
        reason=selection.reason,
        host=bench.host,
        mode=bench.mode,
    )
    used: set[str] = set()
    for metric in bench.metrics:
        verdict, key = judge_metric(metric, baseline)
        out.rows.append(verdict)
        if key is not None:
            used.add(key)
    measured_names = {m.name for m in bench.metrics}
    for exp in baseline.expectations if unmeasured else ():
        if exp.key in used or any(exp.matches_name(n) for n in measured_names):
            continue
        out.rows.append(
            Verdict(exp.metric, "", SKIP, "not measured in this run", expected=exp.value, unit=exp.unit,
                    warn=exp.warn, fail=exp.fail, baseline_key=exp.key, source=exp.source)
        )
    return out


def judge_metric(metric, baseline: Baseline) -> tuple[Verdict, str | None]:
    subject = f"GPU{metric.gpu}" if metric.gpu is not None else ""
    candidates = baseline.for_metric(metric.name)
    base = {"metric": metric.name, "subject": subject, "measured": metric.value, "unit": metric.unit}
    if metric.status == "FAIL":
        return Verdict(status=FAIL, message=f"bench failed: {metric.message or 'no reason given'}", **base), None
    if metric.status == "ERROR":
        return Verdict(status=ERROR, message=f"bench error: {metric.message or 'no reason given'}", **base), None
    if metric.status == "SKIP":
        return Verdict(status=SKIP, message=f"not measured: {metric.message or 'skipped'}", **base), None
    if not candidates:
        return Verdict(status=SKIP, message=NO_FIGURE, **base), None
    mismatches = []
    for exp in candidates:
        why = condition_mismatch(exp, metric.conditions, metric.unit)
        if why is None:
            return with_trust(_rate(metric.value, exp, base), metric, exp), exp.key
        mismatches.append((exp, why))
    exp, why = mismatches[0]
    more = f" (and {len(mismatches) - 1} other variant(s) of the baseline)" if len(mismatches) > 1 else ""
    return Verdict(status=SKIP, message=f"not compared: {why}{more}", expected=exp.value, baseline_key=exp.key,
                   source=exp.source, **base), None


def condition_mismatch(exp: Expectation, conditions: dict[str, Any], unit: str) -> str | None:
    """None when the measurement was taken under the baseline's conditions, else why not."""
    if unit != exp.unit:
        return f"measured in {unit}, baseline in {exp.unit}"
    for key, wanted in exp.conditions.items():
        got = lookup(conditions, key)
        if got is _MISSING:
            if wanted is None:
                continue  # `KEY: null` means "not set", and absent is not set
            return f"the result does not state {key} (baseline: {_show(wanted)})"
        if not condition_ok(wanted, got):
            return f"{key} {_show(got)}, baseline {_show(wanted)}"
    return None


_MISSING = object()


def lookup(conditions: dict[str, Any], key: str) -> Any:
    """A condition by key; `algo env.NCCL_ALGO` looks inside the mapping `algo env`."""
    if key in conditions:
        return conditions[key]
    for i, ch in enumerate(key):
        if ch == "." and isinstance(conditions.get(key[:i]), dict):
            return lookup(conditions[key[:i]], key[i + 1:])
    return _MISSING


def condition_ok(wanted: Any, got: Any) -> bool:
    if isinstance(wanted, dict):
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return False
        return ("min" not in wanted or got >= wanted["min"]) and ("max" not in wanted or got <= wanted["max"])
    if isinstance(wanted, list):
        return any(_same(w, got) for w in wanted)
    return _same(wanted, got)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    if a is None or b is None:
        return a is b
    return str(a).strip().lower() == str(b).strip().lower()


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, dict):
        parts = [f">= {value['min']}" if "min" in value else "", f"<= {value['max']}" if "max" in value else ""]
        return " and ".join(p for p in parts if p)
    if isinstance(value, list):
        return " or ".join(str(v) for v in value)
    return str(value)


def ratio_of(measured: float, exp: Expectation) -> float:
    if exp.better == "lower":
        return math.inf if measured == 0 else exp.value / measured
    return measured / exp.value


def grade(ratio: float, warn: float, fail: float) -> str:
    if ratio + EPSILON >= warn:
        return PASS
    if ratio + EPSILON >= fail:
        return WARN
    return FAIL


def _rate(measured: float | None, exp: Expectation, base: dict) -> Verdict:
    common = {"expected": exp.value, "warn": exp.warn, "fail": exp.fail, "baseline_key": exp.key, "source": exp.source}
    if measured is None or not math.isfinite(measured) or measured < 0 or (measured == 0 and exp.better == "lower"):
        return Verdict(status=ERROR, message=f"unusable measured value {measured!r}", **common, **base)
    ratio = ratio_of(measured, exp)
    status = grade(ratio, exp.warn, exp.fail)
    word = {PASS: "within", WARN: "below the warn level of", FAIL: "below the fail level of"}[status]
    direction = "" if exp.better == "higher" else " (lower is better)"
    message = f"{ratio:.1%} of expected{direction}; {word} {exp.warn:.0%}/{exp.fail:.0%}"
    shown_ratio = round(ratio, 4) if math.isfinite(ratio) else None
    return Verdict(status=status, message=message, ratio=shown_ratio, **common, **base)


_JUDGED = (PASS, WARN, FAIL)


def with_trust(verdict: Verdict, metric, exp: Expectation) -> Verdict:
    """The ratio verdict, made worse where the telemetry or the spread says the figure is doubtful,
    with the likely cause of a low figure and its share of the datasheet peak."""
    from gpunode.bench import trust

    if verdict.status not in _JUDGED:
        return verdict
    cov = metric.spread.cov if metric.spread is not None else None
    found = trust.concerns(metric.telemetry, cov, exp.max_cov if exp.max_cov is not None else trust.DEFAULT_MAX_COV)
    bad = trust.untrusted(found)
    status, notes = _doubted(verdict.status, found, bad, exp.untrusted)
    if verdict.status != PASS and not bad:
        cause = trust.likely_cause(metric.telemetry)
        if cause:
            notes.append(f"likely cause: {cause}")
    message = "; ".join(notes + [verdict.message]) if notes else verdict.message
    return replace(verdict, status=status, message=message, peak_ratio=_peak_ratio(verdict, exp),
                   concerns=tuple(c.text for c in found))


def _doubted(status: str, found, bad, untrusted: str) -> tuple[str, list[str]]:
    """The status made worse by untrusted figures (to FAIL or WARN, as the baseline says) and an
    unstable one (to WARN), with a note for each."""
    notes = []
    if bad:
        status = max(status, FAIL if untrusted == "fail" else WARN, key=RANK.__getitem__)
        notes.append("not trustworthy: " + "; ".join(c.text for c in bad))
    unstable = [c.text for c in found if c.kind == "unstable"]
    if unstable:
        status = max(status, WARN, key=RANK.__getitem__)
        notes += unstable
    return status, notes


def _peak_ratio(verdict: Verdict, exp: Expectation) -> float | None:
    """The measured figure's share of the datasheet peak (figures where higher is better only)."""
    if exp.peak and verdict.measured is not None and exp.better == "higher":
        return round(verdict.measured / exp.peak, 4)
    return None


def render_verdicts(verdicts: Verdicts, console, fmt: str | None = None) -> None:
    """The verdict table in a layout (layout.RENDERERS; None: by the terminal) and one summary line."""
    from rich.table import Table

    title = f"gpunode compare · {verdicts.host} · {verdicts.mode} · baseline {verdicts.baseline} ({verdicts.reason})"
    table = Table(title=title, expand=False)
    for col, justify in (("Metric", "left"), ("Subject", "left"), ("Status", "left"), ("Measured", "right"),
                         ("Expected", "right"), ("Links", "right"), ("Ratio", "right"), ("Warn/Fail", "right"),
                         ("Note", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "Note")
    for r in verdicts.rows:
        table.add_row(
            r.metric,
            r.subject,
            f"[{STYLE[r.status]}]{r.status if r.status != SKIP else 'not compared'}[/]",
            _num(r.measured, r.unit),
            _num(r.expected, r.unit),
            "" if verdicts.origin == "topology" else _num(r.topology_expected, r.unit),
            "" if r.ratio is None else f"{r.ratio:.3f}",
            "" if r.warn is None else f"{r.warn:.2f}/{r.fail:.2f}",
            _note(r),
        )
    show_table(console, table, fmt)
    if fmt == "tsv":  # rows only
        return
    parts = ", ".join(f"{n} {'not compared' if s == SKIP else s}" for s, n in verdicts.summary().items() if n)
    console.print(f"[bold]{verdicts.status}[/bold] (exit {verdicts.exit_code}): {parts}")


def _note(r: Verdict) -> str:
    peak = f"{r.peak_ratio:.0%} of datasheet peak" if r.peak_ratio is not None else ""
    text = "" if r.status == PASS else r.message
    return "; ".join(p for p in (text, r.topology_note, peak) if p)


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    return f"{value:,.1f} {unit}" if abs(value) < 1e5 else f"{value:,.0f} {unit}"
