"""The command line as an operator meets it: -h and -V, help that fits 80 columns without
`<bool>` on flags, each command listing only its own options, shell completion, and a man page
that matches the command tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from gpunode import __version__
from testkit import require

ROOT = Path(__file__).resolve().parent.parent


def gpunode(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "80", **(env or {})})


def command_paths():
    import typer
    from typer._click.core import Context
    from typer.core import TyperGroup

    from gpunode.cli import app

    out = []

    def walk(cmd, path):
        out.append(path)
        if isinstance(cmd, TyperGroup):
            ctx = Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_short_help_and_version():
    assert gpunode("-V").stdout.strip() == f"gpunode {__version__}"
    short, long = gpunode("-h"), gpunode("--help")
    assert short.returncode == 0 and short.stdout == long.stdout and "audit" in short.stdout
    assert gpunode("audit", "-h").stdout == gpunode("audit", "--help").stdout


def test_every_help_fits_80_columns_and_shows_no_bool_metavar():
    for path in command_paths():
        proc = gpunode(*path, "-h")
        assert proc.returncode == 0, (path, proc.stderr)
        assert "<bool>" not in proc.stdout, path
        wide = [line for line in proc.stdout.splitlines() if len(line) > 80]
        assert not wide, (path, wide)


def test_fleet_audit_lists_only_its_own_options():
    text = gpunode("fleet", "audit", "-h").stdout
    assert "--inventory" in text and "--profile" in text
    for bench_only in ("--margin", "--min-peers", "--mode"):
        assert bench_only not in text
    assert "--margin" in gpunode("fleet", "bench", "-h").stdout


def test_docstrings_are_reflowed_not_broken_mid_sentence():
    text = gpunode("apply", "-h").stdout
    para = text.split("\n\n")[1]
    assert "Exit 0 done (or nothing to change)" in " ".join(para.split())
    lines = [line for line in para.splitlines() if line.strip()]
    assert all(len(line) > 50 for line in lines[:-1]), lines  # no short line from a hard break in the source


def test_shell_completion_answers():
    proc = gpunode(env={"_GPUNODE_COMPLETE": "complete_bash", "COMP_WORDS": "gpunode au", "COMP_CWORD": "1"})
    assert proc.stdout.split() == ["audit"]
    proc = gpunode(env={"_GPUNODE_COMPLETE": "complete_bash", "COMP_WORDS": "gpunode audit --pro",
                        "COMP_CWORD": "2"})
    assert "--problems" in proc.stdout.split() and "--profile" in proc.stdout.split()


def test_man_page_is_current():
    from gpunode.cli import app
    from gpunode.cli.manpage import render

    shipped = (ROOT / "docs" / "gpunode.1").read_text()
    assert render(app) == shipped, "regenerate: python -m gpunode.cli.manpage > docs/gpunode.1"
    for path in command_paths()[1:]:
        assert f".SS gpunode {' '.join(path)}" in shipped


def test_man_page_renders_without_warnings():
    require(shutil.which("groff") is not None, "groff (Debian package groff-base)")
    proc = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(ROOT / "docs" / "gpunode.1")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr
