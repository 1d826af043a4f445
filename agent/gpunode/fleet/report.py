"""One fleet report from every host's JSON: hosts x status, which hosts fail each check, and per
bench metric the median of each SKU group with each host's ratio to it (outliers: a slow node
among healthy peers, flagged even when it passes its absolute baseline). Hosts that were
unreachable, failed, or never reached are listed as such, never dropped."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from gpunode import __version__
from gpunode import status as status_words
from gpunode.audit.engine import EXIT_CODES
from gpunode.bench.results import comparable_conditions, lower_is_better, metric_status
from gpunode.fleet.progress import HostOutcome
from gpunode.fleet.runner import PlaybookRun
from gpunode.fleet.specs import PLAYBOOKS
from gpunode.host.gpu.model import gpu_label
from gpunode.outputs import iso_time

FLEET_SCHEMA = "gpunode.fleet/1"
DEFAULT_MARGIN = 0.10  # a host this far below its SKU group's median is an outlier
DEFAULT_MIN_PEERS = 3  # fewer hosts in a group: no median worth comparing against
VERDICTS = status_words.VERDICTS
# Host states without a usable report; each makes the fleet verdict at least UNKNOWN.
NO_VERDICT = ("UNREACHABLE", "FAILED", "NOT_RUN", "NO_REPORT", "INVALID")
BAD_CHECK = status_words.PROBLEMS  # worst first: FAIL, ERROR, WARN
BAD_METRIC = tuple(w for w in BAD_CHECK if w != status_words.WARN)  # a metric is never WARN


@dataclass
class HostReport:
    host: str
    sku: str
    groups: list[str]
    run: str  # Ansible's outcome: ok | skipped | failed | unreachable | not_run
    status: str  # OK WARN FAIL UNKNOWN from the report, or one of NO_VERDICT, or SKIPPED
    message: str = ""
    report: str | None = None  # path of the host's JSON on the controller
    doc: dict | None = None
    outliers: list[dict] = field(default_factory=list)


def load_hosts(run: PlaybookRun) -> list[HostReport]:
    hosts = []
    for name in run.inventory.hosts:
        outcome = run.outcomes.get(name) or HostOutcome(name)
        path = run.report_dir / f"{name}.{run.kind}.json"
        doc, problem = read_report(path)
        hosts.append(_host_report(name, run, outcome, path, doc, problem))
    return hosts


def read_report(path: Path) -> tuple[dict | None, str | None]:
    """(document, None), (None, why it is unusable), or (None, None) when there is no file."""
    from gpunode.inputs import InputError, load_json

    if not os.path.lexists(path):
        return None, None
    try:  # a node wrote it: bounded, regular file only, duplicate keys refused
        doc = load_json(path, max_bytes=64 * 1024 * 1024, allow_nonfinite=True)
    except InputError as exc:
        return None, f"unusable report {path.name}: {str(exc).removeprefix(str(path) + ':').strip()} (truncated?)"
    if not isinstance(doc, dict) or not str(doc.get("schema", "")).startswith("gpunode."):
        return None, f"report {path.name} is not a gpunode report (no gpunode.* schema)"
    return doc, None


def doc_status(doc: dict, rc: int | None, kind: str) -> str | None:
    """The report's verdict: its "status", else its "exit_code" or the command's exit code read
    the way that command defines them (apply and rollback carry no status)."""
    if doc.get("status") in VERDICTS:
        return doc["status"]
    code = doc.get("exit_code") if isinstance(doc.get("exit_code"), int) else rc
    spec = PLAYBOOKS.get(kind)
    return dict(spec.rc_status).get(code) if spec is not None and code is not None else None


def _host_report(name: str, run: PlaybookRun, outcome: HostOutcome, path: Path, doc, problem) -> HostReport:
    base = {"host": name, "sku": run.inventory.sku(name), "groups": run.inventory.groups.get(name, []),
            "run": outcome.state}
    status = doc_status(doc, outcome.rc, run.kind) if doc is not None else None
    if doc is not None and status is None:
        doc, problem = None, f"report {path.name} has no status and its exit code is unknown"
    if doc is not None:
        message = _doc_message(doc)
        if outcome.state == "failed" and status not in ("FAIL", "UNKNOWN"):
            # The report came back but Ansible failed the host (e.g. apply said WARN where OK was
            # required): the run on this host did not do its job.
            status, message = "FAILED", f"{outcome.task}: {outcome.message}"
        return HostReport(**base, status=status, message=message, report=str(path), doc=doc)
    if problem is not None:
        return HostReport(**base, status="INVALID", message=problem)
    return HostReport(**base, **_without_report(run, outcome))


def _without_report(run: PlaybookRun, outcome: HostOutcome) -> dict:
    """status and message of a host whose report did not come back, from what Ansible did."""
    if outcome.state == "unreachable":
        return {"status": "UNREACHABLE", "message": outcome.message or ""}
    if outcome.state == "failed":
        return {"status": "FAILED", "message": f"{outcome.task}: {outcome.message}"}
    if outcome.state == "skipped":
        return {"status": "SKIPPED", "message": "every task skipped" + (" (check mode)" if run.check else "")}
    timed_out = run.status == "timeout"  # --timeout stopped the whole run: say so, not "canary failed"
    if outcome.state == "not_run":
        why = ("the run timed out (--timeout) before this host" if timed_out
               else "the run stopped before this host (canary or batch failure)" if run.status != "successful"
               else "no task ran")
        return {"status": "NOT_RUN", "message": why}
    why = "the run timed out (--timeout) while it ran" if timed_out else "ran"
    return {"status": "NO_REPORT", "message": f"{why}, but no {run.kind} report came back"}


def _doc_message(doc: dict) -> str:
    """One line: the non-passing counts of an audit/gate, or what an apply/rollback did."""
    summary = doc.get("summary")
    if isinstance(summary, dict):
        bad = ", ".join(f"{n} {s}" for s, n in summary.items() if isinstance(n, int) and n and s not in status_words.NOTHING_WRONG)
        return bad or f"{summary.get('PASS', 0)} PASS"
    for key in ("changes", "restores"):  # apply, rollback: count the rows by status
        rows = doc.get(key)
        if isinstance(rows, list):
            return _changes_message(doc, key, rows)
    return str(doc.get("message") or doc.get("reason") or "")


def _changes_message(doc: dict, key: str, rows: list) -> str:
    """An apply's changes or a rollback's restores counted by status, after its result and reason."""
    counts = Counter(str(r.get("status")) for r in rows if isinstance(r, dict))
    text = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or f"no {key}"
    result = doc.get("result")
    reason = doc.get("reason")
    return f"{result}: {text}" + (f" ({reason})" if reason else "") if result else text


def compressed(names) -> str:
    """Slurm's compressed host list (node[01-04,10]), as scontrol and sinfo print them, through
    python-hostlist; names it cannot express (a bracket or comma in them) stay a plain list."""
    import hostlist

    unique = sorted(set(names))
    try:
        return hostlist.collect_hostlist(unique)
    except hostlist.BadHostlist:
        return ",".join(unique)


def host_changes(doc: dict) -> list[dict]:
    """An apply report's changes as (setting, subject, from, to, status); a rollback's restores
    (no values: the detail says what it found)."""
    rows = []
    for key in ("changes", "restores"):
        items = doc.get(key)
        for r in items if isinstance(items, list) else []:
            if isinstance(r, dict):
                rows.append({"setting": str(r.get("setting") or ""), "subject": str(r.get("subject") or ""),
                             "from": r.get("current"), "to": r.get("target"), "status": str(r.get("status") or ""),
                             "note": r.get("note") or r.get("detail") or None})
    return rows


def change_rows(hosts: list[HostReport]) -> list[dict]:
    """Per change (setting, subject, from -> to, status): the hosts it is planned or made on, so
    one line stands for every host that changes the same way."""
    groups: dict[tuple, list[str]] = {}
    for h in hosts:
        for c in host_changes(h.doc) if h.doc else []:
            key = (c["setting"], c["subject"], c["from"], c["to"], c["status"], c["note"])
            groups.setdefault(key, []).append(h.host)
    return [{"setting": k[0], "subject": k[1], "from": k[2], "to": k[3], "status": k[4], "note": k[5],
             "hosts": sorted(names), "hostlist": compressed(names)}
            for k, names in sorted(groups.items(), key=lambda kv: tuple(str(x) for x in kv[0]))]


def check_list(doc: dict) -> list | None:
    """An audit/gate report's "checks"; a diag report's "results" (name, gpu) read the same way."""
    if isinstance(doc.get("checks"), list):
        return doc["checks"]
    if isinstance(doc.get("results"), list):
        return [{"id": r.get("name"), "title": r.get("name"), "status": r.get("status"), "message": r.get("message"),
                 "subject": None if r.get("gpu") is None else gpu_label(r.get("gpu"))}
                for r in doc["results"] if isinstance(r, dict)]
    return None


def check_rows(hosts: list[HostReport]) -> list[dict]:
    """Per check that is not PASS somewhere: which hosts FAIL, ERROR or WARN it (worst subject)."""
    rows: dict[str, dict] = {}
    for h in hosts:
        checks = check_list(h.doc) if h.doc else None
        for c in checks if isinstance(checks, list) else []:
            if not isinstance(c, dict) or c.get("status") not in BAD_CHECK:
                continue
            row = rows.setdefault(str(c.get("id")), {"id": str(c.get("id")), "title": c.get("title"),
                                                     "severity": c.get("severity"), "worst": {}, "details": {}})
            prior = row["worst"].get(h.host)
            if prior is None or BAD_CHECK.index(c["status"]) < BAD_CHECK.index(prior):
                row["worst"][h.host] = c["status"]
            row["details"].setdefault(h.host, []).append(
                {"status": c["status"], "subject": c.get("subject"), "message": c.get("message")})
    out = []
    for row in rows.values():
        worst = row.pop("worst")
        for status in BAD_CHECK:
            row[f"{status.lower()}_hosts"] = sorted(h for h, s in worst.items() if s == status)
        out.append(row)
    return sorted(out, key=lambda r: (-len(r["fail_hosts"]), -len(r["error_hosts"]), -len(r["warn_hosts"]), r["id"]))


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def metric_rows(hosts: list[HostReport], margin: float, min_peers: int) -> tuple[list[dict], list[dict]]:
    """Bench metrics: (comparisons per SKU group, metric and conditions; metric failures).
    Only results measured under identical conditions (TIMING_CONDITIONS aside) are compared; each
    GPU is a sample of the median, and a host's ratio is its worst GPU's (one slow GPU makes a
    slow node)."""
    samples: dict[tuple, list[tuple[str, int | None, float]]] = {}
    conditions: dict[tuple, dict] = {}
    failures: dict[str, dict] = {}
    for h in hosts:
        metrics = h.doc.get("metrics") if h.doc else None
        for m in metrics if isinstance(metrics, list) else []:
            if not isinstance(m, dict) or not m.get("name"):
                continue
            name, status = str(m["name"]), metric_status(m.get("status"))
            if status in BAD_METRIC:
                row = failures.setdefault(name, {"metric": name, "hosts": {}})
                label = h.host if m.get("gpu") is None else f"{h.host}:{gpu_label(m.get('gpu'))}"
                row["hosts"][label] = {"status": status, "message": m.get("message")}
            value = _number(m.get("value"))
            if status != "PASS" or value is None:
                continue
            raw = m.get("conditions") if isinstance(m.get("conditions"), dict) else {}
            cond = comparable_conditions(raw)
            key = (h.sku, name, m.get("unit"), json.dumps(cond, sort_keys=True, default=str))
            samples.setdefault(key, []).append((h.host, m.get("gpu"), value))
            conditions[key] = cond
    split = {}
    for sku, name, _unit, _cond in samples:
        split[(sku, name)] = split.get((sku, name), 0) + 1
    rows = [_compare(key, items, conditions[key], margin, min_peers, split[key[:2]] > 1)
            for key, items in sorted(samples.items(), key=lambda kv: (kv[0][1], kv[0][0], kv[0][3]))]
    return rows, sorted(failures.values(), key=lambda r: r["metric"])


def _compare(key: tuple, items, cond: dict, margin: float, min_peers: int, split: bool) -> dict:
    sku, name, unit, _ = key
    median = statistics.median(v for _, _, v in items)
    lower = lower_is_better(name, unit)
    per_host = _worst_gpu_per_host(items, median, lower)
    peers = len(per_host)
    for entry in per_host.values():
        entry["outlier"] = bool(peers >= min_peers and entry["ratio"] is not None and entry["ratio"] < 1 - margin)
    notes = []
    if peers < min_peers:
        notes.append(f"{peers} host(s) in the group: fewer than {min_peers}, no outliers flagged")
    if split:
        notes.append("hosts in this group ran it under different conditions: compared separately")
    return {"metric": name, "unit": unit, "sku": sku, "conditions": cond, "lower_is_better": lower,
            "median": round(median, 6), "samples": len(items), "peers": peers,
            "hosts": sorted(per_host.values(), key=lambda e: (e["ratio"] is None, e["ratio"] or 0, e["host"])),
            "note": "; ".join(notes)}


def _worst_gpu_per_host(items, median: float, lower: bool) -> dict[str, dict]:
    """host -> its worst sample (lowest ratio; a sample with a ratio beats one without)."""
    from gpunode.history.trend import ratio as to_median  # 1 = the median, below 1 = worse

    per_host: dict[str, dict] = {}
    for host, gpu, value in items:
        ratio = to_median(value, median, lower)
        prior = per_host.get(host)
        if prior is None or (ratio is not None and (prior["ratio"] is None or ratio < prior["ratio"])):
            per_host[host] = {"host": host, "gpu": gpu, "value": value,
                              "ratio": None if ratio is None else round(ratio, 4)}
    return per_host


def fleet_verdict(hosts: list[HostReport]) -> str:
    statuses = {h.status for h in hosts}
    if "FAIL" in statuses:
        return "FAIL"
    if statuses & {"UNKNOWN", *NO_VERDICT}:
        return "UNKNOWN"
    if "WARN" in statuses or any(h.outliers for h in hosts):
        return "WARN"
    return "OK"


def fleet_document(run: PlaybookRun, margin: float = DEFAULT_MARGIN, min_peers: int = DEFAULT_MIN_PEERS) -> dict:
    if not 0 < margin < 1:
        raise ValueError(f"margin must be between 0 and 1 (a fraction), got {margin}")
    hosts = load_hosts(run)
    metrics, metric_failures = metric_rows(hosts, margin, min_peers)
    by_name = {h.host: h for h in hosts}
    outliers = _bench_outliers(metrics, by_name)
    trend_doc = _fleet_trends(hosts, by_name) if run.kind == "trends" else None
    verdict = fleet_verdict(hosts)
    counts: dict[str, int] = {}
    for h in hosts:
        counts[h.status] = counts.get(h.status, 0) + 1
    return {
        "schema": FLEET_SCHEMA,
        "gpunode_version": __version__,
        "kind": run.kind,
        "playbook": run.playbook,
        "inventory": run.inventory.path,
        "limit": run.inventory.limit,
        "check_mode": run.check,
        "time": iso_time(run.started),
        "time_epoch": run.started,
        "duration_s": run.duration_s,
        "artifact_dir": str(run.artifact_dir),
        "report_dir": str(run.report_dir),
        "ansible": {"status": run.status, "rc": run.rc, "stats": run.stats},
        "margin": margin,
        "min_peers": min_peers,
        "status": verdict,
        "exit_code": EXIT_CODES[verdict],
        "summary": {"hosts": len(hosts), **dict(sorted(counts.items())), "outliers": len({o["host"] for o in outliers})},
        "hostlists": {s: compressed(h.host for h in hosts if h.status == s) for s in sorted(counts)},
        "hosts": [_host_json(h) for h in hosts],
        "checks": check_rows(hosts),
        "changes": change_rows(hosts),
        "metrics": metrics,
        "metric_failures": metric_failures,
        "outliers": sorted(outliers, key=lambda o: (o["ratio"], o["host"], o["metric"])),
        **({"trends": trend_doc} if trend_doc is not None else {}),
    }


def _bench_outliers(metrics: list[dict], by_name: dict[str, HostReport]) -> list[dict]:
    """Every host below its group's median by more than the margin, also kept on its host."""
    outliers = []
    for row in metrics:
        for e in row["hosts"]:
            if e["outlier"]:
                item = {"host": e["host"], "sku": row["sku"], "metric": row["metric"], "gpu": e["gpu"],
                        "value": e["value"], "median": row["median"], "unit": row["unit"], "ratio": e["ratio"]}
                outliers.append(item)
                by_name[e["host"]].outliers.append(item)
    return outliers


