"""Helpers shared by the command modules: consoles, clear errors."""

from __future__ import annotations

import functools
import os
import sys
from enum import Enum
from typing import Annotated

import typer

from gpunode.cli.streams import raise_broken_pipe, tolerant_output
from gpunode.exits import USAGE_EXIT, GpunodeError, internal_error
from gpunode.layout import RENDERERS
from gpunode.outputs import discard_output

NAGIOS_USAGE_EXIT = 3  # a Nagios plugin answers UNKNOWN to a bad invocation, never CRITICAL
FORMAT_HELP = ("Output: table (a terminal), plain (one result per line; the default when piped), tsv, "
               "json, nagios (a status line with perfdata, then one line per problem).")


def format_name(fmt: Format | str | None, as_json: bool = False) -> str | None:
    if as_json:
        return "json"
    return fmt.value if isinstance(fmt, Format) else fmt


# What a command that prints results offers: layout.py's renderers, and json (its document).
ResultFormat = Enum("ResultFormat", {name: name for name in (*RENDERERS, "json")}, type=str)  # type: ignore[misc]
Format = Enum("Format", {name: name for name in (*RENDERERS, "json", "nagios")}, type=str)  # type: ignore[misc]  # audit's
ResultFormatOption = Annotated[ResultFormat | None, typer.Option(
    "--format", "-f", help="Output: table (a terminal), plain (one result per line; the default when piped), tsv, "
                           "json (the results document; --json is the same).")]
# The node's state dir (journal, lock, history), declared once for every command that reads it.
StateDirOption = Annotated[str | None, typer.Option(
    "--state-dir", help="State directory (journal, lock, history). Default $GPUNODE_STATE_DIR or /var/lib/gpunode.")]


def layout_of(fmt, as_json: bool) -> tuple[bool, str | None]:
    """--format and its --json alias -> (print the document, the layout for the table or None)."""
    value = fmt.value if isinstance(fmt, Enum) else fmt
    return as_json or value == "json", None if value in (None, "json") else value


PROMETHEUS_HELP = "Also write the verdict as a Prometheus textfile here (atomically; node_exporter's textfile dir)."


def write_prometheus(path, document: dict) -> None:
    """--prometheus FILE for gate, bench, compare, diag (audit keeps its own, older writer)."""
    if path is None:
        return
    from gpunode.prometheus import write_document_textfile

    try:
        write_document_textfile(path, document)
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror or exc}", 3)


def check_outputs(*paths) -> None:
    """Output paths write_atomic would refuse (a missing directory, a block device ...) are one
    error line and exit 3 now, before a long run and before anything is written."""
    from gpunode.outputs import OutputError, check_output

    for path in paths:
        if path is not None and str(path) != "-":
            try:
                check_output(path)
            except OutputError as exc:
                die(f"cannot write {path}: {exc.strerror}", 3)


def usage_exit(fmt: str | None) -> int:
    """Exit code of a usage error: 3 (UNKNOWN) in every format (gpunode.exits)."""
    return NAGIOS_USAGE_EXIT if fmt == "nagios" else USAGE_EXIT


def run_as_nagios_plugin(app, argv: list[str]) -> int:
    """Run the app so that a usage error (unknown option, bad value) exits 3, not click's 2."""
    from typer._click.exceptions import ClickException, UsageError

    try:
        code = app(args=argv, prog_name="gpunode", standalone_mode=False)
    except UsageError as exc:
        print(f"GPUNODE UNKNOWN - usage: {' '.join(exc.format_message().split())}")
        return NAGIOS_USAGE_EXIT
    except ClickException as exc:
        print(f"GPUNODE UNKNOWN - {' '.join(exc.format_message().split())}")
        return NAGIOS_USAGE_EXIT
    return code if isinstance(code, int) else 0


