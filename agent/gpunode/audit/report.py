"""Audit outputs: a rich table for people, JSON for machines, a Prometheus textfile."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from gpunode.audit.engine import EXIT_CODES, Result, Status, overall

AUDIT_SCHEMA = "gpunode.audit/1"
STATUS_STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.SKIP: "dim",
    Status.ERROR: "magenta",
}
STATUS_VALUE = {Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2, Status.ERROR: 3, Status.SKIP: -1}


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


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


def render_table(results: Sequence[Result], meta: dict, console, verbose: bool = False) -> None:
    from rich.table import Table

    title = f"gpunode audit · {meta.get('host')} · profile {meta.get('profile')} · {meta.get('source')}"
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("Area", style="cyan", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Subject", no_wrap=True)
    table.add_column("Result")
    by_area: dict[str, list[Result]] = {}
    for r in results:
        by_area.setdefault(r.area, []).append(r)
    for area, rows in by_area.items():
        first = True
        for r in rows:
            message = r.message
            if verbose and r.status in (Status.WARN, Status.FAIL) and r.remediation:
                message += f"\n[dim]fix: {r.remediation}[/dim]"
            table.add_row(
                area if first else "",
                f"[{STATUS_STYLE[r.status]}]{r.status.value}[/]",
                r.id,
                r.subject or "",
                message,
            )
            first = False
        table.add_section()
    console.print(table)
    counts = summary(results)
    verdict = overall(results)
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"[bold]{verdict}[/bold] (exit {EXIT_CODES[verdict]}): {parts}")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def prometheus_text(results: Sequence[Result], meta: dict) -> str:
    lines = [
        "# HELP gpunode_check_status Result of a gpunode check: 0 pass, 1 warn, 2 fail, 3 error, -1 skip.",
        "# TYPE gpunode_check_status gauge",
    ]
    host = _label(str(meta.get("host", "")))
    for r in results:
        labels = (
            f'check="{_label(r.id)}",subject="{_label(r.subject or "")}",area="{_label(r.area)}",'
            f'severity="{r.severity}",host="{host}"'
        )
        lines.append(f"gpunode_check_status{{{labels}}} {STATUS_VALUE[r.status]}")
    verdict = overall(results)
    lines += [
        "# HELP gpunode_audit_status Overall audit status, as the exit code: 0 ok, 1 warn, 2 fail, 3 unknown.",
        "# TYPE gpunode_audit_status gauge",
        f'gpunode_audit_status{{host="{host}",profile="{_label(str(meta.get("profile", "")))}"}} {EXIT_CODES[verdict]}',
        "# HELP gpunode_audit_checks Number of check results by status.",
        "# TYPE gpunode_audit_checks gauge",
    ]
    for status, count in summary(results).items():
        lines.append(f'gpunode_audit_checks{{host="{host}",status="{status}"}} {count}')
    lines += [
        "# HELP gpunode_audit_timestamp_seconds When the audit ran (unix time).",
        "# TYPE gpunode_audit_timestamp_seconds gauge",
        f'gpunode_audit_timestamp_seconds{{host="{host}"}} {meta.get("time_epoch", 0):.0f}',
        "# HELP gpunode_audit_duration_seconds How long the audit took.",
        "# TYPE gpunode_audit_duration_seconds gauge",
        f'gpunode_audit_duration_seconds{{host="{host}"}} {meta.get("duration_s", 0):.3f}',
    ]
    return "\n".join(lines) + "\n"


def write_atomic(path: str | os.PathLike, text: str, mode: int = 0o644) -> None:
    """tmp file in the same directory + fsync + rename: readers never see half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def dumps(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=False) + "\n"
