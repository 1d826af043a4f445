"""Queueing disciplines the interfaces run, from `tc -j qdisc show` (iproute2 >= 4.13), through the Runner.

net.core.default_qdisc only names the qdisc the kernel attaches when it creates one: interfaces
keep what they got at link-up until their root qdisc is replaced, so the sysctl alone does not
say what the NICs run. A multiqueue NIC runs `mq` at the root with one child per TX queue.
"""

from __future__ import annotations

import json
from typing import NamedTuple

ARGV = ("tc", "-j", "qdisc", "show")
TIMEOUT_S = 5.0
# Roots the kernel itself attaches to spread TX queues; packets end in their children.
MULTIQUEUE_ROOTS = ("mq",)


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class Qdisc(NamedTuple):
    """One queueing discipline as `tc -j qdisc show` lists it."""

    dev: str
    kind: str
    handle: str
    parent: str | None  # None at the root
    root: bool


def parse(text: str) -> list[Qdisc]:
    """tc's JSON -> qdiscs. Raises ValueError for output that is not tc's list of qdiscs
    (truncated, an error message, an older tc without -j)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, list):
        raise ValueError("not a list of qdiscs")
    found = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("kind"), str) or not isinstance(item.get("dev"), str):
            raise ValueError(f"an entry without kind/dev: {str(item)[:80]}")
        found.append(Qdisc(item["dev"], item["kind"], str(item.get("handle", "")),
                           item.get("parent") if isinstance(item.get("parent"), str) else None,
                           bool(item.get("root"))))
    return found


def leaf_kinds(qdiscs: list[Qdisc], dev: str) -> list[str]:
    """What the packets of `dev` queue in: its root qdisc, or the children of an `mq` root."""
    mine = [q for q in qdiscs if q.dev == dev]
    root = next((q for q in mine if q.root), None)
    if root is None:
        return []
    if root.kind in MULTIQUEUE_ROOTS:
        children = [q.kind for q in mine if q.parent and q.parent.split(":")[0] + ":" == root.handle]
        return children or [root.kind]
    return [root.kind]


def read(host) -> tuple[list[Qdisc] | None, str | None, bool]:
    """-> (qdiscs, why not readable, tc missing). Recorded in snapshots like every Runner call."""
    result = host.runner.run(list(ARGV), timeout=TIMEOUT_S)
    if result.error is not None or result.rc == 127:
        return None, result.error or "tc: command not found", True
    if not result.ok:
        said = (result.stderr or result.stdout).strip().splitlines()
        return None, f"tc exited {result.rc}{': ' + said[0][:120] if said else ''}", False
    try:
        return parse(result.stdout), None, False
    except ValueError as exc:
        return None, f"cannot read tc's output: {exc}", False
