"""This node as Slurm sees it: state, reason, GPU gres; drain and resume through scontrol.

Etiquette (NHC's lessons): a reason that does not start with `gpunode:` belongs to someone
else (an operator, Slurm itself) and is never overwritten or cleared; gpunode resumes only
a node that it drained itself. A drain a person asked for (`gpunode slurm drain`, `fleet locate
--drain`: `gpunode: drain: ...`) is that person's: gpunode never lifts or overwrites it. Every
command goes through the Runner with a timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import NamedTuple

from gpunode.host.runner import Runner

OUR_PREFIX = "gpunode:"
# The watcher's drains (gpunode watch): lifted only by the watcher or a diag burn-in, after a
# proof of the fix, never by a passing gate alone. watch.policy.WATCH_REASON spells it too (a
# test holds them equal: the watch floor cannot import this one).
WATCH_PREFIX = OUR_PREFIX + " watch:"
# Drains a person asked for (`gpunode slurm drain`, `fleet locate --drain`: a network fault the
# gate's GPU checks cannot see): lifted only by a person, never by a passing gate or diag.
DRAIN_PREFIX = OUR_PREFIX + " drain:"
HELD_PREFIXES = (WATCH_PREFIX, DRAIN_PREFIX)  # settle_node leaves these drains as they are
SCONTROL_TIMEOUT_S = 5.0
# Slurm keeps long reasons, but sinfo/squeue columns and alerting tools cut them: stay short.
REASON_MAX = 100

# Patterns compiled at first use (re's own cache), not at import: the gate imports this module
# before every job and rarely needs them (issue 21).
# `Reason=text [user@2026-11-24T00:06:10]`: the bracket is Slurm's who/when, not the reason.
_REASON_STAMP = r"\s*\[[^\[\]@]*@[^\[\]]*\]\s*\Z"
# A Slurm node name as scontrol and srun's --nodelist get it: a host name, nothing that reads as an
# option (`-R`) or holds a space or `=`; no ':' or '%' (an IPv6 address or zone is no node name).
_NODE_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}"
# One gres entry: name[:type][:count][(S:0-1)], e.g. gpu:h100:8(S:0-1); count may be missing (1).
_GRES_ENTRY = r"^(?P<name>[^:(]+)(?::(?P<type>[^:(]+))?(?::(?P<count>\d+))?(?:\(.*\))?"


class SlurmError(RuntimeError):
    """scontrol could not answer (not installed, no controller, unknown node)."""


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class NodeInfo(NamedTuple):
    """The parts of `scontrol show node` the gate acts on."""

    name: str
    state: str  # as Slurm prints it: IDLE+DRAIN, ALLOCATED+DRAIN, DOWN+NOT_RESPONDING
    reason: str | None  # without Slurm's [user@time] stamp; None when unset
    gres: str | None

    @property
    def flags(self) -> set[str]:
        return set(self.state.upper().split("+")) if self.state else set()

    @property
    def drained(self) -> bool:
        """Drained or draining, or down: not taking new jobs."""
        return bool(self.flags & {"DRAIN", "DRAINED", "DRAINING", "DOWN", "FAIL"})

    @property
    def reason_is_ours(self) -> bool:
        """gpunode set it and may change it: not a drain a person asked for through gpunode."""
        return bool(self.reason) and self.reason.startswith(OUR_PREFIX) and not self.reason.startswith(DRAIN_PREFIX)

    @property
    def gpu_count(self) -> int | None:
        return gres_gpu_count(self.gres)


def parse_show_node(text: str) -> NodeInfo:
    """Parse `scontrol show node NAME` (multi-line form). Reason and OS run to the end of
    their line (they contain spaces); every other line is space-separated key=value pairs."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        for key in ("Reason=", "OS=", "Comment=", "Extra="):
            if stripped.startswith(key):
                # The first: a reason with a line break prints its next line under it, and
                # `ops\nReason=gpunode: x` must stay someone else's reason.
                fields.setdefault(key[:-1], stripped[len(key):])
                break
        else:
            for token in stripped.split():
                key, sep, value = token.partition("=")
                if sep:
                    fields.setdefault(key, value)
    name, state = fields.get("NodeName"), fields.get("State")
    if not name or not state:
        # Cut short: deciding on it could overwrite a reason we never saw.
        raise SlurmError("scontrol show node: incomplete output (no NodeName or State)")
    reason = fields.get("Reason")
    if reason is not None:
        reason = re.sub(_REASON_STAMP, "", reason).strip() or None
        if reason in ("(null)", "none"):
            reason = None
    gres = fields.get("Gres")
    return NodeInfo(name=name, state=state, reason=reason,
                    gres=None if gres in (None, "", "(null)") else gres)


def is_node_name(name: str) -> bool:
    """A name that may reach scontrol or srun as one node (`ALL` aside: scontrol's every node)."""
    return re.fullmatch(_NODE_NAME, name) is not None


