#!/usr/bin/env python3
"""Mutation pass over gpunode's verdict-critical code: does the suite notice a broken verdict?

Each mutant changes one place in one module (a comparison flipped or moved off by one, `and`
for `or`, a condition negated, a `not` dropped, a number changed, a boolean return inverted, a
call statement removed — the journal's fsync, say) in a private copy of the tree, then runs the
tests that cover that module. A mutant is killed when those tests fail. The working tree is never
touched, so this can run beside other work.

    python benchmarks/mutation.py                      # every target, up to 30 mutants each
    python benchmarks/mutation.py --only checks/gpu.py --per-module 0   # all mutants of one module
    python benchmarks/mutation.py --json mutation.json
    python benchmarks/mutation.py --retry mutation.json --retry-rev REV --json after.json

--retry runs again only the mutants an earlier run left alive (found in today's code by their kind,
change and source line as it read at REV, the commit that run measured): after tests were added,
the kill rate over that earlier run's sample is its killed plus the survivors now killed.

Sampling is seeded, so two runs on the same code pick the same mutants.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PKG = "agent/gpunode"

# module -> the tests that should notice a broken verdict in it
TARGETS: dict[str, list[str]] = {
    "checks/gpu.py": ["tests/test_checks_gpu.py", "tests/test_verdict_guards.py"],
    "checks/gpu_common.py": ["tests/test_checks_gpu.py"],
    "checks/xid.py": ["tests/test_checks_xid.py"],
    "checks/pcie.py": ["tests/test_checks_pcie_nvlink.py"],
    "checks/nvlink.py": ["tests/test_checks_pcie_nvlink.py"],
    "checks/memory.py": ["tests/test_checks_host.py"],
    "checks/kernel.py": ["tests/test_checks_host.py"],
    "checks/cpu.py": ["tests/test_checks_host.py"],
    "checks/numa.py": ["tests/test_checks_host.py"],
    "checks/net.py": ["tests/test_checks_net.py"],
    "checks/storage.py": ["tests/test_checks_storage.py"],
    f"{PKG}/slurm/gate.py": ["tests/test_gate.py", "tests/test_gate_cli.py"],
    f"{PKG}/slurm/scontrol.py": ["tests/test_slurm_node.py", "tests/test_gate.py"],
    f"{PKG}/bench/nccl.py": ["tests/test_bench_nccl.py", "tests/test_verdict_guards.py"],
    f"{PKG}/bench/fio.py": ["tests/test_bench_fio.py"],
    f"{PKG}/baselines/compare.py": ["tests/test_baselines_compare.py", "tests/test_bench_trust.py"],
    f"{PKG}/tune/journal.py": ["tests/test_apply_journal.py", "tests/test_apply_writepath.py",
                               "tests/test_apply_fixture.py", "tests/test_apply_faults.py"],
    f"{PKG}/tune/rollback.py": ["tests/test_apply_journal.py", "tests/test_apply_writepath.py",
                                "tests/test_apply_fixture.py", "tests/test_apply_faults.py"],
}
APPLY = ["tests/test_apply_fixture.py", "tests/test_apply_faults.py", "tests/test_apply_journal.py",
         "tests/test_apply_writepath.py"]
KINDS = ["tests/test_kinds.py", "tests/test_kinds_apply_audit.py", "tests/test_settings.py",
         "tests/test_kinds_capabilities.py", "tests/test_kind_rules.py", "tests/test_kind_defaults.py"]
DIAG = ["tests/test_diag.py", "tests/test_diag_verdicts.py", "tests/test_diag_protocols.py", "tests/test_diag_run.py",
        "tests/test_diag_recorded.py", "tests/test_edges_item11.py", "tests/test_diag_progress.py",
        "tests/test_diag_result_refusals.py"]
# issue 20 item 11: the modules the first passes did not target. Not here: diag/backend_torch.py
# (its tests need torch: `pytest -m gpu` on a GPU machine) and diag/backend_numpy.py (the tests'
# own CPU stand-in, checked by what it must catch in tests/test_diag.py).
TARGETS.update({
    **{f"{PKG}/tune/kinds/{name}.py": KINDS for name in (
        "__init__", "base", "change", "cmdline", "irq", "registry", "service", "sysctl", "sysfs", "values")},
    f"{PKG}/tune/kinds/limits.py": [*KINDS, "tests/test_apply_fixture.py"],
    f"{PKG}/tune/kinds/unit.py": [*KINDS, "tests/test_apply_units.py"],
    f"{PKG}/tune/kinds/gpu.py": [*KINDS, "tests/test_apply_gpu.py"],
    # apply's fault and journal tests: the whole APPLY set runs past the timeout on a shared machine
    f"{PKG}/tune/execute.py": ["tests/test_apply_faults.py", "tests/test_apply_journal.py",
                               "tests/test_apply_interrupts.py", "tests/test_plan_read_only.py"],
    # planning without apply's CLI runs (those take minutes per mutant here)
    f"{PKG}/tune/plan.py": ["tests/test_kinds_apply_audit.py", "tests/test_apply_units.py", "tests/test_kind_rules.py",
                            "tests/test_kinds_capabilities.py", "tests/test_plan_read_only.py"],
    f"{PKG}/tune/prove.py": ["tests/test_apply_prove.py", "tests/test_prove_live.py", "tests/test_edges_item11.py",
                             "tests/test_prove_render.py"],
    **{f"{PKG}/diag/{name}.py": DIAG for name in ("gemm", "memtest", "verdicts", "run", "stress", "results",
                                                   "dcgm", "gatecheck", "metrics", "discover")},
    f"{PKG}/diag/compare.py": [*DIAG, "tests/test_diag_compare.py"],
    f"{PKG}/diag/burnin.py": ["tests/test_diag_burnin.py"],
    f"{PKG}/bench/trust.py": ["tests/test_bench_trust.py", "tests/test_edges_item11.py", "tests/test_measured_figures.py"],
    # the loaders' own tests, the profile/number rules and the foreign-file refusals (all fast)
    f"{PKG}/inputs.py": ["tests/test_hostile_inputs.py", "tests/test_parsed_cache.py", "tests/test_profiles.py",
                         "tests/test_foreign_files.py", "tests/test_inputs_bounds.py"],
    f"{PKG}/yaml_bounded.py": ["tests/test_hostile_inputs.py", "tests/test_profiles.py", "tests/test_foreign_files.py",
                               "tests/test_inputs_bounds.py"],
    f"{PKG}/parsed_cache.py": ["tests/test_parsed_cache.py", "tests/test_edges_item11.py"],
    f"{PKG}/slurm/chain.py": ["tests/test_slurm_chain.py", "tests/test_slurm_install_conf.py", "tests/test_edges_item11.py"],
    f"{PKG}/slurm/install.py": ["tests/test_slurm_chain.py", "tests/test_slurm_hooks.py",
                                "tests/test_slurm_install_conf.py", "tests/test_edges_item11.py",
                                "tests/test_watch_hook.py"],
    f"{PKG}/fleet/trends.py": ["tests/test_fleet_trends.py", "tests/test_edges_item11.py"],
    **{f"{PKG}/history/{name}.py": ["tests/test_history.py", "tests/test_fleet_trends.py", "tests/test_edges_item11.py",
                                    "tests/test_measured_figures.py"]
       for name in ("record", "store", "trend")},
    f"{PKG}/layout.py": ["tests/test_layout.py", "tests/test_edges_item11.py", "tests/test_layout_sections.py"],
})

# Survivors no test can kill because the program means the same, or the change is to a value no
# verdict depends on: (module, the mutated line as it reads, kind, change) -> why. Reported apart:
# a module's rate is killed / (mutants - equivalent).
D = f"{PKG}/diag"
EQUIVALENT: dict[tuple[str, str, str, str], str] = {
    (f"{D}/gemm.py", "BATCH = 32  # products per batch (one device sync per batch)", "number", "32 -> 33"):
        "products per device sync: a tuning constant; every product is checked whatever the batch",
    (f"{D}/memtest.py", "seed: int = 7, fraction: float = FRACTION, chunk_bytes: int = CHUNK_BYTES) -> TestResult:",
     "number", "7 -> 8"): "the default seed's value is arbitrary: any fixed seed repeats its patterns",
    (f"{D}/memtest.py", '"seconds": round(time.monotonic() - started, 2)}', "number", "2 -> 3"):
        "the digits of a wall-clock figure that no verdict reads",
    (f"{D}/stress.py", "PCIE_BYTES = 256 << 20", "number", "256 -> 257"): "copy buffer size: a tuning constant",
    (f"{D}/stress.py", "PCIE_BYTES = 256 << 20", "number", "20 -> 21"): "copy buffer size: a tuning constant",
    (f"{D}/stress.py", "P2P_BYTES = 256 << 20", "number", "256 -> 257"): "copy buffer size: a tuning constant",
    (f"{D}/stress.py", "P2P_BYTES = 256 << 20", "number", "20 -> 21"): "copy buffer size: a tuning constant",
    (f"{D}/verdicts.py", 'replays = tel.get("pcie_replay_delta") or 0', "number", "0 -> 1"):
        "a missing replay count read as 1 instead of 0: both far below the warn bound of 100",
    (f"{D}/verdicts.py", 'if read and read.get("count", 0) * 2 > tel.get("samples", 0):', "number", "0 -> 1"):
        "for `samples`: twice a whole count is even, so `> 0` and `> 1` agree (the count's 0 is tested)",
    (f"{D}/gatecheck.py", "order = {Status.FAIL: 0, Status.ERROR: 1, Status.WARN: 2}", "number", "2 -> 3"):
        "WARN ranked 3 instead of 2 keeps the order FAIL, ERROR, WARN",
    (f"{D}/stress.py", "while not stop.is_set() and (run.rounds == 0 or time.monotonic() < deadline):", "boundary",
     "Lt -> LtE"): "a clock reading exactly the deadline: one more copy round at most, no verdict changes",
    (f"{PKG}/fleet/trends.py", 'DEFAULT_WINDOW = 3  # runs in "first" and "last"', "number", "3 -> 4"):
        "a tuning default (runs in `first` and `last`), not a rule; the tests pass their window",
    (f"{PKG}/slurm/install.py", 'if float(f"{timeout:g}") <= 0:  # what the hook will pass, as written', "boundary",
     "LtE -> Lt"): "only 0 formats to 0, and seconds() above refuses 0 already",
    (f"{PKG}/inputs.py", "chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))", "number", "1 -> 2"):
        "read size only: 2 MiB chunks, or one more byte read past the bound, which is refused as `more than` "
        "either way (the bound itself is tested at its edge)",
    (f"{PKG}/inputs.py", "chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))", "number", "20 -> 21"):
        "read size only: 2 MiB chunks instead of 1 MiB; the bound holds on the total read",
    (f"{PKG}/yaml_bounded.py", "Resolver.__init__(self)", "drop_call", "call removed: Resolver.__init__(self)"):
        "PyYAML's Resolver.__init__ only sets up path-resolver state, read only when yaml_path_resolvers is "
        "non-empty (add_path_resolver), which gpunode never calls",
    (f"{PKG}/yaml_bounded.py", "super().__init__(message)", "drop_call", "call removed: super().__init__(message)"):
        "_Refused is internal: parse_yaml reads its .mark, .message and .key, never its args or str()",
    (f"{PKG}/yaml_bounded.py", "loader.dispose()", "drop_call", "call removed: loader.dispose()"):
        "dispose() only breaks the loader's reference cycles early; the loader is dropped right after either way",
    (f"{PKG}/slurm/install.py", "max_age_s: int = 20", "number", "20 -> 21"):
        "a default gpunode never uses: `slurm install --watch` passes 2 x the watcher's poll (cli/gate_cmd.py)",
    (f"{PKG}/fleet/trends.py", '"distribution": {"min": values[0], "p10": round(quantile(values, 0.1), 4),',
     "number", "4 -> 5"): "the digits a fleet report prints of a distribution quantile: nothing judges them",
    (f"{PKG}/fleet/trends.py", '"median": round(statistics.median(values), 4), "p90": round(quantile(values, 0.9), 4),',
     "number", "4 -> 5"): "the digits a fleet report prints of a distribution quantile: nothing judges them",
    (f"{D}/compare.py", '"gpus": doc.get("gpus") or {}, "tools": doc.get("tools") or {}, "metrics": doc.get("metrics") or [],',
     "boolop", "and <-> or"): "for gpus and tools: judge() and judge_topology() never read the document's gpus "
                               "or tools (the caller chose the baseline), so {} in their place changes no verdict "
                               "(the metrics one is killed)",
}

FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq,
        ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
# a boundary moved by one: the mutation that catches `>=` written for `>`
BOUNDARY = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # position of the node in a walk of the module's tree
    kind: str
    line: int
    what: str


def _skippable(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Leave docstrings, f-string pieces and type annotations alone: mutating them says nothing."""
    p = parents.get(node)
    while p is not None:
        if isinstance(p, (ast.JoinedStr, ast.arg)) or (isinstance(p, ast.AnnAssign) and node is p.annotation):
            return True
        p = parents.get(p)
    return False


