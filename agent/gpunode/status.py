"""The status words, said once: what a check, a metric or a diag test reports (PASS WARN FAIL
SKIP ERROR), what a run's verdict is (OK WARN FAIL UNKNOWN, exits.EXIT_CODES), how they rank,
their colour in a table, their value in a Prometheus textfile and the exit code they lead to.
Every report, table and exposition takes them from here (base floor: imports only exits)."""

from __future__ import annotations

from collections.abc import Iterable

from gpunode.exits import EXIT_CODES

PASS, WARN, FAIL, SKIP, ERROR = "PASS", "WARN", "FAIL", "SKIP", "ERROR"
OK, UNKNOWN = "OK", "UNKNOWN"
RESULTS = (PASS, WARN, FAIL, ERROR, SKIP)  # a result's words, in the order reports count them
VERDICTS = tuple(EXIT_CODES)  # OK WARN FAIL UNKNOWN

# Worst-of order: a FAIL outranks gpunode's own ERROR, which outranks a WARN (as exits.SEVERITY);
# a SKIP judged nothing and weighs like a PASS.
RANK = {PASS: 0, SKIP: 0, WARN: 1, ERROR: 2, FAIL: 3}
VERDICT_OF = {PASS: OK, SKIP: OK, WARN: WARN, FAIL: FAIL, ERROR: UNKNOWN}

STYLE = {PASS: "green", OK: "green", WARN: "yellow", FAIL: "bold red", ERROR: "magenta", UNKNOWN: "magenta",
         SKIP: "dim"}
# gpunode_*_status families: the exit-code scale for judged items, -1 for an item not judged.
PROMETHEUS_VALUE = {PASS: 0, WARN: 1, FAIL: 2, ERROR: 3, SKIP: -1}

# A verdict as Nagios plugins word it (audit --format nagios).
NAGIOS = {OK: "OK", WARN: "WARNING", FAIL: "CRITICAL", UNKNOWN: "UNKNOWN"}
NOTHING_WRONG = (PASS, SKIP)  # results that report no problem
PROBLEMS = tuple(sorted((w for w in RESULTS if RANK[w]), key=RANK.__getitem__, reverse=True))  # worst first

# Words of results written before the audit's vocabulary was shared (bench wrote ok/fail/...).
LEGACY = {"ok": PASS, "fail": FAIL, "error": ERROR, "skip": SKIP}


def normalise(raw: object) -> str:
    """A status in today's words, from a document of any age."""
    return LEGACY.get(raw, raw) if isinstance(raw, str) else str(raw)


def worst(words: Iterable[str], default: str = PASS) -> str:
    return max(words, key=RANK.__getitem__, default=default)


def verdict(words: Iterable[str]) -> str:
    """Nagios-style: any FAIL -> FAIL; else any ERROR -> UNKNOWN; else any WARN -> WARN; else OK.
    Nothing judged (every word SKIP, or none) is UNKNOWN: nothing measured is never OK."""
    seen = set(words)
    if not seen - {SKIP}:
        return UNKNOWN
    return VERDICT_OF[worst(seen)]


def exit_code(word: str) -> int:
    """The exit code a result word or a verdict leads to (exits.EXIT_CODES)."""
    return EXIT_CODES[VERDICT_OF.get(word, word)]


def style(word: str) -> str:
    """The rich style of a word; '' for one that has none (a fleet state such as NOT_RUN)."""
    return STYLE.get(word, "")
