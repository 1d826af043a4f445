"""Audit outputs: a rich table for people, JSON for machines, a Prometheus textfile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from gpunode import status as status_words
from gpunode.audit.engine import EXIT_CODES, Result, Status, gate_not_run_line, overall

AUDIT_SCHEMA = "gpunode.audit/1"


def summary(results: Sequence[Result]) -> dict[str, int]:
    counts = Counter(r.status.value for r in results)
    return {s.value: counts.get(s.value, 0) for s in Status}


def audit_document(results: Sequence[Result], meta: dict) -> dict:
    verdict = overall(results)
    return {
        "schema": AUDIT_SCHEMA,
        **meta,
        "status": verdict,
        "exit_code": EXIT_CODES[verdict],
        "summary": summary(results),
        "checks": [r.to_json() for r in results],
    }


PROBLEMS = (Status.WARN, Status.FAIL, Status.ERROR, Status.SKIP)
GROUP_SKIPS_FROM = 3  # this many SKIPs with one reason become one row in the table layouts


def _status_style(value: str) -> str | None:
    return status_words.STYLE[value] if value in status_words.RESULTS else None


def render_report(results: Sequence[Result], meta: dict, console, fmt: str | None = None, verbose: bool = False,
                  problems: bool = False, every_skip: bool = False) -> None:
    """table / plain / tsv (gpunode.layout); `problems` leaves out PASS; the table layouts fold
    SKIPs that share one reason into one row unless `every_skip` (plain and tsv never fold:
    one result per line)."""
    from gpunode.layout import Col, pick_format, show

    fmt = pick_format(fmt, console)
    shown = [r for r in results if r.status in PROBLEMS] if problems else list(results)
    areas = list(dict.fromkeys(r.area for r in shown))
    shown.sort(key=lambda r: areas.index(r.area))  # one block per area, checks in catalogue order
    rows = _report_rows(shown, {} if every_skip or fmt != "table" else _skip_groups(shown), verbose)
    title = f"gpunode audit · {meta.get('host')} · profile {meta.get('profile')} · {meta.get('source')}"
    cols = [Col("Area", group=True), Col("Status", whole=True, style=_status_style), Col("Check", whole=True),
            Col("Subject", inline=True), Col("Result", label=False)]
    not_run = gate_not_run_line(meta.get("gate_checks_not_run", ()))  # on its own line: the gate is weaker
    footer = [verdict_line(results), *([not_run] if not_run else [])]
    show(console, title, cols, rows, fmt, footer=() if fmt == "tsv" else footer)


def _report_rows(shown: Sequence[Result], grouped: dict[str, list[str]], verbose: bool) -> list[list[str]]:
    """One row per result, but one row per group of SKIPs that share a reason (`grouped`)."""
    rows = []
    done: set[str] = set()
    for r in shown:
        group = grouped.get(r.message) if r.status is Status.SKIP else None
        if group is None:
            rows.append([r.area, r.status.value, r.id, r.subject or "", _row_message(r, verbose)])
        elif r.message not in done:  # the group's row stands where its first SKIP would
            done.add(r.message)
            rows.append([r.area, "SKIP", f"{len(group)} checks", "", f"{r.message}: {', '.join(group)}"])
    return rows


def _row_message(r: Result, verbose: bool) -> str:
    """The result's message; `verbose` adds the remediation of a WARN or FAIL."""
    if verbose and r.status in (Status.WARN, Status.FAIL) and r.remediation:
        return r.message + f" (fix: {r.remediation})"
    return r.message


def render_table(results: Sequence[Result], meta: dict, console, verbose: bool = False) -> None:
    render_report(results, meta, console, "table", verbose=verbose)


def _skip_groups(results: Sequence[Result]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for r in results:
        if r.status is Status.SKIP:
            ids.setdefault(r.message, []).append(r.id + (f" ({r.subject})" if r.subject else ""))
    return {k: v for k, v in ids.items() if len(v) >= GROUP_SKIPS_FROM}


def verdict_line(results: Sequence[Result]) -> str:
    verdict = overall(results)
    parts = ", ".join(f"{n} {s}" for s, n in summary(results).items() if n)
    return f"{verdict} (exit {EXIT_CODES[verdict]}): {parts}"


NAGIOS_LONG_LINES = 30  # the plugin API allows 8 KB in all (NRPE often less): the rest is counted
NAGIOS_LINE_CHARS = 200


def nagios_output(results: Sequence[Result], name: str = "GPUNODE", extra_perf: dict | None = None) -> str:
    """Nagios plugin output (plugin API, "Plugin Output Spec"): the status line
    `GPUNODE WARNING - 2 WARN: a, b | pass=19;;;0 ...`, then one long-output line per problem,
    worst first (`FAIL gpu.memory.remap[GPU0]: ...`). A run where every check was skipped is
    UNKNOWN ("nothing checked"), never OK. `|` only separates perfdata: never in the text."""
    verdict = overall(results)
    order = (Status.FAIL, Status.ERROR, Status.WARN)
    bad = [r for s in order for r in results if r.status is s]
    counts = summary(results)
    head = ", ".join(f"{counts[s.value]} {s.value}" for s in order if counts[s.value])
    text = _nagios_text(results, bad, counts, head)
    perf = {s.lower(): n for s, n in counts.items()}
    perf.update(extra_perf or {})
    perfdata = " ".join(f"{k}={v};;;0" for k, v in perf.items())
    lines = [f"{name} {status_words.NAGIOS[verdict]} - {_one_line(text)} | {perfdata}"]
    lines += [_one_line(f"{r.status.value} {_nagios_label(r)}: {r.message}", NAGIOS_LINE_CHARS)
              for r in bad[:NAGIOS_LONG_LINES]]
    if len(bad) > NAGIOS_LONG_LINES:
        lines.append(f"... and {len(bad) - NAGIOS_LONG_LINES} more (gpunode audit --problems)")
    return "\n".join(lines)


def _nagios_text(results: Sequence[Result], bad: list[Result], counts: dict[str, int], head: str) -> str:
    """The status line's text: the problems by name, else what passed, else why nothing was checked."""
    names = list(dict.fromkeys(_nagios_label(r) for r in bad))
    if names:
        return f"{head}: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''}"
    if counts["PASS"]:
        return f"{counts['PASS']} checks passed" + (f", {counts['SKIP']} skipped" if counts["SKIP"] else "")
    reasons = sorted({r.message for r in results})
    return f"nothing checked: all {len(results)} checks skipped ({'; '.join(reasons[:3])}{' ...' if len(reasons) > 3 else ''})"


def _nagios_label(r: Result) -> str:
    return r.id + (f"[{r.subject}]" if r.subject else "")


def _one_line(text: str, limit: int = NAGIOS_LINE_CHARS * 4) -> str:
    text = " ".join(text.replace("|", "/").split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def prometheus_text(results: Sequence[Result], meta: dict) -> str:
    from gpunode.prometheus import Family, exposition, item_family, verdict_families

    host = str(meta.get("host", ""))
    checks = item_family("gpunode_check_status", "Result of a gpunode check", (
        ({"check": r.id, "subject": r.subject or "", "area": r.area, "severity": r.severity, "host": host},
         r.status.value) for r in results))
    verdict = overall(results)
    families = [checks, *verdict_families("audit", host, EXIT_CODES[verdict], meta.get("time_epoch", 0),
                                          meta.get("duration_s", 0), {"profile": meta.get("profile", "")})]
    counts = Family("gpunode_audit_checks", "Number of check results by status.")
    for status, count in summary(results).items():
        counts.add({"host": host, "status": status}, count)
    return exposition([*families[:2], counts, *families[2:]])