def candidates(module: str, tree: ast.AST) -> list[Mutant]:
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for i, node in enumerate(ast.walk(tree)):
        if _skippable(node, parents):
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            op = type(node.ops[0])
            if op in FLIP:
                found.append(Mutant(module, i, "flip", line, f"{op.__name__} -> {FLIP[op].__name__}"))
            if op in BOUNDARY:
                found.append(Mutant(module, i, "boundary", line, f"{op.__name__} -> {BOUNDARY[op].__name__}"))
        elif isinstance(node, ast.BoolOp):
            found.append(Mutant(module, i, "boolop", line, "and <-> or"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            found.append(Mutant(module, i, "drop_not", line, "not x -> x"))
        elif isinstance(node, (ast.If, ast.IfExp, ast.While)) and not isinstance(node.test, ast.UnaryOp):
            found.append(Mutant(module, i, "negate", line, "condition negated"))
        elif isinstance(node, ast.Constant) and type(node.value) is int and not isinstance(parents.get(node), ast.Slice):
            found.append(Mutant(module, i, "number", line, f"{node.value} -> {node.value + 1}"))
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, bool):
            found.append(Mutant(module, i, "return_bool", line, f"return {node.value.value} -> {not node.value.value}"))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            found.append(Mutant(module, i, "drop_call", line, f"call removed: {ast.unparse(node.value)[:50]}"))
    return found


def mutate(tree: ast.AST, mutant: Mutant) -> ast.AST:
    tree = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == mutant.index)
    if mutant.kind == "flip":
        node.ops = [FLIP[type(node.ops[0])]()]
    elif mutant.kind == "boundary":
        node.ops = [BOUNDARY[type(node.ops[0])]()]
    elif mutant.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif mutant.kind == "drop_not":
        _replace(tree, node, node.operand)
    elif mutant.kind == "negate":
        node.test = ast.UnaryOp(op=ast.Not(), operand=node.test)
    elif mutant.kind == "number":
        node.value = node.value + 1
    elif mutant.kind == "return_bool":
        node.value = ast.Constant(not node.value.value)
    elif mutant.kind == "drop_call":
        _replace(tree, node, ast.Pass())
    return ast.fix_missing_locations(tree)


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(v is old for v in value):
                value[[i for i, v in enumerate(value) if v is old][0]] = new
                return


