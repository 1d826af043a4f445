"""`gpunode fleet audit|apply|rollback|bench|gate|slurm|install -i INVENTORY`: run a playbook from
playbooks/ over the inventory through ansible-runner, then print one aggregated fleet report.
`gpunode fleet report DIR` prints the report of a finished run again."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import typer

from gpunode.cli.common import (
    ResultFormatOption,
    check_outputs,
    die,
    layout_of,
    stderr_console,
    stdout_console,
)
from gpunode.fleet.specs import PLAYBOOKS

_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*")
_BATCH = re.compile(r"^(?:[1-9][0-9]*|(?:[1-9][0-9]?|100)%)")

INVENTORY = typer.Option(..., "--inventory", "-i", help="Ansible inventory (INI or YAML file, or a directory).")
LIMIT = typer.Option(None, "--limit", "-l", help="Only these hosts or groups (an Ansible pattern, e.g. 'h100:!gpu-07').")
# No -f: it is --format in every gpunode command (one meaning per short option; tests/test_cli_options.py).
FORKS = typer.Option(10, "--forks", min=1, max=500, help="Hosts worked on in parallel (ansible-playbook's --forks).")
AS_JSON = typer.Option(False, "--json", help="Print the fleet report as JSON (schema gpunode.fleet/1).")
CHECK = typer.Option(False, "--check", help="Ansible check mode: apply/rollback/slurm run with --dry-run, bench does not run.")
EXTRA = typer.Option(None, "--extra-var", "-e", help="NAME=VALUE for every host (YAML value; repeatable), e.g. -e gpunode_expected_gpus=8.")
MARGIN = typer.Option(0.10, "--margin", help="Bench outlier: more than this fraction below the SKU group's median.")
MIN_PEERS = typer.Option(3, "--min-peers", min=2, help="Fewest hosts in a SKU group before outliers are flagged.")
NO_BENCH = (0.10, 3)  # margin and min-peers of commands without bench figures (their --help does not list them)
PLAYBOOK_DIR = typer.Option(None, "--playbooks", help="Playbook directory (default $GPUNODE_PLAYBOOKS, else the shipped playbooks).")
STATE_DIR = typer.Option(None, "--state-dir", help="Where runs and reports are kept (default /var/lib/gpunode as root, else ~/.local/state/gpunode).")
ROTATE = typer.Option(20, "--keep", min=1, help="Runs kept per playbook (older artifact directories are removed).")
TIMEOUT = typer.Option(None, "--timeout", min=1, help="Stop the whole run after this many seconds.")
VERBOSE = typer.Option(False, "--verbose", "-v", help="Show each failing check's message per host.")
QUIET = typer.Option(False, "--quiet", "-q", help="No live per-host progress on stderr.")
PROFILE = typer.Option(None, "--profile", "-p", help="Profile for every host (overrides gpunode_profile in the inventory).")
BATCH = typer.Option(None, "--batch", help="Hosts per batch after the canary: a count or a percentage (default 25%).")
MAX_FAIL = typer.Option(None, "--max-fail", min=0, max=100, help="Stop when more than this percentage of a batch fails (default 0).")


@dataclass
class Common:
    inventory: Path
    limit: str | None
    forks: int
    as_json: bool
    check: bool
    extra: list[str] | None
    margin: float
    min_peers: int
    playbooks: Path | None
    state_dir: Path | None
    keep: int
    timeout: int | None
    verbose: bool
    quiet: bool
    fmt: object = None  # --format (ResultFormat): a layout of the report, or json


def parse_extra_vars(items: list[str] | None) -> dict:
    from gpunode.inputs import InputError, parse_yaml

    out: dict = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        name = name.strip()
        if not sep or not _VAR_NAME.fullmatch(name):
            die(f"--extra-var {item!r}: expected NAME=VALUE")
        try:  # bounded: an alias bomb or a 10 000-deep list is passed on as the plain string it is
            value = parse_yaml(raw, f"--extra-var {name}") if raw.strip() else ""
        except InputError:
            value = raw
        out[name] = raw if value is None else value
    return out


HTML = typer.Option(None, "--html", help="Also write the report as one self-contained HTML page (hosts, failing checks, changes; plots for trends).")


def _write_html(path: Path | None, document: dict) -> None:
    if path is None:
        return
    from gpunode.fleet.html import fleet_html
    from gpunode.outputs import write_atomic

    try:
        write_atomic(path, fleet_html(document))
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror or exc}", 3)


def _run(name: str, opts: Common, extravars: dict, html: Path | None = None) -> None:
    from gpunode.fleet.report import fleet_document
    from gpunode.fleet.runner import FLEET_FILE, default_state_dir, run_playbook, write_private
    from gpunode.fleet.specs import playbooks_dir
    from gpunode.fleet.validate import FleetError, validate
    from gpunode.outputs import dumps

    spec = PLAYBOOKS[name]
    if not 0 < opts.margin < 1:
        die(f"--margin {opts.margin}: give a fraction between 0 and 1 (0.1 = 10 %)")
    check_outputs(html)  # a path that cannot be written: said now, not after the run
    extravars = {**parse_extra_vars(opts.extra), **extravars}
    pdir = playbooks_dir(opts.playbooks)
    try:
        inventory = validate(spec, opts.inventory, opts.limit, extravars, pdir)
    except FleetError as exc:
        die(str(exc))
    state_dir = opts.state_dir or default_state_dir()
    console = None if opts.quiet else stderr_console()
    if console is not None:
        mode = " in check mode" if opts.check else ""
        console.print(f"gpunode fleet {name}: {len(inventory.hosts)} hosts{mode}, {pdir / spec.file}", highlight=False)
    try:
        run = run_playbook(spec, inventory, pdir, state_dir, extravars=extravars, forks=opts.forks, check=opts.check,
                           rotate=opts.keep, timeout=opts.timeout, console=console)
    except FleetError as exc:
        die(str(exc))
    except OSError as exc:
        die(f"cannot use state dir {state_dir}: {exc.strerror or exc}")
    document = fleet_document(run, margin=opts.margin, min_peers=opts.min_peers)
    write_private(run.artifact_dir / FLEET_FILE, dumps(document))
    _write_html(html, document)
    _print_report(document, *layout_of(opts.fmt, opts.as_json), opts.verbose)


def _print_report(document: dict, as_json: bool, layout: str | None, verbose: bool) -> None:
    """The fleet report as its JSON document or in a layout; exits with the fleet's code."""
    from gpunode.fleet.render import render_fleet
    from gpunode.outputs import dumps

    if as_json:
        typer.echo(dumps(document), nl=False)
    else:
        render_fleet(document, stdout_console(), verbose=verbose, fmt=layout)
    raise typer.Exit(document["exit_code"])


