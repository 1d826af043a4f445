"""Burn-in under Slurm (`gpunode diag --slurm`): the node is out of service while diag runs and goes
back only when diag says OK.

- Before: drain this node with `gpunode: diag level N running` (a job already on it keeps running:
  Slurm marks it DRAINING), unless the node carries a reason someone else set: that is never
  overwritten or cleared, before or after, and the report says so.
- After: OK -> resume (our reason only); FAIL -> stay drained, the reason naming the first failing
  test (`gpunode: <test> GPUn: <message>`); WARN or UNKNOWN -> stay drained with a `gpunode:`
  reason saying why, so that a later OK run resumes it and an operator sees what to look at.
Everything goes through slurm/scontrol.py (the gate's etiquette, one implementation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gpunode import status
from gpunode.audit.engine import Result, Status
from gpunode.diag.results import DiagDocument, TestResult
from gpunode.slurm.gate import reason_line
from gpunode.slurm.scontrol import OUR_PREFIX, NodeInfo, Slurm, SlurmAction, SlurmError, settle_node

ORDER = status.PROBLEMS  # worst first


@dataclass
class BurnIn:
    node: NodeInfo | None
    foreign: str | None = None  # a reason set by someone else: hands off
    problem: str | None = None  # scontrol failed


def running_reason(level: int, env: Mapping[str, str]) -> str:
    job = env.get("SLURM_JOB_ID", "").strip()
    return f"{OUR_PREFIX} diag level {level} running" + (f" (job {job})" if job.isdigit() else "")


def begin(slurm: Slurm, env: Mapping[str, str], level: int) -> BurnIn:
    try:
        node = slurm.show_node(slurm.node_name(env))
    except SlurmError as exc:
        return BurnIn(None, problem=str(exc))
    if node.reason and not node.reason_is_ours:
        return BurnIn(node, foreign=node.reason)
    try:
        slurm.drain(node.name, running_reason(level, env))
    except SlurmError as exc:
        return BurnIn(node, problem=str(exc))
    return BurnIn(node)


def _as_result(r: TestResult) -> Result:
    return Result(id=r.name, title=r.name, area="diag", severity="critical", status=Status(r.status),
                  message=r.message, subject=r.subject or None)


def verdict_reason(doc: DiagDocument) -> str | None:
    """None when the node may go back into service (OK); else the gpunode: reason to leave on it."""
    if doc.status == "OK":
        return None
    worst = sorted((r for r in doc.results if r.status in ORDER), key=lambda r: ORDER.index(r.status))
    if doc.status == "FAIL":
        return reason_line(_as_result(worst[0]))
    what = f"{worst[0].name}{' ' + worst[0].subject if worst[0].subject else ''}" if worst else \
        ("interrupted" if doc.interrupted else "nothing tested")
    return reason_line(Result(id=f"diag {doc.status}", title="", area="diag", severity="critical",
                              status=Status.WARN, message=f"not resumed: {what}"))


def finish(slurm: Slurm, burn: BurnIn, doc: DiagDocument) -> SlurmAction:
    if burn.node is None:
        return SlurmAction("none", f"scontrol unavailable: {burn.problem}")
    try:
        # The node as it is now, not as it was an hour ago: settle_node leaves any reason that
        # is not ours (set before or during the run) and resumes only our own drain.
        node = slurm.show_node(burn.node.name)
        return settle_node(slurm, node, verdict_reason(doc))
    except SlurmError as exc:
        return SlurmAction("none", f"scontrol failed: {exc}")
