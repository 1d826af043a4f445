"""Prometheus textfiles (node_exporter's textfile collector) for every verdict gpunode gives:
audit, gate, bench, compare, diag. One exposition writer; files through gpunode.outputs.write_atomic.

Each kind has its own metric names (gpunode_<kind>_...), so several textfiles in one collector
directory never repeat a series. Values: the overall status is the exit code (0 OK, 1 WARN,
2 FAIL, 3 UNKNOWN); a per-item status is 0 pass, 1 warn, 2 fail, 3 error, -1 skip.
`promtool check metrics` accepts every file (tests/test_prometheus.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gpunode.exits import EXIT_CODES, UNKNOWN_EXIT
from gpunode.status import PROMETHEUS_VALUE, normalise  # bench results of any age: ok -> PASS

STATUS_HELP = "0 pass, 1 warn, 2 fail, 3 error, -1 skip"
_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass
class Family:
    name: str
    help: str
    samples: list[tuple[Mapping[str, str], float]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, labels: Mapping[str, object], value: float) -> Family:
        self.samples.append(({k: "" if v is None else str(v) for k, v in labels.items()}, value))
        return self


def label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def exposition(families: Iterable[Family]) -> str:
    lines: list[str] = []
    for f in families:
        if not _NAME.fullmatch(f.name):
            raise ValueError(f"bad metric name {f.name!r}")
        if not f.samples:
            continue
        lines += [f"# HELP {f.name} {' '.join(f.help.split())}", f"# TYPE {f.name} {f.type}"]
        for labels, value in f.samples:
            text = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
            lines.append(f"{f.name}{{{text}}} {_number(value)}" if text else f"{f.name} {_number(value)}")
    return "\n".join(lines) + "\n"


def verdict_families(kind: str, host: str, exit_code: int, time_epoch: float | None,
                     duration_s: float | None = None, labels: Mapping[str, object] | None = None) -> list[Family]:
    """The three series every kind exports: status (as the exit code), when, how long."""
    base = {"host": host, **(labels or {})}
    families = [Family(f"gpunode_{kind}_status",
                       f"Overall {kind} verdict as the exit code: 0 ok, 1 warn, 2 fail, 3 unknown.").add(base, exit_code)]
    if time_epoch is not None:
        families.append(Family(f"gpunode_{kind}_timestamp_seconds", f"When the {kind} ran (unix time).")
                        .add({"host": host}, round(float(time_epoch))))
    if duration_s is not None:
        families.append(Family(f"gpunode_{kind}_duration_seconds", f"How long the {kind} took.")
                        .add({"host": host}, round(float(duration_s), 3)))
    return families


def item_family(name: str, what: str, items: Iterable[tuple[Mapping[str, object], str]]) -> Family:
    """Per-item statuses (a check, a metric, a test): labels -> PASS/WARN/FAIL/ERROR/SKIP."""
    family = Family(name, f"{what}: {STATUS_HELP}.")
    for labels, status in items:
        family.add(labels, PROMETHEUS_VALUE.get(str(status).upper(), 3))
    return family


def write_textfile(path, families: Iterable[Family]) -> None:
    """Atomically (tmp + fsync + rename): node_exporter never reads half a file. 0644: the
    collector runs as its own user. A FIFO or /dev/stdout is written through; a missing
    directory is an OSError (gpunode.outputs.OutputError), never created."""
    from gpunode.outputs import write_atomic

    write_atomic(path, exposition(families), mode=0o644)


def _time(doc: Mapping) -> float | None:
    value = doc.get("time_epoch")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def gate_families(doc: Mapping) -> list[Family]:
    host = str(doc.get("host", ""))
    return [
        *verdict_families("gate", host, int(doc["exit_code"]), _time(doc), doc.get("duration_s"),
                          {"mode": doc.get("mode", "")}),
        Family("gpunode_gate_blocked", "1 when the gate blocked the job or drained the node.")
        .add({"host": host, "mode": doc.get("mode", "")}, 1 if doc.get("blocked") else 0),
        item_family("gpunode_gate_check_status", "Result of a gate check",
                    (({"check": c["id"], "subject": c.get("subject") or "", "host": host}, c["status"])
                     for c in doc.get("checks", []))),
    ]


def _metric_labels(m: Mapping, host: str) -> dict:
    gpu = m.get("gpu")
    return {"metric": m["name"], "gpu": "" if gpu is None else str(gpu), "unit": m.get("unit", ""), "host": host}


def bench_families(doc: Mapping) -> list[Family]:
    host = str(doc.get("host", ""))
    values = Family("gpunode_bench_value", "A measured bench figure, in the unit of its unit label.")
    for m in doc.get("metrics", []):
        if isinstance(m.get("value"), (int, float)) and not isinstance(m.get("value"), bool):
            values.add(_metric_labels(m, host), m["value"])
    return [
        *verdict_families("bench", host, int(doc["exit_code"]), _time(doc), None, {"mode": doc.get("mode", "")}),
        values,
        item_family("gpunode_bench_metric_status", "Whether a bench measurement ran and its data was right",
                    ((_metric_labels(m, host), normalise(m.get("status"))) for m in doc.get("metrics", []))),
    ]


def compare_families(doc: Mapping) -> list[Family]:
    host = str(doc.get("host", ""))
    ratio = Family("gpunode_compare_ratio", "Measured / expected of a compared bench metric (inverted when lower is better).")
    for v in doc.get("verdicts", []):
        if isinstance(v.get("ratio"), (int, float)):
            ratio.add({"metric": v["metric"], "subject": v.get("subject") or "", "host": host}, v["ratio"])
    return [
        *verdict_families("compare", host, int(doc["exit_code"]), _time(doc), None,
                          {"baseline": doc.get("baseline") or ""}),
        ratio,
        item_family("gpunode_compare_metric_status", "Verdict of a bench metric against its baseline",
                    (({"metric": v["metric"], "subject": v.get("subject") or "", "host": host}, v["status"])
                     for v in doc.get("verdicts", []))),
    ]


def diag_families(doc: Mapping) -> list[Family]:
    host = str(doc.get("host", ""))
    return [
        *verdict_families("diag", host, int(doc["exit_code"]), _time(doc), doc.get("duration_s"),
                          {"level": doc.get("level", "")}),
        item_family("gpunode_diag_test_status", "Result of a diag test",
                    (({"test": r["name"], "gpu": "" if r.get("gpu") is None else str(r["gpu"]), "host": host},
                      r["status"]) for r in doc.get("results", []))),
    ]


def watch_families(doc: Mapping) -> list[Family]:
    """The resident watcher's state (gpunode.watch/1): its verdict, when it last wrote and
    polled (a stale watcher is an alert), events and actions counted since it started, each
    source's health and each gate check's last result."""
    host = str(doc.get("host", ""))
    code = EXIT_CODES.get(str(doc.get("verdict")), UNKNOWN_EXIT)
    poll = doc.get("poll") or {}
    events = Family("gpunode_watch_events_total", "Events the watcher saw since it started, by kind.", type="counter")
    for kind, n in sorted((doc.get("counts") or {}).items()):
        events.add({"host": host, "kind": kind}, n)
    actions = Family("gpunode_watch_actions_total",
                     "Actions the watcher took (would-<kind> in shadow mode) since it started.", type="counter")
    for action, n in sorted((doc.get("action_counts") or {}).items()):
        actions.add({"host": host, "action": action}, n)
    sources = Family("gpunode_watch_source_up", "1 when a watcher source reads normally, 0 when it cannot.")
    for name, status in sorted((doc.get("sources") or {}).items()):
        sources.add({"host": host, "source": name}, 1 if str(status).startswith("ok") else 0)
    return [
        *verdict_families("watch", host, code, doc.get("time"), poll.get("duration_s")),
        Family("gpunode_watch_poll_timestamp_seconds", "When the watcher last read the gate checks (unix time).")
        .add({"host": host}, round(float(poll.get("time") or 0))),
        Family("gpunode_watch_poll_interval_seconds", "How often the watcher reads the gate checks.")
        .add({"host": host}, float(doc.get("poll_s") or 0)),
        events, actions, sources,
        item_family("gpunode_watch_check_status", "Last polled result of a gate check",
                    (({"check": c["id"], "subject": c.get("subject") or "", "host": host}, c["status"])
                     for c in doc.get("checks", []))),
    ]


BY_SCHEMA = {"gpunode.gate/1": gate_families, "gpunode.watch/1": watch_families, "gpunode.bench/1": bench_families,
             "gpunode.compare/1": compare_families, "gpunode.diag/1": diag_families}


def families_for(doc: Mapping) -> list[Family]:
    """Any gpunode verdict document -> its families (audit: gpunode.audit.report.prometheus_text)."""
    return BY_SCHEMA[doc["schema"]](doc)


def write_document_textfile(path, doc: Mapping) -> None:
    write_textfile(path, families_for(doc))