def survivors_now(previous: dict, module: str, found: list[Mutant], source: str, rev: str) -> list[Mutant]:
    """The earlier run's survivors in `module`, matched in today's code by kind, change and the
    text of the line they were on at `rev` (line numbers move when code is added above them)."""
    then = subprocess.run(["git", "show", f"{rev}:{module}"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.splitlines()
    now = source.splitlines()
    chosen = []
    for s in (s for s in unkilled(previous) if s["module"] == module):
        text = then[s["line"] - 1].strip()
        same = [m for m in found if m.kind == s["kind"] and m.what == s["what"] and now[m.line - 1].strip() == text]
        if not same:
            print(f"{module}:{s['line']} {s['kind']}: no longer in the code, not run", file=sys.stderr)
        # one mutant per survivor: two survivors of the same change on one line (two `0`s) are
        # two mutants there; the same change on an identical line elsewhere counts once
        closest = min((m for m in same if m not in chosen), key=lambda m: abs(m.line - s["line"]), default=None)
        if closest is not None:
            chosen.append(closest)
    return chosen


def unkilled(previous: dict) -> list[dict]:
    """An earlier run's mutants left alive: its survivors and those it named equivalent."""
    return [*previous["survivors"], *previous.get("equivalents", [])]


def equivalent_why(mutant: Mutant, source: str) -> str | None:
    text = source.splitlines()[mutant.line - 1].strip()
    return EQUIVALENT.get((mutant.module, text, mutant.kind, mutant.what))


def copy_tree(dest: Path) -> None:
    """The working tree as it is now (tracked and untracked files), without .git and the venv."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = REPO / rel
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), target)
        elif src.is_file():
            shutil.copy2(src, target)


def run_tests(tree: Path, tests: list[str], timeout: float, first_failure: bool = True) -> tuple[bool, float, str]:
    env = dict(os.environ, PYTHONPATH=f"{tree / 'agent'}{os.pathsep}{tree / 'tests'}",
               PYTHONDONTWRITEBYTECODE="1")
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", *(["-x"] if first_failure else []), "-q", "-rf",
                               "-p", "no:cacheprovider", "-p", "no:randomly", "-m", "not gpu", *tests],
                              cwd=tree, env=env, capture_output=True, timeout=timeout, text=True)
        passed, out = proc.returncode == 0, proc.stdout
    except subprocess.TimeoutExpired:
        passed, out = False, ""  # a mutant that hangs the tests is caught (by the timeout)
    return passed, time.monotonic() - start, out


def baseline(tree: Path, tests: list[str], timeout: float) -> tuple[list[str] | None, float, list[str]]:
    """-> (the tests to run, seconds, failing tests deselected), or None when they fail unmutated.
    Several people work in one tree: a test another change has broken for now is deselected (and
    named) rather than losing the module's whole measurement."""
    ok, seconds, out = run_tests(tree, tests, timeout)
    if ok:
        return tests, seconds, []
    _, _, out = run_tests(tree, tests, timeout, first_failure=False)
    failing = [line.split()[1] for line in out.splitlines() if line.startswith("FAILED ")]
    if not failing:
        return None, seconds, []
    args = [*tests, *(f"--deselect={f}" for f in failing)]
    ok, seconds, _ = run_tests(tree, args, timeout)
    return (args if ok else None), seconds, failing


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", action="append", default=[], help="module path, or a folder ending in / (repeatable)")
    ap.add_argument("--per-module", type=int, default=30, help="mutants sampled per module (0 = all)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=180.0)
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--retry", help="a --json file of an earlier run: run only its survivors again")
    ap.add_argument("--retry-rev", default="HEAD", help="the commit the earlier run measured (its line numbers)")
    args = ap.parse_args(argv)
    # Started by nohup or as `cmd &` from a script, SIGHUP/SIGINT come ignored, and every test
    # process would inherit that (the tests that stop an apply with them would fail unmutated).
    # A handler that does nothing keeps this run as immune, and resets to the default on exec.
    for signum in (signal.SIGINT, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_IGN:
            signal.signal(signum, lambda *_: None)

    previous = json.loads(Path(args.retry).read_text()) if args.retry else None
    if previous:  # its survivors' modules (those of them named by --only, if any)
        args.only = sorted({s["module"] for s in unkilled(previous)} & set(args.only or TARGETS))
    targets = {m: t for m, t in TARGETS.items()
               if not args.only or any(m == o or (o.endswith("/") and m.startswith(o)) for o in args.only)}
    work = Path(tempfile.mkdtemp(prefix="gpunode-mutation-"))
    trees = []
    for j in range(args.jobs):
        tree = work / f"tree{j}"
        copy_tree(tree)
        trees.append(tree)

    plan: list[tuple[Mutant, list[str]]] = []
    originals: dict[str, str] = {}
    deselected_all: set[str] = set()
    baselines: dict[tuple[str, ...], tuple] = {}
    for module, tests in targets.items():
        tests = [t for t in tests if (trees[0] / t).exists()]
        source = (trees[0] / module).read_text()
        originals[module] = source
        if tuple(tests) not in baselines:  # modules sharing their tests share one baseline run
            baselines[tuple(tests)] = baseline(trees[0], tests, args.timeout)
        ready, seconds, deselected = baselines[tuple(tests)]
        if ready is None:
            print(f"{module}: its tests fail unmutated; left out", file=sys.stderr)
            continue
        tests = ready
        for name in deselected:
            print(f"{module}: deselected (fails unmutated): {name}", file=sys.stderr)
        deselected_all.update(deselected)
        found = candidates(module, ast.parse(source))
        rng = random.Random(f"{args.seed}:{module}")
        if previous:
            chosen = survivors_now(previous, module, found, source, args.retry_rev)
        else:
            chosen = found if args.per_module == 0 or len(found) <= args.per_module else rng.sample(found, args.per_module)
        plan += [(m, tests) for m in sorted(chosen, key=lambda m: m.index)]
        print(f"{module}: {len(chosen)} of {len(found)} mutants, tests {seconds:.1f} s", file=sys.stderr)

    free = list(trees)
    results = []

    def one(item):
        mutant, tests = item
        tree = free.pop()
        try:
            path = tree / mutant.module
            try:
                path.write_text(ast.unparse(mutate(ast.parse(originals[mutant.module]), mutant)))
            except (SyntaxError, ValueError, TypeError):
                return mutant, None
            survived, _, _ = run_tests(tree, tests, args.timeout)
            return mutant, not survived
        finally:
            (tree / mutant.module).write_text(originals[mutant.module])
            free.append(tree)

    with ThreadPoolExecutor(max_workers=len(trees)) as pool:
        for mutant, killed in pool.map(one, plan):
            if killed is None:
                continue
            results.append((mutant, killed))
            if not killed:
                print(f"SURVIVED {mutant.module}:{mutant.line} {mutant.kind}: {mutant.what}", file=sys.stderr)

    shutil.rmtree(work, ignore_errors=True)
    # per module: [mutants, killed, equivalent]; after --retry, over the earlier run's sample
    per_module: dict[str, list[int]] = {}
    if previous:
        for m, counts in previous["modules"].items():
            if m in originals:
                per_module[m] = [counts["mutants"], counts["killed"], 0]
    survivors, equivalents = [], []
    for mutant, killed in results:
        counts = per_module.setdefault(mutant.module, [0, 0, 0])
        if not previous:
            counts[0] += 1
        counts[1] += int(killed)
        if killed:
            continue
        entry = {"module": mutant.module, "line": mutant.line, "kind": mutant.kind, "what": mutant.what}
        why = equivalent_why(mutant, originals[mutant.module])
        if why:
            counts[2] += 1
            equivalents.append({**entry, "why": why})
        else:
            survivors.append(entry)
    print(f"{'module':44} {'mutants':>7} {'killed':>6} {'equiv':>5} {'rate':>6}")
    for module, (n, k, e) in per_module.items():
        print(f"{module:44} {n:7} {k:6} {e:5} {k / max(n - e, 1):6.0%}")
    total, killed, equiv = (sum(v[i] for v in per_module.values()) for i in range(3))
    rate = killed / max(total - equiv, 1)
    print(f"{'all':44} {total:7} {killed:6} {equiv:5} {rate:6.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "seed": args.seed, "per_module": args.per_module, "kill_rate": rate,
            "commit": subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip(),
            "retry_of": args.retry, "deselected": sorted(deselected_all),
            "modules": {m: {"mutants": n, "killed": k, "equivalent": e, "rate": round(k / max(n - e, 1), 3)}
                        for m, (n, k, e) in per_module.items()},
            "survivors": survivors, "equivalents": equivalents,
        }, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
