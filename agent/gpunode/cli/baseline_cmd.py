"""`gpunode compare`, `gpunode baseline list|show|record`, `gpunode golden record`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from gpunode.cli.common import (
    PROMETHEUS_HELP,
    ResultFormatOption,
    check_outputs,
    die,
    layout_of,
    split_csv,
    stderr_console,
    stdout_console,
    write_prometheus,
)
from gpunode.layout import show_table

baseline_app = typer.Typer(help="Hardware baselines: list, show, record a host's own.", no_args_is_help=True)
golden_app = typer.Typer(help="Golden config (pinned versions) for `gpunode audit --golden FILE`.", no_args_is_help=True)

_BASELINES_HELP = "Site baselines directory (ahead of the shipped ones). Default: config baselines_dir, else /etc/gpunode/baselines."


def _catalogue(baselines: Path | None, config: str | None):
    from gpunode.baselines.select import Catalogue, site_dirs
    from gpunode.config import load_config

    cfg = load_config(config)
    return Catalogue(site_dirs(baselines, cfg.baselines_dir)), cfg


def compare_or_die(bench, catalogue, baseline: str | None, force: bool = False):
    """baselines.compare.compare() for both `gpunode compare` and `bench --compare`: no baseline
    for this hardware exits 3 (UNKNOWN), a bad baseline file or one for other GPUs (unless
    force, --force-baseline) 2."""
    from gpunode.baselines.compare import compare
    from gpunode.baselines.schema import BaselineError
    from gpunode.baselines.select import NoBaselineError

    try:
        return compare(bench, catalogue, baseline, force=force)
    except NoBaselineError as exc:
        die(str(exc), NoBaselineError.exit_code)
    except BaselineError as exc:
        die(str(exc))
    raise AssertionError("unreachable")


def _read_results(path: Path) -> dict:
    from gpunode.inputs import InputError, load_json

    try:  # bounded, regular files only; NaN is judged per metric (a value must be finite)
        return load_json(path, max_bytes=64 * 1024 * 1024, allow_nonfinite=True)
    except InputError as exc:
        die(f"{exc}; expected `gpunode bench --json` output")
    raise AssertionError("unreachable")


def compare_cmd(
    results: Path = typer.Argument(..., help="A `gpunode bench --json` result file."),
    baseline: str = typer.Option(None, "--baseline", "-b", help="Baseline name or YAML file, or `topology` (what the host's links should give). Default: chosen from the results' GPUs, else the topology expectation."),
    baselines: Path = typer.Option(None, "--baselines", help=_BASELINES_HELP),
    force_baseline: bool = typer.Option(False, "--force-baseline", help="Judge against --baseline even when it is for other GPUs than the results' (the report says so)."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as JSON (schema gpunode.compare/1)."),
    fmt: ResultFormatOption = None,
    prometheus: Path = typer.Option(None, "--prometheus", help=PROMETHEUS_HELP),
    config: str = typer.Option(None, "--config", help="Config file (default $GPUNODE_CONFIG or /etc/gpunode/config.yaml)."),
) -> None:
    """Judge saved bench results against a hardware baseline: PASS/WARN/FAIL per metric.
    Exit 0 OK, 1 WARN, 2 FAIL, 3 UNKNOWN (nothing comparable, no baseline for this hardware)."""
    from gpunode.baselines.compare import render_verdicts
    from gpunode.baselines.schema import BaselineError
    from gpunode.bench.results import BenchDocument
    from gpunode.config import ConfigError
    from gpunode.outputs import dumps

    doc = _read_results(results)
    try:
        bench = BenchDocument.from_json(doc)
    except (ValueError, TypeError, KeyError) as exc:
        die(f"{results}: {exc}")
    try:
        catalogue, _ = _catalogue(baselines, config)
    except (BaselineError, ConfigError) as exc:
        die(str(exc))
    verdicts = compare_or_die(bench, catalogue, baseline or None, force_baseline)
    write_prometheus(prometheus, verdicts.to_json())
    as_json, layout = layout_of(fmt, as_json)
    if as_json:
        typer.echo(dumps(verdicts.to_json()), nl=False)
    else:
        render_verdicts(verdicts, stdout_console(), layout)
    raise typer.Exit(verdicts.exit_code)


@baseline_app.command("list")
def list_cmd(
    baselines: Path = typer.Option(None, "--baselines", help=_BASELINES_HELP),
    config: str = typer.Option(None, "--config", help="Config file."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON (schema gpunode.baselines/1)."),
    fmt: ResultFormatOption = None,
) -> None:
    """The baselines gpunode can use, site ones first: name, origin, what hardware they match."""
    from gpunode.baselines.schema import BaselineError
    from gpunode.cli.listings import baseline_row, baselines_document
    from gpunode.config import ConfigError
    from gpunode.outputs import dumps

    try:
        catalogue, _ = _catalogue(baselines, config)
        entries = catalogue.entries()
    except (BaselineError, ConfigError) as exc:
        die(str(exc))
    rows = []
    for e in entries:
        try:
            rows.append(baseline_row(e, catalogue.load(e.path)))
        except BaselineError as exc:
            rows.append(baseline_row(e, error=str(exc)))
    as_json, layout = layout_of(fmt, as_json)
    if as_json:
        typer.echo(dumps(baselines_document(rows)), nl=False)
        return
    show_table(stdout_console(), _baselines_table(rows), layout)


def _baselines_table(rows: list[dict]):
    from rich.table import Table

    table = Table(title=f"gpunode baselines ({len(rows)})")
    for col in ("Name", "Origin", "Matches", "Metrics", "File"):
        table.add_column(col, no_wrap=col == "Name")
    for r in rows:
        matches = f"invalid: {r['error']}" if r["error"] else (r["matches"] or "(only by --baseline)")
        table.add_row(r["name"], r["origin"], escape(matches), "" if r["metrics"] is None else str(r["metrics"]),
                      r["file"])
    return table


@baseline_app.command("show")
def show_cmd(
    name: str = typer.Argument(..., help="Baseline name or YAML file."),
    baselines: Path = typer.Option(None, "--baselines", help=_BASELINES_HELP),
    config: str = typer.Option(None, "--config", help="Config file."),
    as_json: bool = typer.Option(False, "--json", help="Print as JSON (schema gpunode.baseline-resolved/1)."),
    fmt: ResultFormatOption = None,
) -> None:
    """One baseline with `extends` applied: every metric, its conditions, ratios and source."""
    from gpunode.baselines.schema import BaselineError
    from gpunode.cli.listings import baseline_document
    from gpunode.config import ConfigError
    from gpunode.outputs import dumps

    try:
        catalogue, _ = _catalogue(baselines, config)
        selection = catalogue.resolve(name)
    except (BaselineError, ConfigError) as exc:
        die(str(exc))
    as_json, layout = layout_of(fmt, as_json)
    if as_json:
        typer.echo(dumps(baseline_document(selection.baseline)), nl=False)
        return
    show_table(stdout_console(), _baseline_table(selection.baseline), layout)


def _baseline_table(b):
    from rich.table import Table

    from gpunode.baselines.compare import _show

    chain = " <- ".join(str(p) for p in b.chain)
    table = Table(title=f"baseline {b.name}: {b.description}\n{b.match.describe() if b.match else 'no match (only by --baseline)'}; {chain}")
    for col in ("Metric", "Expected", "Better", "Warn/Fail", "Conditions", "Basis", "Source"):
        table.add_column(col, no_wrap=col in ("Metric", "Expected"))
    for e in b.expectations:
        conds = ", ".join(f"{k}={_show(v)}" for k, v in e.conditions.items())
        table.add_row(e.key, f"{e.value:g} {e.unit}", e.better, f"{e.warn:.3g}/{e.fail:.3g}", conds, e.basis, e.source)
    return table


@baseline_app.command("record")
def record_cmd(
    name: str = typer.Option(..., "--name", help="Name of the new baseline (letters, digits, . _ -)."),
    runs: int = typer.Option(3, "--runs", help="How many bench runs to take the medians of."),
    output: Path = typer.Option(None, "--output", "-o", help="Write the YAML here (default: stdout)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    full: bool = typer.Option(False, "--full", help="Record `bench --full` figures (default: --quick)."),
    only: list[str] = typer.Option(None, "--only", help="Benchmarks to run (gemm,hbm,h2d,p2p,nccl,fio,allreduce,gdr)."),
    from_: list[Path] = typer.Option(None, "--from", help="Use saved `bench --json` results instead of running (repeatable)."),
    description: str = typer.Option(None, "--description", help="Description to write into the file."),
) -> None:
    """Run the bench N times and write a baseline from the medians, with the observed spread
    as the warn/fail margins: this host's own golden baseline."""
    from gpunode.baselines.record import build_baseline, record_runs, to_yaml
    from gpunode.baselines.schema import BaselineError, load_baseline

    if output is not None and output.exists() and not force:
        die(f"{output}: exists; choose another path or pass --force")
    check_outputs(output)  # said now, not after the bench runs
    try:
        if from_:
            docs = [_read_results(p) for p in from_]
        else:
            docs = record_runs(lambda i: _bench_once(i, runs, full, split_csv(only)), runs)
        mapping, notes = build_baseline(docs, name, description)
    except (BaselineError, ValueError) as exc:
        die(str(exc))
    text = to_yaml(mapping)
    _check_written(text, name, load_baseline)
    _emit(text, None if output is None else str(output), notes,
          f"baseline {name} written to {output} ({len(mapping['metrics'])} metrics)")


