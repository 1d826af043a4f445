"""The `gpunode` command line. Each command group lives in its own module; heavy imports
happen inside the commands so that `gpunode --help` stays instant."""

from __future__ import annotations

import sys

from gpunode import __version__


def _build_app():
    """The typer app, built on first use: `gpunode gate` runs before every Slurm job and skips
    typer and the pydantic it loads (~100 ms); see gpunode.slurm.fastpath."""
    import typer

    from gpunode.cli.common import command_group_class

    app = typer.Typer(
        name="gpunode",
        cls=command_group_class(),  # click's usage errors: one `gpunode: error:` line, exit 3
        help="Audit, tune, benchmark and gate GPU servers.",
        no_args_is_help=True,
        add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: reflowed paragraphs, 80 columns, no `<bool>` on flags
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"gpunode {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print the version."),
        debug: bool = typer.Option(False, "--debug", help="List every command gpunode runs and every file it reads, on stderr."),
    ) -> None:
        """Exit codes (every command): 0 OK, 1 WARN, 2 FAIL, 3 UNKNOWN, gpunode's own error or bad input."""
        if debug:
            _debug_to_stderr()

    _register(app)
    from gpunode.cli.common import guard_commands

    guard_commands(app)  # bad input: one `gpunode: error:` line, never a traceback
    return app


def _debug_to_stderr() -> None:
    """--debug: the Runner and SysRoot log each command and file read to `gpunode.debug`."""
    import logging

    from gpunode.host.debug import LOGGER

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("gpunode: debug: %(message)s"))
    log = logging.getLogger(LOGGER)
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)


def __getattr__(name: str):
    if name == "app":  # `from gpunode.cli import app` (tests) gets a fresh app
        return _build_app()
    raise AttributeError(name)


def _register(app) -> None:
    from gpunode.cli import (
        apply_cmd,
        audit_cmd,
        baseline_cmd,
        bench_cmd,
        config_cmd,
        diag_cmd,
        fleet_cmd,
        gate_cmd,
        history_cmd,
        topo_cmd,
        watch_cmd,
    )

    for module in (audit_cmd, apply_cmd, bench_cmd, diag_cmd, baseline_cmd, gate_cmd, fleet_cmd, history_cmd,
                   config_cmd, topo_cmd, watch_cmd):
        module.register(app)


def main() -> None:
    from gpunode.cli.streams import tolerant_output

    tolerant_output()
    if sys.argv[1:2] == ["gate"]:
        from gpunode.slurm.fastpath import fast_main

        code = fast_main(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    if sys.argv[1:2] == ["watch"]:  # resident for months: without typer's ~20 MB (cli/watch_cmd.py)
        from gpunode.cli.watch_cmd import fast_main as watch_main

        code = watch_main(sys.argv[2:])
        if code is not None:
            sys.exit(code)
    from gpunode.cli.common import nagios_requested, run_as_nagios_plugin

    if nagios_requested(sys.argv[1:]):
        sys.exit(run_as_nagios_plugin(_build_app(), sys.argv[1:]))
    _build_app()(prog_name="gpunode")  # also under `python -m gpunode`: usage lines, _GPUNODE_COMPLETE
