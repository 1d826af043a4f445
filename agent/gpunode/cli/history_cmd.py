"""`gpunode history`: this node's recorded results (bench, diag, audit) and applies, newest first;
`history show ID` prints one; `history export` writes the figures for the fleet's trend report."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from gpunode.cli.common import ResultFormatOption, StateDirOption, die, layout_of, stdout_console
from gpunode.layout import show_table

EXPORT_SCHEMA = "gpunode.history-export/1"
KIND_CHOICES = ("bench", "diag", "audit", "apply")

history_app = typer.Typer(help="This node's recorded results and applies.", no_args_is_help=False,
                          add_completion=False)


def _state(state_dir: str | None) -> Path:
    from gpunode.state_dir import resolve_state_dir

    return resolve_state_dir(state_dir, dict(os.environ))


def _open(root: Path):
    from gpunode.history.store import HistoryError, Store, history_path

    try:
        return Store.open(history_path(root), readonly=True)
    except HistoryError as exc:
        die(str(exc), 3)
    raise AssertionError("unreachable")


def _read(fn):
    """A history read; a damaged file is one line, exit 3."""
    from gpunode.history.store import HistoryError

    try:
        return fn()
    except HistoryError as exc:
        die(str(exc), 3)
    raise AssertionError("unreachable")


def _applies(root: Path, sysroot: Path | None = None) -> list[dict]:
    """The applies of the live host, or of those made under `sysroot` (kept apart)."""
    from gpunode.tune.journal import JournalError, StateDir

    state = StateDir(root, sysroot=None if sysroot is None else sysroot.resolve())
    try:
        return [r.summary() for r in reversed(state.records())]
    except JournalError as exc:
        die(str(exc), 3)
    except OSError as exc:
        die(f"{state.applies}: {exc.strerror or exc}", 3)
    raise AssertionError("unreachable")


def history_rows(root: Path, kind: str | None, limit: int | None,
                 sysroot: Path | None = None) -> tuple[list[dict], list[dict]]:
    """(results, applies), newest first."""
    results: list[dict] = []
    if kind != "apply":
        with _open(root) as store:
            results = [{"id": e.id, "kind": e.kind, "time": e.time, "time_epoch": e.time_epoch, "host": e.host,
                        "status": e.status, "summary": e.summary} for e in _read(lambda: store.entries(kind, limit))]
    applies = _applies(root, sysroot) if kind in (None, "apply") else []
    return results, applies[:limit] if limit else applies


@history_app.callback(invoke_without_command=True)
def history(
    ctx: typer.Context,
    kind: str = typer.Option(None, "--kind", help="Only bench, diag, audit or apply."),
    limit: int = typer.Option(None, "--limit", help="At most this many of each (newest)."),
    state_dir: StateDirOption = None,
    as_json: bool = typer.Option(False, "--json", help="Print a JSON document (schema gpunode.history/1)."),
    fmt: ResultFormatOption = None,
    sysroot: Path = typer.Option(None, "--sysroot", help="List the applies made with this --sysroot (kept apart from the live host's)."),
) -> None:
    """List recorded results and applies, newest first. `history show ID` prints one."""
    if ctx.invoked_subcommand is not None:
        return
    from gpunode.outputs import dumps
    from gpunode.tune.render import HISTORY_SCHEMA

    _check_history_options(kind, limit)
    root = _state(state_dir)
    results, applies = history_rows(root, kind, limit, sysroot)
    as_json, layout = layout_of(fmt, as_json)
    if as_json:
        typer.echo(dumps({"schema": HISTORY_SCHEMA, "state_dir": str(root), "results": results,
                          "applies": applies}), nl=False)
        return
    if not results and not applies:
        typer.echo(f"nothing recorded in {root}")
        return
    console = stdout_console()
    if results:
        show_table(console, _results_table(root, results), layout)
    if applies:
        show_table(console, _applies_table(root, applies), layout)


def _check_history_options(kind: str | None, limit: int | None) -> None:
    if kind is not None and kind not in KIND_CHOICES:
        die(f"--kind {kind}: choose {', '.join(KIND_CHOICES)}")
    if limit is not None and limit < 1:
        die("--limit must be 1 or more")


def _results_table(root: Path, results: list[dict]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"gpunode history · {root}"))
    for col in ("Id", "Time", "Kind", "Status", "Summary"):
        table.add_column(col, no_wrap=col != "Summary")
    for r in results:
        table.add_row(str(r["id"]), escape(r["time"]), r["kind"], escape(r["status"]), escape(r["summary"]))
    return table


def _applies_table(root: Path, applies: list[dict]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(f"applies · {root}"))
    for col in ("Id", "Time", "Profile", "Changes", "Status", "Reason"):
        table.add_column(col)
    for a in applies:
        table.add_row(escape(a["id"]), escape(a["time"] or ""), escape(a["profile"] or ""), str(a["changes"]),
                      escape(a["status"]), escape(a["reason"]))
    return table


@history_app.command("show")
def show(
    result_id: str = typer.Argument(..., help="A result id (from `gpunode history`) or an apply id."),
    state_dir: StateDirOption = None,
    fmt: ResultFormatOption = None,
) -> None:
    """Print one recorded result document (JSON), or an apply's summary; --format table, plain or
    tsv lays it out as its own command does (bench, diag, audit; an apply's summary as fields)."""
    _, layout = layout_of(fmt, False)
    root = _state(state_dir)
    if result_id.isdigit():
        with _open(root) as store:
            doc = _read(lambda: store.document(int(result_id)))
        if doc is None:
            die(f"no result {result_id} in the history of {root}")
        _print(doc, layout)
        return
    for a in _applies(root):
        if a["id"] == result_id:
            _print(a, layout)
            return
    die(f"no result or apply {result_id!r} recorded in {root}")


def _print(doc: dict, layout: str | None) -> None:
    """The document as JSON (no --format, or json), else laid out as its own command does."""
    from gpunode.layout import Col, show
    from gpunode.outputs import dumps
    from gpunode.slurm.fastpath import CHECK_COLUMNS

    console, schema = stdout_console(), doc.get("schema")
    if layout is None:
        typer.echo(dumps(doc), nl=False)
    elif schema == "gpunode.bench/1":
        from gpunode.bench.results import BenchDocument
        from gpunode.cli.bench_cmd import render_table

        render_table(BenchDocument.from_json(doc), console, layout)
    elif schema == "gpunode.diag/1":
        from gpunode.cli.diag_cmd import render

        render(doc, console, layout)
    elif schema == "gpunode.audit/1":
        cols = [Col(h, whole=h in ("Check", "Status")) for h in CHECK_COLUMNS]
        show(console, f"gpunode audit · {doc.get('host', '')}", cols,
             [[c["id"], c.get("subject") or "", c["status"], c["message"]] for c in doc["checks"]], layout)
    else:  # an apply's summary
        show(console, f"apply {doc.get('id')}", [Col("Field", whole=True), Col("Value")],
             [[k, "" if v is None else v] for k, v in doc.items()], layout)


@history_app.command("export")
def export(
    output: Path = typer.Option(None, "--output", "-o", help="Write here (atomically); default stdout."),
    kind: str = typer.Option("bench", "--kind", help="bench or diag: whose figures to export."),
    state_dir: StateDirOption = None,
) -> None:
    """The figures of every recorded bench (or diag) result, for `gpunode fleet trends`."""
    from gpunode.host.seam import live_host
    from gpunode.outputs import dumps, write_atomic

    if kind not in ("bench", "diag"):
        die(f"--kind {kind}: choose bench or diag")
    root = _state(state_dir)
    with _open(root) as store:
        doc = _read(lambda: export_document(store, kind, live_host().facts.hostname))
    text = dumps(doc)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        write_atomic(output, text)
    except OSError as exc:
        die(f"cannot write {output}: {exc.strerror or exc}", 3)


def export_document(store, kind: str, host: str) -> dict:
    import json

    from gpunode import __version__

    runs: dict[int, dict] = {}
    gpus: dict = {}
    for entry, f in store.figures(kind):
        run = runs.setdefault(entry.id, {"id": entry.id, "time": entry.time, "time_epoch": entry.time_epoch,
                                         "status": entry.status, "figures": []})
        run["figures"].append({"name": f.name, "gpu": f.gpu, "value": f.value, "unit": f.unit,
                               "conditions": json.loads(f.conditions), "cov": f.cov, "trusted": f.trusted})
    for entry in store.entries(kind, 1):  # the GPU identity of the newest run names the SKU
        found = (store.document(entry.id) or {}).get("gpus")
        gpus = found if isinstance(found, dict) else {}
    return {"schema": EXPORT_SCHEMA, "gpunode_version": __version__, "host": host, "kind": kind,
            "gpus": gpus, "runs": list(runs.values())}


def register(app: typer.Typer) -> None:
    app.add_typer(history_app, name="history")
