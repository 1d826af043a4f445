"""`gpunode gate` (the pre-job health gate; its work is in gate_run) and `gpunode slurm install`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from gpunode.cli.common import ResultFormatOption, die, layout_of, options_command
from gpunode.slurm.fastpath import GATE_HELP, GATE_OPTIONS, execute


def gate_command():
    """typer's `gate` command, built from GATE_OPTIONS (the one declaration the fast parser
    reads too). `gpunode gate` normally runs through fastpath.fast_main; typer shows its help."""
    return options_command(GATE_OPTIONS, execute, GATE_HELP)


slurm_app = typer.Typer(help="Slurm integration: the gate as Prolog, Epilog and HealthCheckProgram.",
                        no_args_is_help=True)


@slurm_app.command("install")
def slurm_install(
    prefix: Path = typer.Option(Path("/etc/slurm"), "--prefix", help="Directory for the hook scripts."),
    dry_run: bool = typer.Option(False, "--dry-run", "--check", "-n", help="Print the scripts and the slurm.conf lines; write nothing."),
    config: Path = typer.Option(None, "--config", help="Bake this GPUNODE_CONFIG default into the hooks."),
    snapshot: Path = typer.Option(None, "--snapshot", help="Bake this GPUNODE_SNAPSHOT default into the hooks (tests, demos)."),
    timeout: float = typer.Option(None, "--timeout", help="Gate budget passed to the hooks (default: the gate's 20 s)."),
    strict: bool = typer.Option(False, "--strict", help="Hooks block on ERROR too."),
    interval: int = typer.Option(None, "--interval", help="HealthCheckInterval in seconds (default: the one slurm.conf has, else 300)."),
    slurm_conf: Path = typer.Option(None, "--slurm-conf", help="Bake this SLURM_CONF default into the hooks (slurm.conf not in the default place)."),
    chain: str = typer.Option(None, "--chain", help="Run this HealthCheckProgram (e.g. /usr/sbin/nhc) before gpunode's. Default: the one slurm.conf names already."),
    no_chain: bool = typer.Option(False, "--no-chain", help="Replace an existing HealthCheckProgram instead of chaining with it."),
    watch: bool = typer.Option(False, "--watch", help="Also install gpunode-watch.service (enabled and started where systemd runs) and let the prolog trust its fresh OK verdict without starting Python."),
    watch_poll: float = typer.Option(10.0, "--watch-poll", help="--watch: seconds between the watcher's polls; its verdict counts for 2 polls."),
    unit_dir: Path = typer.Option(Path("/etc/systemd/system"), "--unit-dir", help="--watch: where the unit goes (enabled only in /etc/systemd/system)."),
    fmt: ResultFormatOption = None,
) -> None:
    """Install gpunode-prolog, gpunode-epilog, gpunode-healthcheck (0755, root-owned) under
    --prefix and print the slurm.conf lines that use them. --format: each file a row (with
    --dry-run: what would be written; json has the texts), the slurm.conf lines below."""
    prefix = prefix.absolute()
    for value, what in ((config, "--config"), (snapshot, "--snapshot"), (slurm_conf, "--slurm-conf")):
        if value is not None and not value.exists():
            die(f"{what} {value}: does not exist")
    if interval is not None and interval <= 0:
        die("--interval must be positive")
    scripts, unit = _hooks(prefix, config, snapshot, timeout, strict, slurm_conf, watch, watch_poll)
    plan = _plan(prefix, chain, no_chain, slurm_conf, interval)
    scripts += plan.scripts
    files = _Files(fmt is None)
    if dry_run:
        _show(scripts, unit, unit_dir, files)
    else:
        _write(prefix, scripts, unit, unit_dir, files)
    if fmt is None:
        typer.echo("\n# Set in slurm.conf (the site's own hooks run first, through the chains), then "
                   "`scontrol reconfigure`:")
        for line in plan.conf_lines:
            typer.echo(line)
    else:
        _show_install(files.rows, plan.conf_lines, fmt, dry_run)
    _warn_if_transient()  # after the work: never ahead of an error


def _hooks(prefix: Path, config, snapshot, timeout, strict: bool, slurm_conf, watch: bool, watch_poll: float):
    """-> (the hook scripts, the watcher's unit text or None); a bad value is one error line."""
    from gpunode.slurm.install import hook_scripts

    try:
        verdict, unit = _watch_parts(watch, watch_poll, config)
        scripts = hook_scripts(prefix, sys.executable, str(config.absolute()) if config else None,
                               str(snapshot.absolute()) if snapshot else None, timeout, strict,
                               str(slurm_conf.absolute()) if slurm_conf else None, watch=verdict)
    except ValueError as exc:
        die(str(exc))
    return scripts, unit


class _Files:
    """What install did (or would do) to each file, said as it goes (no --format) and kept as rows."""

    def __init__(self, say: bool) -> None:
        self.say, self.rows = say, []

    def __call__(self, result: str, path, mode: str, text: str | None = None, line: str | None = None) -> None:
        self.rows.append({"path": str(path), "result": result, "mode": mode, **({"text": text} if text else {})})
        if self.say:
            typer.echo(line or f"{result}: {path}")


def _show(scripts, unit: str | None, unit_dir: Path, files: _Files) -> None:
    for s in scripts:
        files("would write", s.path, "0755", s.text, f"# would write {s.path} (0755, root:root)\n{s.text}")
    if unit:
        path = unit_dir / "gpunode-watch.service"
        files("would write and enable", path, "0644", unit, f"# would write {path} (0644) and enable it\n{unit}")


def _show_install(rows: list[dict], conf_lines: list[str], fmt, dry_run: bool) -> None:
    """--format: the files as rows (json: the document, with the texts a dry run would write)."""
    from gpunode.cli.common import stdout_console
    from gpunode.layout import Col, show
    from gpunode.outputs import dumps

    as_json, layout = layout_of(fmt, False)
    if as_json:
        typer.echo(dumps({"schema": INSTALL_SCHEMA, "dry_run": dry_run, "files": rows,
                          "slurm_conf": list(conf_lines)}), nl=False)
        return
    footer = ["Set in slurm.conf, then `scontrol reconfigure`:", *conf_lines]
    show(stdout_console(), "gpunode slurm install" + (" (dry run)" if dry_run else ""),
         [Col("File", whole=True), Col("Result", whole=True), Col("Mode")],
         [[r["path"], r["result"], r["mode"]] for r in rows], layout, footer)
    if layout == "tsv":  # stdout: the header and the rows
        typer.echo("\n".join(footer), err=True)


INSTALL_SCHEMA = "gpunode.slurm-install/1"


def _write(prefix: Path, scripts, unit: str | None, unit_dir: Path, files: _Files) -> None:
    from gpunode.slurm.install import install_script

    if not prefix.is_dir():
        die(f"--prefix {prefix}: not a directory")
    as_root = os.geteuid() == 0
    if not as_root:
        print("gpunode: warning: not root: the hooks will not be root-owned; slurmd runs them as root",
              file=sys.stderr)
    for s in scripts:
        try:
            state = install_script(s, as_root)
        except OSError as exc:
            die(f"cannot write {s.path}: {exc.strerror or exc}", 3)
        files(state, s.path, "0755")
    if unit:
        _install_unit(unit_dir, unit, files)


def _warn_if_transient() -> None:
    from gpunode.slurm.install import package_main, transient_install

    transient = transient_install(sys.executable, package_main())
    if transient:
        print(f"gpunode: warning: the hooks run {transient}, a place installs come and go; if it goes they "
              "step aside (a syslog line, no drain) and the gate stops. A dedicated venv such as /opt/gpunode "
              "lasts (docs/gate.md)", file=sys.stderr)


def _watch_parts(watch: bool, poll_s: float, config: Path | None):
    """--watch: the prolog's view of the watcher's verdict and the unit text; (None, None) without it."""
    if not watch:
        return None, None
    import math

    from gpunode.slurm.install import WatchVerdict
    from gpunode.watch.unit import unit_text

    unit = unit_text(sys.executable, poll_s, config=str(config.absolute()) if config else None)
    return WatchVerdict(max_age_s=math.ceil(2 * poll_s)), unit


SYSTEM_UNIT_DIR = "/etc/systemd/system"


def _install_unit(unit_dir: Path, unit: str, files: _Files) -> None:
    """Write gpunode-watch.service (0644); enable and start it where systemd runs."""
    from gpunode.outputs import write_atomic
    from gpunode.watch.unit import UNIT_NAME

    path = unit_dir / UNIT_NAME
    try:
        old = path.read_text() if path.is_file() else None
        if old != unit:
            write_atomic(path, unit, mode=0o644)
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror or exc}", 3)
    files("unchanged" if old == unit else "written", path, "0644")
    if unit_dir != Path(SYSTEM_UNIT_DIR) or not Path("/run/systemd/system").is_dir():
        why = "systemd is not running here" if unit_dir == Path(SYSTEM_UNIT_DIR) else f"{unit_dir} is not {SYSTEM_UNIT_DIR}"
        print(f"gpunode: note: {why}: enable it yourself with systemctl enable --now {UNIT_NAME}", file=sys.stderr)
        return
    from gpunode.host.runner import Runner

    runner = Runner()
    for argv in (["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]):
        result = runner.run(argv, timeout=60)
        if not result.ok:
            die(f"{' '.join(argv)} failed: {(result.stderr or result.error or '').strip()}", 3)
    files("enabled and started", UNIT_NAME, "")


def _plan(prefix: Path, chain: str | None, no_chain: bool, slurm_conf: Path | None, interval: int | None):
    """Read the site's slurm.conf (--slurm-conf, $SLURM_CONF, /etc/slurm/slurm.conf): keep its
    Prolog, Epilog and HealthCheckProgram running (chains) and its settings (gpunode.slurm.chain)."""
    from gpunode.slurm.chain import conf_values, plan_install

    if chain and no_chain:
        die("give --chain or --no-chain, not both")
    conf = slurm_conf or Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")
    try:
        plan = plan_install(prefix, conf_values(conf), chain, no_chain, interval)
    except ValueError as exc:
        die(str(exc))
    for note in plan.notes:
        print(f"gpunode: {note}", file=sys.stderr)
    return plan


def register(app) -> None:
    from gpunode.cli.slurm_drain_cmd import drain  # `gpunode slurm drain` lives in its own module

    app.command("gate")(gate_command())
    slurm_app.command("drain")(drain)
    app.add_typer(slurm_app, name="slurm")
