"""docs/gpunode.1, generated from the command tree itself so it cannot drift from --help:
`python -m gpunode.cli.manpage > docs/gpunode.1` (tests/test_cli_help.py checks it is current)."""

from __future__ import annotations

import sys

from gpunode import __version__

SECTIONS = """.SH EXIT STATUS
audit, gate, compare, diag: 0 OK, 1 WARN, 2 FAIL (CRITICAL), 3 UNKNOWN (a check or the tool itself
failed). A usage error exits 2 (3 with \\-\\-format nagios, where 2 would read as CRITICAL).
apply: 0 done, 1 done but some changes wait (reboot, GPU reset, refused), 2 bad input, 3 failed.
.SH FILES
.TP
.B /etc/gpunode/config.yaml
Site configuration (\\fBgpunode config show\\fR prints the effective values and their origin).
.TP
.B /var/lib/gpunode
State: the apply journal, the history database.
.TP
.B /etc/gpunode/baselines
Site hardware baselines, ahead of the shipped ones.
.SH ENVIRONMENT
.TP
.B GPUNODE_CONFIG
Config file instead of /etc/gpunode/config.yaml.
.TP
.B GPUNODE_STATE_DIR
State directory instead of /var/lib/gpunode.
.SH SEE ALSO
README.md and docs/ in the gpunode source tree.
"""


def _esc(text: str) -> str:
    text = " ".join(str(text).split())
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _params(command) -> list[str]:
    lines = []
    for param in command.params:
        if getattr(param, "hidden", False) or not getattr(param, "opts", None):
            continue
        if param.param_type_name == "argument":
            lines += [".TP", f".I {_esc(param.name.upper())}"]
        else:
            lines += [".TP", ".B " + _esc(", ".join(param.opts + list(param.secondary_opts)))]
        lines.append(_esc(getattr(param, "help", None) or ""))
    return lines


def _walk(command, path: list[str]) -> list[str]:
    from typer._click.core import Context
    from typer.core import TyperGroup

    lines = []
    if path:
        lines += [".SS " + _esc(" ".join(["gpunode", *path])), _esc(command.help or command.short_help or "")]
        lines += _params(command)
    if isinstance(command, TyperGroup):
        ctx = Context(command)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                lines += _walk(sub, [*path, name])
    return lines


def render(app) -> str:
    import typer

    root = typer.main.get_command(app)
    head = [
        f'.TH GPUNODE 1 "" "gpunode {__version__}" "User Commands"',
        ".SH NAME",
        "gpunode \\- audit, tune, benchmark and gate GPU servers",
        ".SH SYNOPSIS",
        ".B gpunode",
        "[\\fB\\-h\\fR] [\\fB\\-V\\fR] \\fICOMMAND\\fR [\\fIOPTIONS\\fR]",
        ".SH DESCRIPTION",
        _esc(root.help or ""),
        ".SH OPTIONS",
        *_params(root),
        ".SH COMMANDS",
    ]
    return "\n".join(head + _walk(root, [])) + "\n" + SECTIONS


def main() -> None:
    from gpunode.cli import app

    sys.stdout.write(render(app))


if __name__ == "__main__":
    main()
