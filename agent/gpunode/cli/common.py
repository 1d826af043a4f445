"""Helpers shared by the command modules: consoles, clear errors."""

from __future__ import annotations

import functools
import os
import sys

import typer

from gpunode.cli.streams import tolerant_output

USAGE_EXIT = 2


def stdout_console():
    from rich.console import Console

    console = Console(soft_wrap=False)
    if not console.is_terminal:
        console.width = max(console.width, 160)  # logs and pipes: keep one line per result
    return console


def stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def die(message: str, code: int = USAGE_EXIT) -> None:
    """A clear one-line error on stderr and a non-zero exit."""
    print(f"gpunode: error: {message}", file=sys.stderr)
    raise typer.Exit(code)


def split_csv(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(x.strip() for x in v.split(",") if x.strip())
    return out


def guard_commands(app) -> None:
    """Wrap every command of `app` and its sub-apps: bad input that escaped a command's own
    handling is one `gpunode: error:` line and exit 2, never a traceback; anything else that
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
        from gpunode.inputs import InputError

        tolerant_output()
        try:
            return command(*args, **kwargs)
        except InputError as exc:
            die(str(exc))
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence against a traceback
            from typer.exceptions import TyperException

            if isinstance(exc, TyperException) or os.environ.get("GPUNODE_TRACEBACK"):
                raise
            message = " ".join(str(exc).split())[:300]
            die(f"internal error: {type(exc).__name__}: {message} (GPUNODE_TRACEBACK=1 shows where)", 3)

    run._gpunode_guarded = True  # type: ignore[attr-defined]
    return run