def _batch_vars(batch: str | None, max_fail: int | None) -> dict:
    out: dict = {}
    if batch is not None:
        if not _BATCH.fullmatch(batch.strip()):
            die(f"--batch {batch!r}: give a host count (5) or a percentage (25%)")
        out["gpunode_batch"] = batch.strip()
    if max_fail is not None:
        out["gpunode_max_fail_percentage"] = max_fail
    return out


def audit(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
          check: bool = CHECK, extra: list[str] = EXTRA, profile: str = PROFILE, playbooks: Path = PLAYBOOK_DIR,
          state_dir: Path = STATE_DIR, keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE,
          quiet: bool = QUIET, fmt: ResultFormatOption = None, html: Path = HTML) -> None:
    """gpunode audit on every host; one report: hosts x status, and which hosts fail each check."""
    opts = Common(inventory, limit, forks, as_json, check, extra, *NO_BENCH, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("audit", opts, {"gpunode_profile": profile} if profile else {}, html)


def apply(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
          check: bool = CHECK, extra: list[str] = EXTRA, profile: str = PROFILE, batch: str = BATCH,
          max_fail: int = MAX_FAIL, playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR, keep: int = ROTATE,
          timeout: int = TIMEOUT, verbose: bool = VERBOSE, quiet: bool = QUIET, fmt: ResultFormatOption = None,
          html: Path = HTML, prove: bool = typer.Option(False, "--prove", help="Each node benches before and after and keeps the change only if no figure got worse; the canary must prove it before the rest.")) -> None:
    """gpunode apply --profile on every host: one canary, then batches; --check shows the plans."""
    opts = Common(inventory, limit, forks, as_json, check, extra, *NO_BENCH, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("apply", opts, {**({"gpunode_profile": profile} if profile else {}), **_batch_vars(batch, max_fail),
                         **({"gpunode_prove": True} if prove else {})}, html)


def rollback(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
             check: bool = CHECK, extra: list[str] = EXTRA, batch: str = BATCH, max_fail: int = MAX_FAIL,
             playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR, keep: int = ROTATE, timeout: int = TIMEOUT,
             verbose: bool = VERBOSE, quiet: bool = QUIET, fmt: ResultFormatOption = None, html: Path = HTML) -> None:
    """gpunode rollback on every host: one canary, then batches; --check shows what would be restored."""
    opts = Common(inventory, limit, forks, as_json, check, extra, *NO_BENCH, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("rollback", opts, _batch_vars(batch, max_fail), html)


def bench(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
          check: bool = CHECK, extra: list[str] = EXTRA,
          mode: str = typer.Option(None, "--mode", help="quick or full (default: gpunode_bench_mode, else quick)."),
          margin: float = MARGIN, min_peers: int = MIN_PEERS, playbooks: Path = PLAYBOOK_DIR,
          state_dir: Path = STATE_DIR, keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE,
          quiet: bool = QUIET, fmt: ResultFormatOption = None, html: Path = HTML) -> None:
    """gpunode bench on every host; per metric each SKU group's median, each host's ratio, outliers."""
    if mode is not None and mode not in ("quick", "full"):
        die(f"--mode {mode!r}: give quick or full")
    opts = Common(inventory, limit, forks, as_json, check, extra, margin, min_peers, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("bench", opts, {"gpunode_bench_mode": mode} if mode else {}, html)


def diag(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
         check: bool = CHECK, extra: list[str] = EXTRA,
         level: int = typer.Option(None, "--level", min=1, max=3, help="diag level 1, 2 or 3 (default: gpunode_diag_level, else 1)."),
         duration: int = typer.Option(None, "--duration", min=45, help="Seconds per node at level 2 or 3 (default: the level's)."),
         margin: float = MARGIN, min_peers: int = MIN_PEERS, playbooks: Path = PLAYBOOK_DIR,
         state_dir: Path = STATE_DIR, keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE,
         quiet: bool = QUIET, fmt: ResultFormatOption = None, html: Path = HTML) -> None:
    """gpunode diag on every host (run it on drained or idle nodes): which hosts fail which test, and the
    checked-GEMM TFLOP/s against each SKU group's median."""
    opts = Common(inventory, limit, forks, as_json, check, extra, margin, min_peers, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    extravars: dict = {}
    if level is not None:
        extravars["gpunode_diag_level"] = level
    if duration is not None:
        extravars["gpunode_diag_duration"] = duration
    _run("diag", opts, extravars, html)


def gate(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
         check: bool = CHECK, extra: list[str] = EXTRA, playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR,
         keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE, quiet: bool = QUIET,
         fmt: ResultFormatOption = None, html: Path = HTML) -> None:
    """gpunode gate (the fast pre-job health subset) on every host."""
    opts = Common(inventory, limit, forks, as_json, check, extra, *NO_BENCH, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("gate", opts, {}, html)


def trends(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
           extra: list[str] = EXTRA, html: Path = HTML, playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR,
           keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE, quiet: bool = QUIET,
           fmt: ResultFormatOption = None) -> None:
    """Collect every host's bench history: per SKU the distribution of each metric and the hosts
    drifting down over time (--html FILE: the same with plots, for fleets of hundreds)."""
    opts = Common(inventory, limit, forks, as_json, False, extra, 0.10, 3, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("trends", opts, {}, html)


def slurm(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
          check: bool = CHECK, extra: list[str] = EXTRA, playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR,
          keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE, quiet: bool = QUIET,
          fmt: ResultFormatOption = None) -> None:
    """Install the gpunode gate into Slurm (Prolog, HealthCheckProgram) on every host."""
    opts = Common(inventory, limit, forks, as_json, check, extra, 0.10, 3, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("slurm", opts, {})


def install(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
            check: bool = CHECK, extra: list[str] = EXTRA,
            wheel: Path = typer.Option(None, "--wheel", help="A gpunode wheel on this machine (pip wheel --no-deps -w dist .)."),
            pip_spec: str = typer.Option(None, "--pip-spec", help="Install from the package index instead, e.g. 'gpunode==0.1.0'."),
            playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR, keep: int = ROTATE, timeout: int = TIMEOUT,
            verbose: bool = VERBOSE, quiet: bool = QUIET, fmt: ResultFormatOption = None) -> None:
    """Install gpunode into a venv on every host (idempotent)."""
    extravars: dict = {}
    if wheel is not None:
        if not wheel.is_file() or wheel.suffix != ".whl":
            die(f"--wheel {wheel}: not a .whl file")
        extravars["gpunode_wheel"] = str(wheel.resolve())
    if pip_spec:
        extravars["gpunode_pip_spec"] = pip_spec
    opts = Common(inventory, limit, forks, as_json, check, extra, 0.10, 3, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("install", opts, extravars)


def watch_status(inventory: Path = INVENTORY, limit: str = LIMIT, forks: int = FORKS, as_json: bool = AS_JSON,
                 extra: list[str] = EXTRA, playbooks: Path = PLAYBOOK_DIR, state_dir: Path = STATE_DIR,
                 keep: int = ROTATE, timeout: int = TIMEOUT, verbose: bool = VERBOSE, quiet: bool = QUIET,
                 fmt: ResultFormatOption = None, html: Path = HTML) -> None:
    """Each host's gpunode watch state (/run/gpunode/health.json): its verdict, whether a live watcher
    keeps it fresh, the checks it last read, its recent events and actions. No watcher: UNKNOWN."""
    opts = Common(inventory, limit, forks, as_json, False, extra, *NO_BENCH, playbooks, state_dir, keep,
                  timeout, verbose, quiet, fmt)
    _run("watch", opts, {}, html)


def report(
    artifact_dir: Path = typer.Argument(..., help="A run's artifact directory (printed after each fleet run)."),
    as_json: bool = AS_JSON, margin: float = MARGIN, min_peers: int = MIN_PEERS, verbose: bool = VERBOSE,
    html: Path = HTML, fmt: ResultFormatOption = None,
) -> None:
    """Print the fleet report of a finished run again (e.g. with another --margin)."""
    from gpunode.fleet.report import fleet_document
    from gpunode.fleet.runner import PlaybookRun
    from gpunode.fleet.validate import FleetError

    if not 0 < margin < 1:
        die(f"--margin {margin}: give a fraction between 0 and 1 (0.1 = 10 %)")
    if not artifact_dir.is_dir():
        die(f"{artifact_dir}: not a directory")
    try:
        run = PlaybookRun.load(artifact_dir)
    except FleetError as exc:
        die(str(exc))
    document = fleet_document(run, margin=margin, min_peers=min_peers)
    _write_html(html, document)
    _print_report(document, *layout_of(fmt, as_json), verbose)


def register(app: typer.Typer) -> None:
    fleet = typer.Typer(name="fleet", no_args_is_help=True,
                        help="Run gpunode on many hosts through Ansible (playbooks/) and aggregate the reports.")
    for name, func in (("audit", audit), ("apply", apply), ("rollback", rollback), ("bench", bench),
                       ("diag", diag), ("gate", gate), ("trends", trends), ("slurm", slurm), ("install", install)):
        fleet.command(name)(func)
    fleet.command("report")(report)
    from gpunode.cli.fleet_locate_cmd import locate  # the pair-test command lives in its own module

    fleet.command("locate")(locate)
    watch = typer.Typer(name="watch", no_args_is_help=True, help="The resident watchers (gpunode watch) of many hosts.")
    watch.command("status")(watch_status)
    fleet.add_typer(watch, name="watch")
    app.add_typer(fleet, name="fleet")
