"""Every example in README.md and docs/*.md runs and prints what the doc shows.

- ```console blocks: each `$ gpunode ...` line is run here (repository root, piped, COLUMNS=80,
  no shell) and its stdout must equal the lines below it up to the next `$ ` line. A `…` in a
  doc line stands for any text (durations, times). `# text` after the command is a comment.
- ```text blocks whose first line says "recorded" (e.g. output that needs a GPU or real nodes)
  are not run; they must say where they were recorded.
- Synopsis lines (`gpunode CMD [--opt ...]` in text blocks): every `--option` they name exists
  for that command, so the docs never advertise an option gpunode does not have.

`python tests/test_doc_examples.py --update` rewrites the console blocks with today's output,
keeping doc lines that still match (their `…` placeholders)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\s*$")


def blocks(path: Path):
    """-> (language, first line number, lines) of each fenced block."""
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m:
            start, lang = i + 1, m.group(1)
            j = start
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            yield lang, start, lines[start:j]
            i = j + 1
        else:
            i += 1


def examples(path: Path):
    """-> (line number, command, expected output lines) for each `$ ` line of console blocks."""
    for lang, start, lines in blocks(path):
        if lang != "console":
            continue
        current = None
        for k, line in enumerate(lines):
            if line.startswith("$ "):
                if current:
                    yield current
                current = (start + k + 1, line[2:], [])
            elif current is not None:
                current[2].append(line)
        if current:
            yield current


def run(command: str) -> subprocess.CompletedProcess:
    argv = shlex.split(command, comments=True)
    assert argv[0] == "gpunode", f"doc examples run gpunode only: {command}"
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "GPUNODE_STATE_DIR": "/nonexistent/gpunode-doc-state"}
    env.pop("TTY_COMPATIBLE", None)
    env.pop("GPUNODE_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "gpunode", *argv[1:]], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env=env)


def matches(doc_line: str, out_line: str) -> bool:
    if "…" not in doc_line:
        return doc_line.rstrip() == out_line.rstrip()
    pattern = ".*?".join(re.escape(part) for part in doc_line.rstrip().split("…"))
    return re.fullmatch(pattern, out_line.rstrip()) is not None


ALL = [(p, n, cmd, exp) for p in DOCS for n, cmd, exp in examples(p)]


def test_the_docs_have_examples():
    assert len(ALL) >= 8 and {p.name for p, *_ in ALL} >= {"README.md"}


@pytest.mark.parametrize("path, line, command, expected", ALL,
                         ids=[f"{p.name}:{n}" for p, n, *_ in ALL])
def test_console_example_prints_what_the_doc_shows(path, line, command, expected):
    out = run(command)
    got = out.stdout.rstrip("\n").splitlines()
    want = list(expected)
    while want and not want[-1].strip():
        want.pop()
    ok = len(got) == len(want) and all(matches(w, g) for w, g in zip(want, got, strict=True))
    assert ok, f"{path.name}:{line}: `{command}` (exit {out.returncode}) printed:\n" + "\n".join(got) + \
        "\n--- the doc shows:\n" + "\n".join(want) + (f"\n--- stderr:\n{out.stderr}" if out.stderr else "")


def test_recorded_output_says_where_it_was_recorded():
    for path in DOCS:
        for lang, start, lines in blocks(path):
            if lang == "text" and lines and "recorded" in lines[0].lower():
                assert re.search(r"recorded (on|with|from|against)", lines[0].lower()), f"{path.name}:{start}"


SYNOPSIS = re.compile(r"^\s*(?:\$ )?gpunode ((?:[a-z][a-z-]* ?){1,3})(.*)$")


def _command_options():
    import typer
    from typer._click.core import Context
    from typer.core import TyperGroup

    from gpunode.cli import app

    out: dict[str, set[str]] = {}

    def walk(cmd, path):
        opts = {o for p in cmd.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        out[" ".join(path)] = opts | {"--help", "-h"}
        if isinstance(cmd, TyperGroup):
            ctx = Context(cmd)
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), [*path, name])

    walk(typer.main.get_command(app), [])
    return out


def test_every_option_a_doc_names_exists():
    known = _command_options()
    bad = []
    for path in DOCS:
        for lang, start, lines in blocks(path):
            if lang in ("yaml", "ini", "json"):
                continue
            for k, line in enumerate(lines):
                if lang == "console" and not line.startswith("$ "):
                    continue  # output, not a command
                m = SYNOPSIS.match(line)
                if not m:
                    continue
                words = m.group(1).split()
                # the longest command path the line names (`fleet watch status`, `fleet audit`, `audit`)
                command = next((" ".join(words[:n]) for n in (3, 2, 1) if " ".join(words[:n]) in known), words[0])
                if command not in known:
                    bad.append(f"{path.name}:{start + k + 1}: unknown command gpunode {command}")
                    continue
                for opt in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", line.split("#")[0]):
                    if opt not in known[command] and opt not in known[""]:
                        bad.append(f"{path.name}:{start + k + 1}: gpunode {command} has no {opt}")
    assert not bad, "\n".join(bad)


def update() -> None:
    for path in DOCS:
        lines = path.read_text().splitlines()
        new: list[str] = []
        i = 0
        in_console = False
        while i < len(lines):
            line = lines[i]
            m = FENCE.match(line)
            if m and not in_console and m.group(1) == "console":
                in_console = True
                new.append(line)
                i += 1
                continue
            if in_console and line.startswith("```"):
                in_console = False
                new.append(line)
                i += 1
                continue
            if in_console and line.startswith("$ "):
                new.append(line)
                old = []
                i += 1
                while i < len(lines) and not lines[i].startswith("$ ") and not lines[i].startswith("```"):
                    old.append(lines[i])
                    i += 1
                got = run(line[2:]).stdout.rstrip("\n").splitlines()
                for k, g in enumerate(got):
                    new.append(old[k] if k < len(old) and matches(old[k], g) else g)
                continue
            new.append(line)
            i += 1
        text = "\n".join(new) + "\n"
        if text != path.read_text():
            path.write_text(text)
            print(f"updated {path.relative_to(ROOT)}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--update"]:
        sys.path.insert(0, str(ROOT / "agent"))
        update()
