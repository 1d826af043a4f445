"""The fleet report as rich tables, drawn from the gpunode.fleet/1 document alone (so a live run
and `gpunode fleet report DIR` print the same thing)."""

from __future__ import annotations

from rich.markup import escape

from gpunode import status as status_words
from gpunode.fleet.report import compressed, drifting_hosts
from gpunode.layout import pick_format, show_table

STATUS_STYLE = {**{w: status_words.STYLE[w] for w in status_words.VERDICTS},
                "UNREACHABLE": "bold red", "FAILED": "bold red", "NOT_RUN": "magenta",
                "NO_REPORT": "magenta", "INVALID": "magenta", "SKIPPED": "dim"}
MAX_NAMES = 6  # check ids or drifting series shown per cell before "+N more"
MAX_HOSTLIST = 60  # characters of a compressed host list in a cell before "+N more"


def _line(console, markup: str) -> None:
    """One line of the report: wrapped at words on a terminal, never when piped (grep, paths)."""
    console.print(markup, soft_wrap=not console.is_terminal, highlight=False)


def _status(text: str) -> str:
    style = STATUS_STYLE.get(text, "")
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def _ids(ids: list[str]) -> str:
    shown = ", ".join(ids[:MAX_NAMES])
    return escape(shown + (f" +{len(ids) - MAX_NAMES} more" if len(ids) > MAX_NAMES else ""))


def _names(names: list[str]) -> str:
    """node[01-04,07]: the longest compressed prefix of the sorted names that fits the cell, then
    how many more (the JSON keeps every name)."""
    names = sorted(set(names))
    shown = compressed(names)
    n = len(names)
    while len(shown) > MAX_HOSTLIST and n > 1:
        n -= 1
        shown = f"{compressed(names[:n])} +{len(names) - n} more"
    return escape(shown)


def render_fleet(doc: dict, console, verbose: bool = False, fmt: str | None = None) -> None:
    """fmt: a layout of gpunode.layout (None: a table on a terminal, plain lines when piped). tsv
    prints the tables' rows alone: the free lines (watch and drift notes, the verdict, the hosts
    per status) would not parse as rows; the exit code and --format json carry them."""
    rows_only = pick_format(fmt, console) == "tsv"
    _hosts_table(doc, console, fmt)
    if doc.get("changes"):
        render_changes(doc, console, fmt)
    if doc["checks"]:
        _checks_table(doc["checks"], console, verbose, fmt)
    if doc["metrics"]:
        _bench_table(doc, console, fmt)
    if doc.get("kind") == "watch" and not rows_only:
        _watch_lines(doc["hosts"], console, verbose)
    if doc.get("trends"):
        _trend_lines(doc, console, fmt, rows_only)
    if not rows_only:
        _footer(doc, console)


def _hosts_table(doc: dict, console, fmt: str | None) -> None:
    from rich.table import Table

    mode = " · check mode" if doc.get("check_mode") else ""
    title = f"gpunode fleet {doc['kind']} · {doc['summary']['hosts']} hosts · {doc['inventory']}{mode}"
    hosts = Table(title=escape(title))
    for col in ("Host", "SKU", "Status", "Result", "Failing checks", "Outliers"):
        hosts.add_column(col, no_wrap=col in ("Host", "Status"))
    for h in doc["hosts"]:
        hosts.add_row(escape(h["host"]), escape(h["sku"]), _status(h["status"]), escape(h["message"] or ""),
                      _ids(h["failing"]), escape(", ".join(h["outliers"])))
    show_table(console, hosts, fmt)


def _checks_table(rows: list[dict], console, verbose: bool, fmt: str | None) -> None:
    """Per check not passing everywhere: its FAIL, ERROR and WARN hosts (verbose: each finding)."""
    from rich.table import Table

    checks = Table(title="Checks not passing everywhere")
    for col in ("Check", "FAIL on", "ERROR on", "WARN on"):
        checks.add_column(col)
    for row in rows:
        checks.add_row(escape(row["id"]), _names(row["fail_hosts"]), _names(row["error_hosts"]),
                       _names(row["warn_hosts"]))
        for host, items in row["details"].items() if verbose else ():
            for it in items:
                subject = f" {it['subject']}" if it.get("subject") else ""
                checks.add_row(f"  [dim]{escape(host + subject)}[/]", "", "", escape(str(it.get("message"))))
    show_table(console, checks, fmt)


def _bench_table(doc: dict, console, fmt: str | None) -> None:
    from rich.table import Table

    margin = doc["margin"]
    bench = Table(title=f"Bench metrics by SKU group (outlier: more than {margin:.0%} below the group median)")
    for col in ("Metric", "SKU", "Hosts", "Median", "Unit", "Lowest host", "Ratio", "Outliers"):
        bench.add_column(col, justify="right" if col in ("Hosts", "Median", "Ratio") else "left")
    for row in doc["metrics"]:
        low = row["hosts"][0] if row["hosts"] else None
        ratio = "" if low is None or low["ratio"] is None else f"{low['ratio']:.3f}"
        bench.add_row(escape(row["metric"]), escape(row["sku"]), str(row["peers"]), f"{row['median']:.6g}",
                      escape(str(row["unit"] or "")), escape(low["host"] if low else ""), ratio, _outliers_cell(row))
    show_table(console, bench, fmt)