def _fleet_trends(hosts: list[HostReport], by_name: dict[str, HostReport]) -> dict:
    """Each host's exported bench history: distribution and drift per SKU; a drifting series
    is an outlier of its host."""
    from gpunode.fleet.trends import exports_of, trends

    trend_doc = trends(exports_of(hosts))
    for row in trend_doc["metrics"]:
        for d in row["drifting"]:
            by_name[d["host"]].outliers.append(
                {"host": d["host"], "sku": row["sku"], "metric": f"{row['metric']} drifting", "gpu": d["gpu"],
                 "value": d["last"], "median": d["first"], "unit": row["unit"], "ratio": round(1 - d["worse_by"], 4)})
    return trend_doc


def _host_json(h: HostReport) -> dict:
    doc = h.doc or {}
    gpus = doc.get("gpus") if isinstance(doc.get("gpus"), dict) else {}
    names = sorted({str(d.get("name")) for d in gpus.get("devices", []) or [] if isinstance(d, dict)})
    return {
        "host": h.host, "sku": h.sku, "groups": h.groups, "run": h.run, "status": h.status,
        "exit_code": doc.get("exit_code"), "message": h.message, "report": h.report,
        "reported_host": doc.get("host"), "summary": doc.get("summary"),
        "gpu_count": gpus.get("count"), "gpu_names": names,
        "failing": sorted({c.get("id") for c in doc.get("checks", []) or []
                           if isinstance(c, dict) and c.get("status") == "FAIL"}),
        "outliers": [f"{o['metric']}" + (f"[{gpu_label(o['gpu'])}]" if o["gpu"] is not None else "") for o in h.outliers],
        "changes": host_changes(doc),
        **({"watch": watch_summary(doc)} if doc.get("schema") == "gpunode.watch/1" else {}),
    }


def watch_summary(doc: dict, last: int = 5) -> dict:
    """A watcher's state in the fleet report: fresh or why not, and what it saw and did lately."""
    def rows(key: str) -> list:
        items = doc.get(key) if isinstance(doc.get(key), list) else []
        return [i for i in items if isinstance(i, dict)][-last:]

    return {"fresh": doc.get("fresh"), "verdict": doc.get("verdict"), "pid": doc.get("pid"),
            "events": rows("events"), "actions": rows("actions"), "problems": (doc.get("problems") or [])[-last:]}


def drifting_hosts(doc: dict) -> list[tuple[str, str]]:
    """(host, the host's own status in this run) for each drifting host: a host can drift while
    its report says OK, and an operator needs both to decide."""
    status = {h["host"]: h["status"] for h in doc["hosts"]}
    return [(name, status.get(name, "UNKNOWN")) for name in doc["trends"]["drifting_hosts"]]
