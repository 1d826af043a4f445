"""Helpers shared by the command modules: consoles, clear errors."""

from __future__ import annotations

import sys

import typer

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