def _outliers_cell(row: dict) -> str:
    """A metric row's outlier hosts, else its note (too few peers, split conditions)."""
    outl = [e["host"] for e in row["hosts"] if e["outlier"]]
    if outl:
        return f"[yellow]{_names(outl)}[/]"
    return f"[dim]{escape(row['note'])}[/]" if row["note"] else ""


def _watch_lines(hosts: list[dict], console, verbose: bool) -> None:
    """watch: per host whether its watcher is fresh, what it did (verbose: what it saw)."""
    for host in hosts:
        w = host.get("watch")
        if not w:
            continue
        _line(console, f"{escape(host['host'])}: {escape(str(w.get('fresh')))}")
        for a in w["actions"]:
            _line(console, f"  action {escape(str(a.get('action')))}: {escape(str(a.get('reason')))}")
        for e in w["events"] if verbose else []:
            _line(console, f"  event {escape(str(e.get('kind')))} {escape(str(e.get('code')))} gpu={escape(str(e.get('gpu')))}")


def _trend_lines(doc: dict, console, fmt: str | None, rows_only: bool) -> None:
    render_trends(doc["trends"], console, fmt)
    drifting = drifting_hosts(doc)
    if drifting and not rows_only:
        _line(console, "drifting hosts (their own status): "
                      + ", ".join(f"{escape(h)} {_status(s)}" for h, s in drifting))


def _footer(doc: dict, console) -> None:
    """Bench failures, the verdict with its exit code and counts, the hosts per status, where
    the reports are."""
    for row in doc["metric_failures"]:
        items = ", ".join(f"{h} {v['status']}" for h, v in row["hosts"].items())
        _line(console, f"[bold red]bench {escape(row['metric'])}[/]: {escape(items)}")
    counts = ", ".join(f"{n} {s}" for s, n in doc["summary"].items() if s not in ("hosts",) and n)
    _line(console, f"[bold]{doc['status']}[/bold] (exit {doc['exit_code']}): {escape(counts)}")
    for status, names in (doc.get("hostlists") or {}).items():
        _line(console, f"  {_status(status)} {escape(names)}")
    _line(console, f"[dim]reports: {escape(doc['report_dir'])}[/dim]")


def _value(v) -> str:
    return "-" if v is None or v == "" else str(v)


def render_changes(doc: dict, console, fmt: str | None = None) -> None:
    """apply/rollback: what changes per host, from -> to; hosts that change alike share a row."""
    from rich.table import Table

    check = doc.get("check_mode") or any(c["status"] == "planned" for c in doc["changes"])
    table = Table(title="Changes that would be made (check mode)" if check else "Changes")
    for col in ("Hosts", "Setting", "From -> to", "Status"):
        table.add_column(col, no_wrap=col in ("Setting", "Status"))
    for c in doc["changes"]:
        subject = c["subject"] if c["subject"] and not c["setting"].endswith(c["subject"]) else ""
        setting = c["setting"] + (f" {subject}" if subject else "")
        note = c.get("note") or ""
        if c["from"] is None and c["to"] is None:  # a rollback's restore: its detail says what it found
            move, status = note, c["status"]
        else:
            move, status = f"{_value(c['from'])} -> {_value(c['to'])}", c["status"] + (f": {note}" if note else "")
        table.add_row(_names(c["hosts"]), escape(setting), escape(move), escape(status))
    show_table(console, table, fmt)


def _short(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"


def render_trends(trends: dict, console, fmt: str | None = None) -> None:
    """Per SKU and metric: hosts, p10/median/p90 of their current figures, spread, the drifting
    hosts with their change. Narrow enough for 80 columns."""
    from rich.table import Table

    table = Table(title=f"Trends: last {trends['window']} runs vs first {trends['window']} "
                        f"(drift > max({trends['min_drop']:.0%}, {trends['k']:g}x spread))")
    for col, justify in (("Metric", "left"), ("SKU", "left"), ("Hosts", "right"), ("p10/median/p90", "right"),
                         ("Spread", "right"), ("Drifting", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "Drifting", overflow="fold")
    for row in trends["metrics"]:
        d = row["distribution"]
        drifting = ", ".join(f"{x['series']} {x['change']:+.1%}" for x in row["drifting"][:MAX_NAMES])
        if len(row["drifting"]) > MAX_NAMES:
            drifting += f" +{len(row['drifting']) - MAX_NAMES} more"
        table.add_row(escape(row["metric"]), escape(row["sku"]), str(row["hosts"]),
                      f"{_short(d['p10'])}/{_short(d['median'])}/{_short(d['p90'])}", f"{row['spread']:.1%}",
                      f"[yellow]{escape(drifting)}[/]" if drifting else "[dim]none[/]")
    show_table(console, table, fmt)
