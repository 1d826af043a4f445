"""`gpunode slurm drain NODE... --reason "gpunode: drain: ..."`: drain the nodes gpunode found bad
(fleet locate's node faults: its report suggests this command, `fleet locate --drain` runs it)
with the gate's etiquette, scontrol.settle_node: a reason gpunode did not set is never
overwritten, the watcher's drain is left to the watcher. The reason's `gpunode: drain:` holds the
node: the gate's health check never resumes it (its GPU checks cannot see a network fault), a
person does. Every name and the reason are checked before the first node is touched; --dry-run
reads each node and prints the scontrol argv, changing nothing. Each drain made is one line of
the audit trail, as the gate's."""

from __future__ import annotations

import io
from dataclasses import dataclass

from gpunode.exits import UsageError
from gpunode.slurm.dryrun import DryRunSlurm, dry_action
from gpunode.slurm.scontrol import (
    DRAIN_PREFIX,
    REASON_MAX,
    WATCH_PREFIX,
    Slurm,
    SlurmAction,
    SlurmError,
    is_node_name,
    settle_node,
)


@dataclass(frozen=True)
class Drained:
    """What was done (or would be, --dry-run) to one node."""

    node: str
    action: str  # drained | unchanged | left-foreign | error | would-drain
    detail: str
    argv: list[str] | None = None  # --dry-run: the scontrol command it would run


def check(nodes: list[str], reason: str) -> str:
    """The reason as scontrol gets it; UsageError for a name or a reason that must not reach it."""
    if not nodes:
        raise UsageError("give the nodes to drain")
    for node in nodes:
        if not is_node_name(node):
            raise UsageError(f"node {node[:60]!r} is not a host name")
        if node.lower() == "all":  # `scontrol update nodename=all` drains every node
            raise UsageError(f"node {node!r}: scontrol reads it as every node; name the nodes")
    if any(ord(c) < 32 or ord(c) == 127 for c in reason):
        raise UsageError("--reason: one line of printable text")
    one = " ".join(reason.split())
    if not one.isprintable():  # format and bidi characters (U+202E) would hide what sinfo shows
        raise UsageError("--reason: one line of printable text")
    if one.startswith(WATCH_PREFIX):
        raise UsageError(f"--reason: {WATCH_PREFIX!r} is the watcher's own (lifted only by it or a diag): say it another way")
    if not one.startswith(DRAIN_PREFIX) or len(one) == len(DRAIN_PREFIX):
        raise UsageError(f"--reason {reason[:60]!r}: must start with {DRAIN_PREFIX!r} and say why "
                         "(gpunode never lifts such a drain: a person resumes the node)")
    if len(one) > REASON_MAX:
        raise UsageError(f"--reason: {len(one)} characters, at most {REASON_MAX} (sinfo and alerting cut longer ones)")
    return one


def drain(slurm: Slurm, nodes: list[str], reason: str, dry_run: bool = False,
          by: str = "slurm drain") -> list[Drained]:
    """Each node in turn: read it, then drain it unless someone else's reason or a held drain is
    on it; each drain made goes to the audit trail (`by`: the command that asked for it)."""
    from gpunode.trail import log

    out: list[Drained] = []
    for node in nodes:
        acting = DryRunSlurm(io.StringIO()) if dry_run else slurm  # reads from slurm, acts in acting
        try:
            done = settle_node(acting, slurm.show_node(node), reason)
        except SlurmError as exc:
            done = SlurmAction("error", str(exc))
        if dry_run:
            done = dry_action(done) or done
        argv = acting.would_run[-1] if dry_run and acting.would_run else None
        if done.action == "drained":  # a dry run's is `would-drain`
            log("drain", {"mode": by, "node": node, "detail": done.detail}, None, "warning")
        out.append(Drained(node, done.action, done.detail, argv))
    return out


def exit_code(results: list[Drained]) -> int:
    """0 all drained (or already), 1 a node left as someone else holds it, 3 scontrol failed."""
    from gpunode.exits import EXIT_CODES

    if any(r.action == "error" for r in results):
        return EXIT_CODES["UNKNOWN"]
    if any(r.action == "left-foreign" for r in results):
        return EXIT_CODES["WARN"]
    return EXIT_CODES["OK"]
