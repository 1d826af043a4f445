"""The floors are a contract (issue 21): every module of gpunode sits on the floor that
docs/ARCHITECTURE.md declares (the ```floors block), imports go down or sideways, never up, and
no modules import each other in a circle. Imports inside functions count (grimp sees them);
`if TYPE_CHECKING:` imports never run and do not.

`python tests/test_floors.py` prints the graph's figures (modules, edges, edges inside
functions, circles, upward edges)."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from functools import cache
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"

def floors(text: str | None = None) -> list[tuple[str, list[str]]]:
    """The declared floors, bottom first: [(name, [module prefixes])]."""
    text = ARCHITECTURE.read_text() if text is None else text
    block = re.search(r"^```floors\n(.*?)^```", text, re.S | re.M)
    assert block, f"{ARCHITECTURE}: no ```floors block"
    declared = []
    for line in block.group(1).splitlines():
        name, _, prefixes = line.partition(":")
        if prefixes.strip():
            declared.append((name.strip(), prefixes.split()))
    return declared[::-1]


def floor_of(module: str, declared) -> int | None:
    """The floor (index, bottom = 0) of the longest declared prefix of `module`. The package
    itself (`gpunode`) names only itself: a new top-level module must say where it goes."""
    best: tuple[int, int] | None = None
    for index, (_, prefixes) in enumerate(declared):
        for p in prefixes:
            matches = module == p or (p != "gpunode" and module.startswith(p + "."))
            if matches and (best is None or len(p) > best[1]):
                best = (index, len(p))
    return None if best is None else best[0]


@cache
def graph():
    return grimp.build_graph("gpunode", cache_dir=None, exclude_type_checking_imports=True)


def edges(g) -> set[tuple[str, str]]:
    return {(m, t) for m in g.modules for t in g.find_modules_directly_imported_by(m)}


def circles(pairs: set[tuple[str, str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    adj: dict[str, list[str]] = {}
    for a, b in sorted(pairs):
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in adj:
        if root in index:
            continue
        work = [(root, iter(adj[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(adj[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def upward(pairs, declared) -> list[str]:
    out = []
    for a, b in sorted(pairs):
        fa, fb = floor_of(a, declared), floor_of(b, declared)
        if fa is not None and fb is not None and fb > fa:
            out.append(f"{a} ({declared[fa][0]}) imports {b} ({declared[fb][0]})")
    return out


def test_every_module_has_a_floor():
    declared = floors()
    assert [m for m in sorted(graph().modules) if floor_of(m, declared) is None] == []


def test_no_import_goes_up_a_floor():
    assert upward(edges(graph()), floors()) == []


def test_no_modules_import_each_other_in_a_circle():
    assert circles(edges(graph())) == []


def test_the_contract_catches_an_upward_import_and_a_circle():
    """The checks themselves, on a graph made up for the purpose."""
    declared = floors("```floors\ncli: gpunode.cli\nhost: gpunode.host\nbase: gpunode.ids\n```\n")
    assert upward({("gpunode.ids", "gpunode.host.seam")}, declared) == [
        "gpunode.ids (base) imports gpunode.host.seam (host)"]
    assert upward({("gpunode.cli.x", "gpunode.ids")}, declared) == []
    assert circles({("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")}) == [["a", "b", "c"]]
    assert floor_of("gpunode.newthing", declared) is None  # undeclared: must be given a floor


def _inside_function_lines(path: str) -> set[int]:
    tree = ast.parse(Path(path).read_text())
    return {sub.lineno for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            for sub in ast.walk(node) if isinstance(sub, (ast.Import, ast.ImportFrom))}


def figures() -> dict:
    """modules, edges, edges made only inside functions, circles, upward edges."""
    g, declared = graph(), floors()
    pairs = edges(g)
    inside = 0
    for a, b in pairs:
        lines = {d["line_number"] for d in g.get_import_details(importer=a, imported=b)}
        if lines and lines <= _inside_function_lines(importlib.util.find_spec(a).origin):
            inside += 1
    found = circles(pairs)
    return {"modules": len(g.modules), "edges": len(pairs), "edges inside functions": inside,
            "circles": len(found), "modules in circles": sum(map(len, found)),
            "upward edges": len(upward(pairs, declared))}


if __name__ == "__main__":
    for name, value in figures().items():
        print(f"{name}: {value}")
    if "-v" in sys.argv:
        for c in circles(edges(graph())):
            print("circle:", " ".join(c))
        for u in upward(edges(graph()), floors()):
            print("upward:", u)
