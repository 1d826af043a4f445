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
    split_csv,
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
    from gpunode.diag.run import MIN_DURATION, DiagOptions

    try:
        opts = DiagOptions(level=level, duration=duration, gpus=_int_list(gpus), with_dcgm=with_dcgm)
    except ValueError as exc:
        die(str(exc))
    if duration is not None and duration < MIN_DURATION[level]:
        die(f"--duration must be at least {MIN_DURATION[level]:.0f} s at level {level}")
    if dcgm_level is not None and not with_dcgm:
        die("--dcgm-level needs --with-dcgm")
    if dcgm_level is not None and dcgm_level not in (1, 2, 3, 4):
        die(f"--dcgm-level {dcgm_level}: 1 to 4")
    if config is not None and not config.is_file():
        die(f"--config {config}: not a file")
    as_json, layout = layout_of(fmt, as_json)
    json_file = document_target(as_json, output)  # '-': print it; a path: write it
    check_outputs(prometheus, json_file)
    explicit = _resolve_baseline(baseline, baselines_dir)
    ctx, selection, floor_note, topology = _context(opts, explicit, baselines_dir, str(config) if config else None,
                                          dcgm_level or min(level, 3))
    if compare and selection is None and not topology:
        die(floor_note or "no baseline for these GPUs: give --baseline")
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
    write_prometheus(prometheus, data)
    to_stdout = json_file is not None and str(json_file) == "-"
    if json_file is not None and not to_stdout:
        from gpunode.outputs import dumps, write_atomic

        try:
            write_atomic(json_file, dumps(data))
        except OSError as exc:
            die(f"cannot write {json_file}: {exc.strerror or exc}", 3)
    if to_stdout:
        from gpunode.outputs import dumps

        typer.echo(dumps(data), nl=False)
    else:
        render(data, stdout_console(), layout)
    code = document.exit_code
    if compare:  # a baseline, else (none matches) this host's topology expectation
        from gpunode.baselines.compare import render_verdicts
        from gpunode.diag.compare import exit_with_compare, judge_document, nothing_to_compare

        verdicts = judge_document(data, selection, topology)
        console = stderr_console() if to_stdout else stdout_console()
        if verdicts.compared:
            render_verdicts(verdicts, console)
        else:
            console.print(nothing_to_compare(verdicts, level), markup=False, highlight=False)
        code = exit_with_compare(code, verdicts)
    if not no_history:
        from gpunode.history import record

        warning = record("diag", data, state_dir)
        if warning:
            print(f"gpunode: warning: {warning}", file=sys.stderr)
    raise typer.Exit(code)


def _int_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    out = []
    for item in split_csv([text]):
        if not item.isdigit():
            die(f"--gpus: {item!r} is not a GPU index")
        out.append(int(item))
    return out or None


def _resolve_baseline(baseline: str | None, baselines_dir: Path | None):
    """A bad --baseline/--baselines is bad input: said before the run, not after it."""
    from gpunode.baselines.compare import catalogue_for
    from gpunode.baselines.schema import BaselineError

    try:
        catalogue = catalogue_for(baselines_dir)
        return catalogue.resolve(baseline) if baseline is not None else None
    except BaselineError as exc:
        die(str(exc))


def _context(opts, explicit, baselines_dir, config_path, dcgm_level):
    from gpunode.bench.run import inventory, select_gpus, targets
    from gpunode.diag import dcgm
    from gpunode.diag.compare import floors_for
    from gpunode.diag.discover import find_backend
    from gpunode.diag.gatecheck import gate_result
    from gpunode.diag.run import DiagContext
    from gpunode.host.gpu.telemetry import TelemetrySampler
    from gpunode.host.seam import live_host

    host = live_host()
    inv = inventory(host)
    try:
        chosen = select_gpus(inv, opts.gpus)
    except ValueError as exc:
        die(str(exc))
    selection, note = explicit, None
    if selection is None:
        from gpunode.baselines.compare import catalogue_for
        from gpunode.baselines.schema import BaselineError

        try:
            selection = catalogue_for(baselines_dir).select(inv.summary())
        except BaselineError as exc:
            note = f"no per-SKU floors (clocks, power) judged: {exc}"
    backend, why = find_backend()
    devices, tools = {}, {}
    if backend is not None:
        tools.update(backend.versions())
        devices = {t.gpu: t.device for t in targets(host, backend, inv, chosen)}
    names = {g.index: g.name or "?" for g in inv.gpus}
    progress_console = stderr_console()

    def progress(text: str, left: float | None) -> None:
        tail = f" (about {left:.0f} s left)" if left is not None else ""
        progress_console.print(f"gpunode diag: {text}{tail}", highlight=False, markup=False)

    ctx = DiagContext(
        opts=opts, hostname=host.facts.hostname, now_epoch=host.facts.now, gpus_meta=inv.summary(), devices=devices,
        names=names, backend=backend, backend_why=why,
        sampler=TelemetrySampler.live(gpus=sorted(devices) if devices else chosen),
        floors=floors_for(selection), gate=lambda: gate_result(config_path),
        dcgm=(lambda: dcgm.run(host.runner, dcgm_level, chosen)) if opts.with_dcgm else None,
        progress=progress, tools=tools,
        app_clocks={g.index: g.sm_app_clock_mhz for g in inv.gpus if g.sm_app_clock_mhz},  # the clocks phase's target
    )
    if selection is not None:
        ctx.tools["baseline"] = selection.baseline.name
    # no baseline fits: --compare judges against what this host's links should give (gpunode expect)
    topology = [] if selection is not None else _topology(host, inv)
    return ctx, selection, note, topology


def _topology(host, inv) -> list[dict]:
    from gpunode.bench.run import topology_expectations

    return topology_expectations(host, inv)


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