def _check_written(text: str, name: str, load_baseline) -> None:
    """What we write must load back: validate through the same loader before writing."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gpunode-baseline-") as tmp:
        path = Path(tmp) / f"{name}.yaml"
        path.write_text(text)
        try:
            load_baseline(path)
        except ValueError as exc:
            die(f"internal error: the recorded baseline does not validate: {exc}", 3)


def _bench_once(i: int, runs: int, full: bool, only: list[str]) -> dict:
    from gpunode.bench.run import SECTIONS, BenchOptions, run_steps
    from gpunode.host.seam import live_host

    opts = BenchOptions(mode="full" if full else "quick", only=tuple(only) if only else SECTIONS)
    err = stderr_console()
    err.print(f"bench run {i + 1}/{runs} ({opts.mode}) ...", markup=False, highlight=False)
    return run_steps(live_host(), opts).to_json()


@golden_app.command("record")
def golden_record_cmd(
    output: Path = typer.Option(..., "--output", "-o", help="Golden YAML to write ('-' for stdout)."),
    snapshot: Path = typer.Option(None, "--snapshot", help="Record from a snapshot directory instead of this host."),
    severity: str = typer.Option("warning", "--severity", help="Severity of each difference: warning (WARN) or critical (FAIL)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a golden config from this host: driver, CUDA driver, VBIOS, kernel, OS, NCCL,
    Fabric Manager, GPU count, NIC firmware (whatever can be read; the rest is said on stderr)."""
    from gpunode.audit.golden import collect, golden_yaml
    from gpunode.host.seam import live_host, snapshot_host
    from gpunode.outputs import iso_time

    if severity not in ("warning", "critical"):
        die(f"--severity {severity!r}: warning or critical")
    if str(output) != "-" and output.exists() and not force:
        die(f"{output}: exists; choose another path or pass --force")
    if snapshot is not None and not snapshot.is_dir():
        die(f"{snapshot}: not a directory")
    try:
        host = snapshot_host(snapshot) if snapshot else live_host()
    except (FileNotFoundError, ValueError) as exc:
        die(str(exc))
    facts, notes = collect(host)
    if not facts:
        die("nothing could be read from this host: no golden file written", 3)
    text = golden_yaml(facts, host.facts.hostname, iso_time(host.facts.now),
                       f"snapshot:{snapshot}" if snapshot else "live", severity)
    _emit(text, None if str(output) == "-" else str(output), notes,
          f"golden config written to {output} ({len(facts)} pins)")


def _emit(text: str, output: str | None, notes: list[str], done: str) -> None:
    """Notes on stderr; the YAML on stdout (output None) or written atomically to `output`."""
    from gpunode.outputs import write_atomic

    err = stderr_console()
    for note in notes:
        err.print(f"note: {note}", markup=False, highlight=False)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        write_atomic(output, text, mode=0o644)
    except OSError as exc:
        die(f"cannot write {output}: {exc.strerror or exc}", 3)
    err.print(done, markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("compare")(compare_cmd)
    app.add_typer(baseline_app, name="baseline")
    app.add_typer(golden_app, name="golden")