def command_group_class():
    """The root group's class: click's own usage errors (an unknown option or command, a bad
    value, a missing argument) are one `gpunode: error:` line and exit 3 (exits.USAGE_EXIT), the
    contract of every other usage error, instead of click's usage block and exit 2 (the FAIL
    code). Help for a bare group (`gpunode slurm`) is still printed, with the same exit."""
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.core import TyperGroup

    class GpunodeGroup(TyperGroup):
        def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
            if not standalone_mode:  # the Nagios runner and tests that handle errors themselves
                return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except NoArgsIsHelpError as exc:
                exc.show()
                sys.exit(USAGE_EXIT)
            except ClickException as exc:
                ctx = getattr(exc, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                print(f"gpunode: error: {' '.join(exc.format_message().split())}{hint}", file=sys.stderr)
                sys.exit(USAGE_EXIT)
            except typer.Abort:
                print("Aborted!", file=sys.stderr)
                sys.exit(1)
            sys.exit(code if isinstance(code, int) else 0)

    return GpunodeGroup


def nagios_requested(argv: list[str]) -> bool:
    """`--format nagios` / `-f nagios` / `--format=nagios` anywhere on the command line."""
    pairs = zip(argv, [*argv[1:], ""], strict=False)  # (option, the word after it)
    return any(a in ("--format=nagios", "-fnagios") or (a in ("--format", "-f") and b == "nagios") for a, b in pairs)


def stdout_console():
    from rich.console import Console

    console = Console(soft_wrap=False)
    # Piped or redirected: no hard wrap at rich's 80-column default (a path or a message split
    # across lines breaks grep); a terminal wraps at its width.
    console.soft_wrap = not console.is_terminal
    return raise_broken_pipe(console)  # rich's own exit 1 would read as WARN (_guarded says 3)


def stderr_console():
    from rich.console import Console

    console = Console(stderr=True)
    console.soft_wrap = not console.is_terminal  # progress lines in a log: one line each, as on stdout
    return console


def die(message: str, code: int = USAGE_EXIT) -> None:
    """A clear one-line error on stderr and a non-zero exit; a Nagios check (exit 3 for a usage
    error) also gets its one UNKNOWN status line on stdout."""
    if code == NAGIOS_USAGE_EXIT and nagios_requested(sys.argv[1:]):
        print(f"GPUNODE UNKNOWN - {' '.join(message.split())}")
    print(f"gpunode: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def document_target(as_json: bool, output):
    """--json prints the document (as in every command), -o FILE writes it: '-', the file, or
    None (the table only)."""
    from pathlib import Path

    if as_json and output is not None:
        die("--json prints the document, -o FILE writes it to a file: give one of them")
    return output if output is not None else (Path("-") if as_json else None)


def legacy_json_command():
    """The command class of bench and diag, whose `--json` once took a file: `--json FILE` and
    `--json -` (documented, and what fleet playbooks of earlier versions send) still work, read
    as `-o FILE` and `--json`. A word after --json can only be that file: neither command takes
    an argument."""
    from typer.core import TyperCommand

    class LegacyJsonCommand(TyperCommand):
        def parse_args(self, ctx, args):
            out, i = [], 0
            while i < len(args):
                arg = args[i]
                if arg == "--":
                    out += args[i:]
                    break
                nxt = args[i + 1] if i + 1 < len(args) else None
                if arg == "--json" and nxt == "-":
                    out.append("--json")
                    i += 2
                    continue
                if arg == "--json" and nxt is not None and not nxt.startswith("-"):
                    out += ["--output", nxt]
                    i += 2
                    continue
                if arg.startswith("--json="):
                    value = arg.removeprefix("--json=")
                    out += ["--json"] if value == "-" else [f"--output={value}"]
                    i += 1
                    continue
                out.append(arg)
                i += 1
            return super().parse_args(ctx, out)

    return LegacyJsonCommand


def options_command(options, body, doc: str):
    """A typer command made from a table of options (slurm.fastpath.GateOption: flag, key, kind,
    default, help), the one declaration a typer-free parser reads too (the gate's, the resident
    watcher's); it exits with what body(**options) returns."""
    import inspect

    params = [inspect.Parameter(o.key, inspect.Parameter.KEYWORD_ONLY, annotation=o.kind,
                                default=typer.Option(o.default, o.flag, help=o.help)) for o in options]

    def command(**kwargs) -> None:
        raise typer.Exit(body(**kwargs) or 0)

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {o.key: o.kind for o in options}
    command.__doc__ = doc
    return command


def split_csv(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def guard_commands(app) -> None:
    """Wrap every command of `app` and its sub-apps: a GpunodeError (bad input: InputError,
    exits.UsageError) is one `gpunode: error:` line and its exit code, never a traceback; anything else that
    escapes is one line and exit 3 (ERROR/UNKNOWN), with the traceback under GPUNODE_TRACEBACK=1."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_gpunode_guarded", False):
            info.callback = _guarded(info.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            guard_commands(group.typer_instance)


def _guarded(command):
    @functools.wraps(command)
    def run(*args, **kwargs):
        tolerant_output()
        try:
            return command(*args, **kwargs)
        except GpunodeError as exc:  # InputError and every use case's error: its own exit code
            code = exc.exit_code
            die(str(exc), usage_exit(format_name(kwargs.get("output"))) if code == USAGE_EXIT else code)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except BrokenPipeError:  # the reader went away (`| head`): nobody read the verdict, UNKNOWN
            discard_output()
            raise SystemExit(3) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
            from typer.exceptions import TyperException

            if isinstance(exc, TyperException) or os.environ.get("GPUNODE_TRACEBACK"):
                raise
            die(internal_error(exc), 3)

    run._gpunode_guarded = True  # type: ignore[attr-defined]
    return run