def gres_gpu_count(gres: str | None) -> int | None:
    """`gpu:8`, `gpu:h100:8(S:0-1)`, `gpu:h100:2(S:0),gpu:a100:1(S:0)` -> total GPUs; None
    when the node declares no gpu gres (then nothing is expected from Slurm)."""
    if not gres:
        return None
    total, found = 0, False
    # Split on commas outside parentheses: (S:0-1) never holds a comma, but (S:0,1) might.
    for entry in re.split(r",(?![^()]*\))", gres):
        match = re.fullmatch(_GRES_ENTRY, entry.strip())
        if not match or match.group("name") != "gpu":
            continue
        found = True
        count = match.group("count")
        if count is None and match.group("type") and match.group("type").isdigit():
            count = match.group("type")  # gpu:8 — the number sits in the type slot
        total += int(count) if count is not None else 1
    return total if found else None


def parse_job_comment(text: str) -> str | None:
    """The Comment= line of `scontrol show job ID` (None when the job has none)."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Comment="):
            value = stripped[len("Comment="):].strip()
            return None if value in ("", "(null)") else value
    return None


class Slurm:
    """scontrol for this node. `runner` is a live Runner even when the checks replay a
    snapshot: the node to drain is a real one."""

    def __init__(self, runner: Runner, timeout: float = SCONTROL_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic):
        self.runner = runner
        self.timeout = timeout
        self.clock = clock
        self.deadline: float | None = None  # the gate's budget: no call may run past it

    def _timeout(self) -> float:
        if self.deadline is None:
            return self.timeout
        return max(0.2, min(self.timeout, self.deadline - self.clock()))

    def node_name(self, env: Mapping[str, str]) -> str:
        """SLURMD_NODENAME (set by slurmd for prolog/epilog), else `hostname -s`."""
        name = env.get("SLURMD_NODENAME", "").strip()
        if name:
            return name
        result = self.runner.run(["hostname", "-s"], timeout=self._timeout())
        if not result.ok or not result.stdout.strip():
            raise SlurmError(f"cannot tell this node's name: {_why(result)}")
        return result.stdout.strip()

    def show_node(self, name: str) -> NodeInfo:
        result = self.runner.run(["scontrol", "show", "node", name], timeout=self._timeout())
        if not result.ok:
            raise SlurmError(f"scontrol show node {name}: {_why(result)}")
        return parse_show_node(result.stdout)

    def job_comment(self, job_id: str) -> str | None:
        result = self.runner.run(["scontrol", "show", "job", job_id], timeout=self._timeout())
        if not result.ok:
            raise SlurmError(f"scontrol show job {job_id}: {_why(result)}")
        return parse_job_comment(result.stdout)

    def drain(self, name: str, reason: str) -> None:
        self._update(["nodename=" + name, "state=drain", "reason=" + reason])

    def resume(self, name: str) -> None:
        self._update(["nodename=" + name, "state=resume"])

    def reboot(self, name: str, reason: str) -> None:
        """Reboot when idle, back in service after (the watcher's reboot class)."""
        argv = ["scontrol", "reboot", "ASAP", "nextstate=RESUME", "reason=" + reason, name]
        result = self.runner.run(argv, timeout=self._timeout())
        if not result.ok:
            raise SlurmError(f"scontrol reboot ASAP nextstate=RESUME {name}: {_why(result)}")

    def _update(self, args: list[str]) -> None:
        result = self.runner.run(["scontrol", "update", *args], timeout=self._timeout())
        if not result.ok:
            raise SlurmError(f"scontrol update {' '.join(args)}: {_why(result)}")


def _why(result) -> str:
    if result.error:
        return result.error
    if result.timed_out:
        return f"no answer within {result.duration_s:.1f}s"
    text = (result.stderr or result.stdout).strip().splitlines()
    return text[-1] if text else f"exit code {result.rc}"


class SlurmAction(NamedTuple):  # as NodeInfo
    """What the gate did to the node, for the report."""

    action: str  # drained | unchanged | left-foreign | resumed | none
    detail: str

    def to_json(self) -> dict:
        return {"action": self.action, "detail": self.detail}


def settle_node(slurm: Slurm, node: NodeInfo, reason: str | None) -> SlurmAction:
    """Drain with `reason` (a FAIL), or resume our own drain (reason None: healthy).
    A reason set by someone else is never touched, either way, nor a held drain (HELD_PREFIXES)."""
    if node.drained and node.reason and node.reason.startswith(HELD_PREFIXES):
        if node.reason.startswith(WATCH_PREFIX):
            return SlurmAction("unchanged", f"drained by gpunode watch until a diag proves the fix: {node.reason}")
        if node.reason == reason:
            return SlurmAction("unchanged", f"already drained: {reason}")
        return SlurmAction("unchanged", f"drained by gpunode slurm drain until a person resumes it: {node.reason}")
    if reason is not None:
        if node.reason and not node.reason_is_ours:
            return SlurmAction("left-foreign", f"node already has a reason not set by gpunode: {node.reason!r}")
        if node.drained and node.reason == reason:
            return SlurmAction("unchanged", f"already drained: {reason}")
        slurm.drain(node.name, reason)
        return SlurmAction("drained", reason)
    if node.drained and node.reason_is_ours:
        slurm.resume(node.name)
        return SlurmAction("resumed", f"cleared our reason: {node.reason}")
    if node.drained and node.reason:
        return SlurmAction("left-foreign", f"drained by someone else ({node.reason!r}): left as is")
    return SlurmAction("none", "healthy; nothing to change")
