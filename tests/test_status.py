"""The status words are said once (gpunode/status.py): their rank, verdict, colour, Prometheus
value and exit code; no other module spells out a table of them (issue 21 item 3)."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from gpunode import status
from gpunode.audit.engine import Result, Status, overall
from gpunode.exits import EXIT_CODES, SEVERITY

ROOT = Path(__file__).resolve().parent.parent
WORD = r'"(PASS|WARN|FAIL|SKIP|ERROR|OK|UNKNOWN)"'
# a table of status words: a dict keyed by one ({"PASS": "green"), or a named tuple of two or more
# (ORDER = ("FAIL", "ERROR")). A membership test (`status in ("FAIL", "ERROR")`) is logic, not a table.
TABLE = re.compile(rf'[{{,]\s*{WORD}\s*:|^\w+\s*=\s*[({{]\s*{WORD}\s*,\s*{WORD}')
# the exit-code contract is the other place a verdict word may be spelled (status reuses it)
OWNERS = {"agent/gpunode/status.py", "agent/gpunode/exits.py"}


def _sources():
    for path in sorted([*ROOT.glob("agent/gpunode/**/*.py"), *ROOT.glob("checks/*.py")]):
        if "/checks/" in str(path.relative_to(ROOT)) and path.parts[-3:-1] == ("gpunode", "checks"):
            continue  # the symlink's view of checks/: read once, as checks/
        yield path


def test_no_module_but_status_spells_out_a_table_of_status_words():
    found = []
    for path in _sources():
        rel = str(path.relative_to(ROOT))
        if rel in OWNERS:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if TABLE.search(line):
                found.append(f"{rel}:{n}: {line.strip()}")
    assert found == []


@pytest.mark.parametrize("n", range(4))
def test_verdict_is_the_engines_overall_for_every_mix(n):
    for words in itertools.combinations_with_replacement(status.RESULTS, n):
        results = [Result(f"x.{i}", "t", "x", "warning", Status(w), "") for i, w in enumerate(words)]
        assert status.verdict(words) == overall(results)
        expected = ("UNKNOWN" if not set(words) - {"SKIP"} else "FAIL" if "FAIL" in words
                    else "UNKNOWN" if "ERROR" in words else "WARN" if "WARN" in words else "OK")
        assert status.verdict(words) == expected


def test_rank_exit_and_prometheus_follow_the_exit_contract():
    for word in status.RESULTS:  # a worse word never leads to a less severe exit code
        for other in status.RESULTS:
            if status.RANK[word] > status.RANK[other]:
                assert SEVERITY.index(status.exit_code(word)) > SEVERITY.index(status.exit_code(other))
    assert {w: status.exit_code(w) for w in status.VERDICTS} == EXIT_CODES
    assert status.exit_code("ERROR") == EXIT_CODES["UNKNOWN"] and status.exit_code("SKIP") == 0
    assert {w: status.PROMETHEUS_VALUE[w] for w in ("PASS", "WARN", "FAIL", "ERROR")} == {
        w: status.exit_code(w) for w in ("PASS", "WARN", "FAIL", "ERROR")} | {"ERROR": 3}
    assert status.PROMETHEUS_VALUE["SKIP"] == -1
    assert status.worst([]) == "PASS" and status.worst(["WARN", "ERROR", "PASS"]) == "ERROR"
    assert status.normalise("ok") == "PASS" and status.normalise("WARN") == "WARN"
    assert all(status.style(w) for w in (*status.RESULTS, *status.VERDICTS)) and status.style("NOT_RUN") == ""
