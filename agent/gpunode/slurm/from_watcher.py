"""The gate judged from the resident watcher's state (gpunode watch, /run/gpunode/health.json).

While the document is fresh (a live watcher of this boot polled the gate checks at most 2 x its
interval ago; every field type-checked: gpunode.watch.state.read_fresh), the gate does not open
NVML: the watcher's last poll is the gate's results, and a blocking event newer than that poll
(a critical Xid, an uncorrectable ECC error, a GPU off the bus) is a FAIL at once.
A verdict that does not block is answered here, with nothing else imported (the lean path:
the prolog pays for no profile, config or check module); one that blocks, and every
health-check, goes through slurm.gate.run_gate with these results, so drains, reasons and
resumes work as always. Otherwise (no watcher, stale, another boot, a dead writer, a hostile
document, a snapshot, the epilog, --expected-gpus) the gate reads NVML as before.
"""

from __future__ import annotations

import os
import sys

from gpunode import status as status_words
from gpunode.exits import EXIT_CODES, slurm_hook_exit

WATCH_DIR_ENV = "GPUNODE_WATCH_DIR"  # where the watcher writes (tests; default /run/gpunode)
# watch.state's STATE_DIR and STATE_FILE (tests/test_gate_watcher.py holds them equal): the gate
# stats the document first, so a node without a watcher never imports its reader.
STATE_DIR, STATE_FILE = "/run/gpunode", "health.json"
EVENT_CHECK_ID = "watch.events"


class Watched:
    """A fresh watcher document and what the gate makes of it."""

    __slots__ = ("doc", "age", "events")

    def __init__(self, doc: dict, age: float, events: list[dict]) -> None:
        self.doc, self.age, self.events = doc, age, events

    @property
    def source(self) -> str:
        return f"watcher (age {self.age:.1f} s)"


def watcher_state(kwargs: dict, mode: str, environ=os.environ) -> Watched | None:
    """The fresh watcher state the gate may judge from, or None (then it reads NVML)."""
    if (mode == "epilog" or kwargs.get("snapshot") or environ.get("GPUNODE_SNAPSHOT")
            or kwargs.get("expected_gpus") is not None):
        return None
    directory = environ.get(WATCH_DIR_ENV) or STATE_DIR
    if not os.path.exists(os.path.join(directory, STATE_FILE)):
        return None  # no watcher: read_fresh would refuse it too
    import time

    from gpunode.watch.state import StateRefused, blocking_events_since, read_fresh

    try:
        doc, age = read_fresh(directory, time.time())
        return Watched(doc, age, blocking_events_since(doc, doc["poll"]))
    except StateRefused:
        return None
    except Exception:  # noqa: BLE001 - whatever is wrong with the watcher, the gate reads NVML
        return None


def _status(checks: list[dict]) -> str:
    """gpunode.audit.engine.overall over the documents (without importing the engine)."""
    return status_words.verdict(c["status"] for c in checks)


def blocks(watched: Watched, strict: bool) -> bool:
    bad = {"FAIL", "ERROR"} if strict else {"FAIL"}
    return bool(watched.events) or any(c["status"] in bad for c in watched.doc["checks"])


def lean_verdict(watched: Watched, mode: str, kwargs: dict) -> int | None:
    """The exit code of a gate the watcher's state answers without blocking; None when the full
    gate must run (a block, a health check, --prometheus)."""
    if mode not in ("check", "prolog") or kwargs.get("prometheus") or blocks(watched, kwargs.get("strict", False)):
        return None
    checks = watched.doc["checks"]
    status = _status(checks)
    code = EXIT_CODES[status] if mode == "check" else slurm_hook_exit(mode, False)
    if kwargs.get("as_json"):
        import json

        sys.stdout.write(json.dumps(document(watched, mode, status, code, kwargs), indent=2) + "\n")
    else:
        lines = [f"{c['status']:5s} {c['id']}{' ' + c['subject'] if c.get('subject') else ''}: "
                 f"{' '.join(c['message'].split())}" for c in checks if c["status"] not in status_words.NOTHING_WRONG]
        tally = ", ".join(f"{n} {s}" for s, n in _summary(checks).items() if n)
        lines.append(f"gpunode gate ({mode}): {status}; {len(checks)} results ({tally or 'none'})")
        lines.append(f"source: {watched.source}")
        sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return code


def _summary(checks: list[dict]) -> dict:
    counts = dict.fromkeys(status_words.RESULTS, 0)
    for c in checks:
        counts[c["status"]] += 1
    return counts


def document(watched: Watched, mode: str, status: str, code: int, kwargs: dict) -> dict:
    """A gpunode.gate/1 document (slurm.gate.gate_document's fields) from the watcher's state."""
    import time

    from gpunode import __version__

    doc = watched.doc
    when = doc["poll"]["time"]
    return {
        "schema": "gpunode.gate/1", "gpunode_version": __version__, "host": str(doc.get("host")),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(when)), "time_epoch": when, "source": watched.source, "mode": mode,
        "strict": bool(kwargs.get("strict")), "status": status, "exit_code": code, "blocked": False,
        "reason": None, "opted_out": None, "slurm": None, "problems": [], "summary": _summary(doc["checks"]),
        "checks": [{k: v for k, v in c.items() if k != "read_at"} for c in doc["checks"]],
    }


def results(watched: Watched) -> list:
    """The watcher's poll as engine Results, plus one FAIL per blocking event since it (the
    full gate's path: reasons, drains and resumes as always)."""
    from gpunode.audit.engine import Result, Status

    found = [Result(c["id"], c["title"], c["area"], c["severity"], Status(c["status"]), c["message"],
                    observed=c.get("observed"), expected=c.get("expected"), subject=c.get("subject"),
                    remediation=c.get("remediation") or "", tags=list(c.get("tags") or []))
             for c in watched.doc["checks"]]
    for e in watched.events:
        what = f"{e['kind']} {e['code']}" if e.get("code") is not None else e["kind"]
        found.append(Result(EVENT_CHECK_ID, "No critical GPU event since the watcher's last poll", "gpu", "critical",
                            Status.FAIL, f"{what} seen by gpunode watch: {e['text']}", subject=e.get("gpu"),
                            remediation="Drain the node; see `gpunode watch --status` and docs/watch.md.",
                            tags=["gate"]))
    return found
