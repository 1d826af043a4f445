"""Level 1's first test: the gate's checks (tag `gate`) through the gate's own engine, as one result."""

from __future__ import annotations

from gpunode.audit.engine import Status
from gpunode.diag.results import TestResult

GATE_TIMEOUT_S = 20.0
LISTED = 4


def gate_result(config_path: str | None = None, snapshot: str | None = None) -> TestResult:
    from gpunode.slurm.fastpath import prepare
    from gpunode.slurm.gate import run_gate

    try:
        verdict = run_gate(prepare("check", GATE_TIMEOUT_S, None, False, snapshot, config_path))
    except Exception as exc:  # noqa: BLE001 - bad config etc.: the gate could not run
        return TestResult("gate", None, "ERROR", f"the gate's checks could not run: {exc}")
    return result_of(verdict.results, verdict.blocked)


def result_of(results, blocked: bool) -> TestResult:
    bad = [r for r in results if r.status in (Status.FAIL, Status.ERROR, Status.WARN)]
    counts = {s.value: sum(1 for r in results if r.status == s) for s in Status}
    figures = {k.lower(): v for k, v in counts.items() if v}
    status = _status(bad, blocked)
    order = {Status.FAIL: 0, Status.ERROR: 1, Status.WARN: 2}
    bad.sort(key=lambda r: order[r.status])
    message = _listing(bad) if bad else f"{len(results)} gate checks, none failed"
    detail = {"checks": [r.to_json() for r in bad]} if bad else None
    return TestResult("gate", None, status, message, figures, detail)


def _status(bad, blocked: bool) -> str:
    """The worst of the checks that did not pass; a blocked gate is a FAIL whatever they say."""
    if blocked or any(r.status == Status.FAIL for r in bad):
        return "FAIL"
    if any(r.status == Status.ERROR for r in bad):
        return "ERROR"
    return "WARN" if bad else "PASS"


def _listing(bad) -> str:
    """The first LISTED checks that did not pass (worst first), and how many more."""
    shown = "; ".join(f"{r.id}{' ' + r.subject if r.subject else ''}: {' '.join(r.message.split())}"
                      for r in bad[:LISTED])
    more = f" (+{len(bad) - LISTED} more)" if len(bad) > LISTED else ""
    return shown + more
