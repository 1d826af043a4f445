"""The `gpunode` command line. Each command group lives in its own module; heavy imports
happen inside the commands so that `gpunode --help` stays instant."""

from __future__ import annotations

import typer

from gpunode import __version__

app = typer.Typer(
    name="gpunode",
    help="Audit, tune, benchmark and gate GPU servers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gpunode {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Exit codes (audit, gate, compare): 0 OK, 1 WARN, 2 FAIL, 3 UNKNOWN/ERROR; 2 also for bad input."""


def _register() -> None:
    from gpunode.cli import apply_cmd, audit_cmd, baseline_cmd, bench_cmd, fleet_cmd, gate_cmd

    for module in (audit_cmd, apply_cmd, bench_cmd, baseline_cmd, gate_cmd, fleet_cmd):
        module.register(app)


_register()


def main() -> None:
    app()
