"""Thin commands (issue 21 item 2): every typer command's body (after its docstring; the option
signature is declaration, not logic) is 30 lines or fewer: it parses, calls its use case and
renders. The commands still longer are listed with their length when the limit came in; the
list only shrinks. `python tests/test_command_length.py` prints every command's length."""

from __future__ import annotations

import ast
import inspect
import textwrap

from gpunode.cli import app

LIMIT = 30
EXCEPTIONS: dict[str, int] = {}  # every command is within the limit now


def commands(group=app, prefix=""):
    for info in group.registered_commands:
        fn = info.callback
        while hasattr(fn, "__wrapped__"):  # cli/common.py's guard
            fn = fn.__wrapped__
        yield prefix + (info.name or fn.__name__), fn
    for sub in group.registered_groups:
        yield from commands(sub.typer_instance, f"{prefix}{sub.name} ")


def body_lines(fn) -> int:
    node = ast.parse(textwrap.dedent(inspect.getsource(fn))).body[0]
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring is the command's help
    return body[-1].end_lineno - body[0].lineno + 1 if body else 0


def test_commands_are_thin():
    lengths = {name: body_lines(fn) for name, fn in commands()}
    assert len(lengths) > 20  # the walk found the commands
    long = {n: v for n, v in lengths.items() if v > LIMIT and v > EXCEPTIONS.get(n, 0)}
    assert not long, f"commands longer than {LIMIT} lines (move the logic into the use case): {long}"


def test_the_exception_list_only_shrinks():
    lengths = dict((name, body_lines(fn)) for name, fn in commands())
    stale = {n: (v, lengths.get(n)) for n, v in EXCEPTIONS.items() if lengths.get(n, 0) < v}
    assert not stale, f"shorter now (listed, now): lower or remove them in EXCEPTIONS: {stale}"


if __name__ == "__main__":
    for name, fn in sorted(commands(), key=lambda c: -body_lines(c[1])):
        print(f"{body_lines(fn):3d}  {name}")
