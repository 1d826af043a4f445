"""`gpunode bench`: GEMM, HBM, host<->device, P2P, nccl-tests, fio, torch.distributed all-reduce."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from gpunode.cli.common import (
    PROMETHEUS_HELP,
    ResultFormatOption,
    StateDirOption,
    check_outputs,
    die,
    document_target,
    layout_of,
    legacy_json_command,
    split_csv,
    stderr_console,
    stdout_console,
    write_prometheus,
)
from gpunode.exits import worst_exit
from gpunode.layout import show_table
from gpunode.status import RESULTS, STYLE


def bench(
    quick: bool = typer.Option(False, "--quick", help="Short run (fewer repeats, smaller nccl/fio sizes): < 60 s on one GPU."),
    full: bool = typer.Option(False, "--full", help="Full run (the default): 20 repeats, nccl-tests up to 4 GiB, all five tests."),
    only: list[str] = typer.Option(None, "--only", help="Only these: gemm,hbm,h2d,p2p,nccl,fio,allreduce,gdr (comma-separated)."),
    as_json: bool = typer.Option(False, "--json", help="Print the results document (schema gpunode.bench/1) instead of the table."),
    fmt: ResultFormatOption = None,
    output: Path = typer.Option(None, "--output", "-o", help="Write the results document (schema gpunode.bench/1) to this file; the table is printed too."),
    gpus: str = typer.Option(None, "--gpus", help="GPU indices (NVML order, as nvidia-smi), e.g. 0,1. Default: all."),
    backend: str = typer.Option("auto", "--backend", help="Microbenchmark backend: auto, torch or cupy."),
    nccl_tests_dir: Path = typer.Option(None, "--nccl-tests-dir", help="Directory holding all_reduce_perf etc. (or its build/). Default: PATH."),
    nccl_tests: str = typer.Option(None, "--nccl-tests", help="nccl tests to run, e.g. all_reduce,alltoall. Default: all_reduce (quick), all five (full)."),
    nccl_launcher: str = typer.Option(None, "--nccl-launcher", help="mpirun or srun: one process per GPU (multi-node with --hosts). Default: one process, -g N."),
    hosts: str = typer.Option(None, "--hosts", help="Hosts for --nccl-launcher, comma-separated."),
    fio_dir: Path = typer.Option(None, "--fio-dir", help="Directory for fio's scratch file (default $TMPDIR). The file is removed afterwards."),
    fio_destructive: Path = typer.Option(None, "--fio-destructive", help="Let fio OVERWRITE this unmounted block device or existing file."),
    compare: bool = typer.Option(False, "--compare", help="Judge the results against the baseline for these GPUs."),
    baseline: str = typer.Option(None, "--baseline", help="Baseline file or name to compare with, or `topology` (implies --compare)."),
    force_baseline: bool = typer.Option(False, "--force-baseline", help="Judge against --baseline even when it is for other GPUs than these (the report says so)."),
    baselines_dir: Path = typer.Option(None, "--baselines", help="Site baselines directory, before the shipped ones (implies --compare)."),
    history_warn: float = typer.Option(0.95, "--history-warn", help="With --compare: WARN when a figure is below this share of the node's own recent median."),
    history_runs: int = typer.Option(10, "--history-runs", help="With --compare: how many of the node's earlier runs make its recent median."),
    state_dir: StateDirOption = None,
    no_history: bool = typer.Option(False, "--no-history", help="Do not keep this result in the node's history."),
    prometheus: Path = typer.Option(None, "--prometheus", help=PROMETHEUS_HELP),
) -> None:
    """Benchmark this node. Exit 0 OK, 2 a metric failed (wrong data), 3 a benchmark errored or nothing
    was measured; with --compare the exit code follows the verdicts (1 WARN)."""
    from gpunode.bench import session
    from gpunode.host.seam import live_host

    req = session.BenchRequest(
        quick=quick, full=full, only=tuple(split_csv(only)), gpus=gpus, backend=backend,
        nccl_tests_dir=nccl_tests_dir, nccl_tests=tuple(split_csv([nccl_tests])) if nccl_tests else None,
        nccl_launcher=nccl_launcher, hosts=tuple(split_csv([hosts])) if hosts else (),
        fio_dir=fio_dir, fio_destructive=fio_destructive, history_warn=history_warn, history_runs=history_runs)
    opts = session.options(req)
    as_json, layout = layout_of(fmt, as_json)
    json_file = document_target(as_json, output)  # '-': print it; a path: write it
    check_outputs(prometheus, json_file)
    comparing = compare or baseline is not None or baselines_dir is not None
    # A bad --baseline/--baselines is bad input: said now, not after a long run.
    chosen = _choose_baseline(baseline, baselines_dir) if comparing else None
    document = session.run(session.plan(live_host(), req, opts), _run_with_progress)
    data = document.to_json()
    console = _publish(data, document, json_file, prometheus, layout)
    code = document.exit_code
    if not no_history:  # kept first: a compare that finds no baseline must not lose the figures
        _warn(session.keep(data, state_dir))
    if chosen is not None:
        # With the JSON on stdout, the verdict table goes to stderr so stdout stays parseable.
        code = _compare(document, chosen, console, force_baseline)
        code = worst_exit(code, _compare_history(data, state_dir, history_runs, history_warn, console))
    raise typer.Exit(code)


def _publish(data: dict, document, json_file, prometheus, layout: str | None = None):
    """The textfile, the document (a file or stdout) and the table; -> the console for what follows."""
    from gpunode.outputs import dumps, write_atomic

    write_prometheus(prometheus, data)
    if json_file is not None and str(json_file) != "-":
        try:
            write_atomic(json_file, dumps(data))
        except OSError as exc:
            die(f"cannot write {json_file}: {exc.strerror or exc}", 3)
    if json_file is not None and str(json_file) == "-":
        typer.echo(dumps(data), nl=False)
        return stderr_console()
    render_table(document, stdout_console(), layout)
    return stdout_console()


def _warn(warning: str | None) -> None:
    if warning:
        print(f"gpunode: warning: {warning}", file=sys.stderr)


def _compare_history(data: dict, state_dir: str | None, runs: int, warn: float, console) -> int:
    """This run against the node's own recent median (read-only); exit 1 on any WARN."""
    from rich.markup import escape
    from rich.table import Table

    from gpunode.history.record import state_dir_of
    from gpunode.history.store import HistoryError, Store, history_path
    from gpunode.history.trend import WARN, judge_against_history

    try:
        with Store.open(history_path(state_dir_of(state_dir)), readonly=True) as store:
            earlier = store.figures("bench", before=float(data.get("time_epoch") or 0) or None)
    except HistoryError as exc:
        print(f"gpunode: warning: not compared with this node's history: {exc}", file=sys.stderr)
        return 0
    rows = judge_against_history(data, earlier, last=runs, warn=warn)
    if not any(r.runs for r in rows):
        console.print("[dim]no earlier runs of this node to compare with (its history is empty)[/dim]")
        return 0
    table = Table(title="against this node's own history", expand=False)
    for col in ("Metric", "Subject", "Status", "Measured", "Node median", "Ratio", "Note"):
        table.add_column(col, justify="right" if col in ("Measured", "Node median", "Ratio") else "left",
                         no_wrap=col != "Note")
    for r in rows:
        table.add_row(escape(r.metric), r.subject, f"[{STYLE[r.status]}]{r.status}[/]", _fmt(r.measured),
                      _fmt(r.median), "" if r.ratio is None else f"{r.ratio:.3f}", escape(r.message))
    show_table(console, table)
    return 1 if any(r.status == WARN for r in rows) else 0


def _run_with_progress(run, execute):
    """A progress bar on stderr (a line per step when stderr is not a terminal)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = stderr_console()
    if not console.is_terminal:
        def log(i, step):
            print(f"gpunode: bench [{i + 1}/{len(run.steps)}] {step.label}", file=sys.stderr, flush=True)

        return execute(run, log)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("bench", total=len(run.steps))

        def advance(i, step):
            progress.update(task, completed=i, description=step.label)

        document = execute(run, advance)
        progress.update(task, completed=len(run.steps))
    return document


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:,.1f}" if abs(value) < 1e5 else f"{value:,.0f}"


def render_table(document, console, fmt: str | None = None) -> None:
    from rich.table import Table

    tools = ", ".join(f"{k} {v}" for k, v in document.tools.items())
    table = Table(title=f"gpunode bench · {document.host} · {document.mode} · {tools}", expand=False)
    for col, justify in (("Metric", "left"), ("GPU", "right"), ("Status", "left"), ("Value", "right"),
                         ("Unit", "left"), ("Spread (min–max, CoV)", "right"), ("Note", "left")):
        table.add_column(col, justify=justify, no_wrap=col != "Note")
    for m in document.metrics:
        spread = ""
        if m.spread is not None:
            spread = f"{_fmt(m.spread.min)}–{_fmt(m.spread.max)}, {m.spread.cov:.1%}"
        table.add_row(m.name, "" if m.gpu is None else str(m.gpu), f"[{STYLE[m.status]}]{m.status}[/]",
                      _fmt(m.value), m.unit, spread, _note(m))
    show_table(console, table, fmt)
    if fmt == "tsv":  # rows only: a script reads the status from them or from --json
        return
    counts = {s: sum(1 for m in document.metrics if m.status == s) for s in RESULTS}  # a metric is never WARN
    parts = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    console.print(f"[bold]{document.status}[/bold] (exit {document.exit_code}): {parts}")


def _note(m) -> str:
    """The metric's own message, then what makes it doubtful, then the GPU's conditions."""
    from rich.markup import escape

    from gpunode.bench import trust

    if m.status != "PASS":
        return escape(m.message)
    found = trust.concerns(m.telemetry, m.spread.cov if m.spread else None)
    parts = [escape(m.message)] + [f"[yellow]{escape(c.text)}[/]" for c in found] + [escape(trust.describe(m.telemetry))]
    return "; ".join(p for p in parts if p)


def _choose_baseline(baseline: str | None, baselines_dir: Path | None):
    """-> (catalogue, baseline or None for auto-selection after the run); exit 2 on bad input."""
    from gpunode.baselines.compare import TOPOLOGY_BASELINE, catalogue_for

    try:
        catalogue = catalogue_for(baselines_dir)
        if baseline is not None:
            if baseline != TOPOLOGY_BASELINE:  # derived from this host's links after the run
                catalogue.resolve(baseline)  # a bad name or file is said before the run
            return catalogue, baseline
        for entry in catalogue.entries():  # auto-selection reads them all after the run
            catalogue.load(entry.path)
        return catalogue, None
    except ValueError as exc:  # BaselineError is a ValueError: bad file or name, missing directory
        die(str(exc))
    raise AssertionError("unreachable")


def _compare(document, chosen, console, force: bool = False) -> int:
    """The verdicts `gpunode compare` gives on the saved JSON: the same compare() call."""
    from gpunode.baselines.compare import render_verdicts
    from gpunode.cli.baseline_cmd import compare_or_die

    catalogue, baseline = chosen
    verdicts = compare_or_die(document, catalogue, baseline, force)
    render_verdicts(verdicts, console)
    return verdicts.exit_code


def register(app: typer.Typer) -> None:
    app.command("bench", cls=legacy_json_command())(bench)  # `--json FILE` of earlier versions still works
