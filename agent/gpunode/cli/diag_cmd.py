"""`gpunode diag`: prove each GPU computes correctly, holds its memory and sustains load."""

from __future__ import annotations

import signal
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
    stderr_console,
    stdout_console,
    write_prometheus,
)
from gpunode.status import STYLE


def diag(
    level: int = typer.Option(1, "--level", help="1: gate checks + correctness GEMM (seconds). 2: + HBM memory test + "
                                                 "sustained checked GEMM (~2 min). 3: + all GPUs under GEMM with verified "
                                                 "PCIe/P2P copies (~9 min)."),
    duration: float = typer.Option(None, "--duration", help="Seconds for the whole run at level 2 (default 120) or 3 "
                                                            "(default 540); the load phase gets what the tests before it leave."),
    gpus: str = typer.Option(None, "--gpus", help="GPU indices (NVML order, as nvidia-smi), e.g. 0,1. Default: all."),
    as_json: bool = typer.Option(False, "--json", help="Print the results document (schema gpunode.diag/1) instead of the table."),
    fmt: ResultFormatOption = None,
    output: Path = typer.Option(None, "--output", "-o", help="Write the results document (schema gpunode.diag/1) to this file; the table is printed too."),
    compare: bool = typer.Option(False, "--compare", help="Also judge the figures (checked GEMM TFLOP/s) against the baseline for these GPUs."),
    baseline: str = typer.Option(None, "--baseline", help="Baseline file or name (floors and --compare). Default: chosen by the GPUs."),
    baselines_dir: Path = typer.Option(None, "--baselines", help="Site baselines directory, before the shipped ones."),
    with_dcgm: bool = typer.Option(False, "--with-dcgm", help="Also run `dcgmi diag -r N -j` (N = --dcgm-level) and fold its results in."),
    dcgm_level: int = typer.Option(None, "--dcgm-level", help="DCGM diag level for --with-dcgm (1-4; default: --level)."),
    slurm: bool = typer.Option(False, "--slurm", help="Burn-in under Slurm: drain this node (gpunode: reason) while diag runs, resume it only when diag is OK; never touches a reason someone else set."),
    config: Path = typer.Option(None, "--config", help="gpunode config for the gate checks (default: GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
    prometheus: Path = typer.Option(None, "--prometheus", help=PROMETHEUS_HELP),
    state_dir: StateDirOption = None,
    no_history: bool = typer.Option(False, "--no-history", help="Do not keep this result in the node's history."),
) -> None:
    """Diagnose this node's GPUs. Never changes GPU settings. Exit 0 OK, 1 WARN, 2 FAIL (wrong results,
    memory errors, throttling, new ECC/Xid errors), 3 UNKNOWN (a test could not run, or interrupted)."""
    from gpunode.diag import session
    from gpunode.diag.gatecheck import gate_result

    req = session.DiagRequest(level=level, duration=duration, gpus=gpus, with_dcgm=with_dcgm, dcgm_level=dcgm_level,
                              config=config)
    opts = session.options(req)
    as_json, layout = layout_of(fmt, as_json)
    json_file = document_target(as_json, output)  # '-': print it; a path: write it
    check_outputs(prometheus, json_file)
    explicit = session.resolve_baseline(baseline, baselines_dir)
    ctx, selection, floor_note, topology = session.context(opts, req, explicit, baselines_dir, _progress(), gate_result)
    if compare and selection is None and not topology:
        die(floor_note or "no baseline for these GPUs: give --baseline")
    document, data = _diagnose(ctx, floor_note, slurm, level)
    to_stdout = _publish(data, json_file, prometheus, layout)
    code = document.exit_code
    if compare:  # a baseline, else (none matches) this host's topology expectation
        code = _compare(data, selection, topology, level, code, stderr_console() if to_stdout else stdout_console())
    if not no_history:
        warning = session.keep(data, state_dir)
        if warning:
            print(f"gpunode: warning: {warning}", file=sys.stderr)
    raise typer.Exit(code)


def _progress():
    progress_console = stderr_console()

    def progress(text: str, left: float | None) -> None:
        tail = f" (about {left:.0f} s left)" if left is not None else ""
        progress_console.print(f"gpunode diag: {text}{tail}", highlight=False, markup=False)

    return progress


def _diagnose(ctx, floor_note: str | None, slurm: bool, level: int):
    """The run, drained and resumed around it under --slurm (burn-in); -> (document, its JSON)."""
    burn = None
    if slurm:
        import os

        from gpunode.diag import burnin
        from gpunode.host.runner import Runner
        from gpunode.slurm.scontrol import Slurm

        scontrol = Slurm(Runner())
        burn = burnin.begin(scontrol, os.environ, level)
    document = _run(ctx)
    if floor_note:
        document.notes.append(floor_note)
    data = document.to_json()
    if burn is not None:
        data["slurm"] = burnin.finish(scontrol, burn, document).to_json()
    return document, data


def _publish(data: dict, json_file, prometheus, layout: str | None) -> bool:
    """The textfile, the document (a file or stdout) and the table; -> whether stdout held the JSON."""
    from gpunode.outputs import dumps, write_atomic

    write_prometheus(prometheus, data)
    to_stdout = json_file is not None and str(json_file) == "-"
    if json_file is not None and not to_stdout:
        try:
            write_atomic(json_file, dumps(data))
        except OSError as exc:
            die(f"cannot write {json_file}: {exc.strerror or exc}", 3)
    if to_stdout:
        typer.echo(dumps(data), nl=False)
    else:
        render(data, stdout_console(), layout)
    return to_stdout


def _compare(data: dict, selection, topology, level: int, code: int, console) -> int:
    from gpunode.baselines.compare import render_verdicts
    from gpunode.diag.compare import exit_with_compare, judge_document, nothing_to_compare

    verdicts = judge_document(data, selection, topology)
    if verdicts.compared:
        render_verdicts(verdicts, console)
    else:
        console.print(nothing_to_compare(verdicts, level), markup=False, highlight=False)
    return exit_with_compare(code, verdicts)


def _run(ctx):
    """SIGTERM (scancel, a Slurm time limit) stops the run like Ctrl-C: workers stop, memory is freed."""
    from gpunode.diag.run import run_diag

    def to_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, to_interrupt)
    try:
        return run_diag(ctx)
    finally:
        signal.signal(signal.SIGTERM, previous)


def render(data: dict, console, fmt: str | None = None) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"gpunode diag level {data['level']} on {escape(data['host'])}: "
                        f"{data['status']} in {data['duration_s']:.0f} s", expand=False)
    table.add_column("Test", no_wrap=True)
    table.add_column("GPU", no_wrap=True)
    table.add_column("Status", no_wrap=True)
    table.add_column("Result")
    for r in data["results"]:
        gpu = "" if r["gpu"] is None else str(r["gpu"])
        table.add_row(escape(r["name"]), gpu, f"[{STYLE[r['status']]}]{r['status']}[/]", escape(r["message"]))
    from gpunode.layout import show_table

    show_table(console, table, fmt)  # a box on a wide terminal; folded when narrow; piped: plain lines
    if fmt == "tsv":  # rows only
        return
    for note in data.get("notes") or []:
        console.print(f"note: {escape(note)}", highlight=False)
    if data.get("slurm"):
        console.print(f"slurm: {data['slurm']['action']}: {escape(data['slurm']['detail'])}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("diag", cls=legacy_json_command())(diag)  # `--json FILE` of earlier versions still works
