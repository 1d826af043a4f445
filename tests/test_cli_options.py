"""One meaning per option spelling across every gpunode command: the options are read off the
typer app itself (every command and sub-command), so a new command cannot bring a short letter
that means something else elsewhere."""

from __future__ import annotations

import pytest
import typer.main
from typer.core import TyperGroup, TyperOption

from gpunode.cli import _build_app

# The one long option each short letter stands for, in every command that has it.
SHORT = {"-V": "--version", "-b": "--baseline", "-e": "--extra-var", "-f": "--format", "-i": "--inventory",
         "-l": "--limit", "-n": "--dry-run", "-o": "--output", "-p": "--profile", "-q": "--quiet",
         "-v": "--verbose", "-y": "--yes", "-h": "--help"}


def options() -> list[tuple[str, TyperOption]]:
    """(command path, option) for every option of every command."""
    found: list[tuple[str, TyperOption]] = []

    def walk(command, path: str) -> None:
        for param in command.params:
            if isinstance(param, TyperOption):
                found.append((path, param))
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, f"{path} {name}")

    walk(typer.main.get_command(_build_app()), "gpunode")
    return found


def test_each_short_option_means_one_thing_everywhere():
    meaning: dict[str, set[str]] = {}
    for path, opt in options():
        longs = [o for o in opt.opts + opt.secondary_opts if o.startswith("--")]
        for short in (o for o in opt.opts + opt.secondary_opts if not o.startswith("--")):
            assert short in SHORT, f"{path}: {short} is new; give it one meaning in SHORT first"
            assert SHORT[short] in longs, f"{path}: {short} is {longs}, elsewhere {SHORT[short]}"
            meaning.setdefault(short, set()).add(SHORT[short])
    assert {"-f", "-n", "-p", "-o"} <= set(meaning)


def test_dry_run_is_spelled_alike_wherever_a_command_can_plan():
    """apply and slurm install plan with --dry-run, Ansible's --check, or -n."""
    for path, opt in options():
        if "--dry-run" in opt.opts:
            assert {"--check", "-n"} <= set(opt.opts), path


def test_apply_check_shows_each_change_from_and_to_and_changes_nothing(tmp_path):
    """`gpunode apply --check` (Ansible's word; --dry-run, -n): the plan with each setting's
    current and target value, piped under a header that names them; the tree is untouched."""
    from apply_fixtures import gpunode, make_tree, picture

    root = make_tree(tmp_path / "root")
    before = picture(root)
    proc = gpunode("apply", "--check", "--sysroot", str(root), "--profile", "training", "--only", "sysctl.vm.*",
                   "--state-dir", str(tmp_path / "state"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    swap = next(ln for ln in lines if ln.startswith("sysctl.vm.swappiness"))
    assert swap.split()[2:4] == ["60", "10"], proc.stdout  # current, then target
    header = lines[lines.index(swap) - 1]
    assert header.split()[:4] == ["Setting", "Subject", "Current", "Target"], proc.stdout
    assert "nothing changed" in proc.stdout
    assert picture(root) == before


def test_json_is_a_flag_in_every_command():
    """--json prints the JSON document wherever it exists; bench and diag took a file name
    there (now -o FILE, the older spelling still read)."""
    for path, opt in options():
        if "--json" in opt.opts:
            assert opt.is_flag, f"{path}: --json takes a value"


@pytest.mark.parametrize("args,printed,written", [
    (["--json"], True, False),
    (["--json", "-"], True, False),  # the older spelling of printing it
    (["-o", "{out}"], False, True),
    (["--json", "{out}"], False, True),  # the older spelling of writing it (fleet playbooks send it)
    (["--json={out}"], False, True),
])
def test_bench_prints_or_writes_its_document(tmp_path, args, printed, written):
    import json

    from typer.testing import CliRunner

    out = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--only", "nccl", "--no-history", *[a.format(out=out) for a in args]]
    result = CliRunner().invoke(_build_app(), argv)
    assert result.exit_code == 3, result.output  # nothing measured without nccl-tests: UNKNOWN
    assert (result.stdout.startswith("{") and json.loads(result.stdout)["schema"] == "gpunode.bench/1") == printed
    assert out.exists() == written
    if written:
        assert json.loads(out.read_text())["schema"] == "gpunode.bench/1"


def test_json_and_output_together_is_a_usage_error(tmp_path):
    from typer.testing import CliRunner

    from gpunode.exits import USAGE_EXIT

    result = CliRunner().invoke(_build_app(), ["diag", "--json", "-o", str(tmp_path / "d.json")])
    assert result.exit_code == USAGE_EXIT and "give one of them" in result.output


def _leaf_commands() -> list[str]:
    paths = []

    def walk(command, path: list[str]) -> None:
        if isinstance(command, TyperGroup):
            for name, sub in command.commands.items():
                walk(sub, [*path, name])
        else:
            paths.append(" ".join(path))

    walk(typer.main.get_command(_build_app()), [])
    return paths


@pytest.mark.parametrize("argv", [
    *[f"{p} --no-such-option" for p in _leaf_commands()],
    "fleet report",  # a missing argument
    "audit --format bogus",  # a bad choice
    "history --kind",  # an option without its value
    "no-such-command",
])
def test_every_usage_error_is_one_gpunode_error_line(argv):
    """click's own usage errors too: one `gpunode: error:` line on stderr, the usage exit code,
    never click's usage block."""
    import subprocess
    import sys

    from gpunode.exits import USAGE_EXIT

    proc = subprocess.run([sys.executable, "-m", "gpunode", *argv.split()], capture_output=True, text=True,
                          timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == USAGE_EXIT, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunode: error: "), proc.stderr
    assert proc.stdout == ""
