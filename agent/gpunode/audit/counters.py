"""The previous reading of each error counter, kept in the state directory, so checks judge how
much a counter grew since the last audit instead of a lifetime total.

A lifetime total hides a fresh burst after months of uptime and keeps one old link flap
warning forever. A store without a directory (audits of snapshots and sysroots, which must not
write the live state) remembers nothing: every reading is a first one, judged as a total.

    <state>/counters.json   {"schema", "host", "boot_id", "readings": {key: {"value", "time"}}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

from gpunode.inputs import decode, parse_json
from gpunode.state_dir import UntrustedState, check_dir, read_file

SCHEMA = "gpunode.counters/1"
FILE = "counters.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
MAX_BYTES = 4 << 20  # thousands of counters fit; a larger file is not ours
# The same words whether this is the node's first audit or an audit that keeps no state (a
# snapshot, a sysroot): a live audit and the replay of its snapshot read the same.
NO_EARLIER = "no earlier reading"
RESET = "counter reset since the last audit"
KEEP_S = 30 * 86400.0


# A NamedTuple, not a frozen dataclass: the same immutable record for a tenth of the class-making
# cost, paid at import by the gate before every job (issue 21).
class Growth(NamedTuple):
    """How a counter moved since the previous reading."""

    value: int
    first: bool  # no usable previous reading: judge `value` as a lifetime total
    delta: int = 0
    hours: float = 0.0
    since: float | None = None  # epoch of the previous reading
    why_first: str = NO_EARLIER  # or RESET

    def per_hour(self) -> float:
        return self.delta / max(self.hours, 1 / 60)  # a minute at least: no rate from 1 s

    def note(self) -> str:
        """Why a count is judged as a total."""
        return self.why_first


class CounterStore:
    def __init__(self, path: Path | None = None, host: str = "", boot_id: str | None = None,
                 previous: dict | None = None, problem: str | None = None):
        self.path = path
        self.host = host
        self.boot_id = boot_id
        self.previous: dict[str, dict] = previous or {}
        self.current: dict[str, dict] = {}
        self.problem = problem  # why the previous readings could not be used (said once, in meta)

    @classmethod
    def load(cls, state_dir: Path | None, host) -> CounterStore:
        """The store of the live host `host` in `state_dir`; state_dir None: remember nothing."""
        boot_id = host.sys.read_value(BOOT_ID)
        if state_dir is None:
            return cls(None, host.facts.hostname, boot_id)
        path = Path(state_dir) / FILE
        previous: dict = {}
        problem = None
        try:  # the state-dir guard: ours, not a link, a regular file (a FIFO never blocks an audit)
            if check_dir(path.parent):
                data = parse_json(decode(read_file(path, MAX_BYTES), path), path)
                previous = _readings(data, host.facts.hostname, boot_id)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, UnicodeDecodeError, UntrustedState) as exc:
            problem = f"{path}: unreadable, judging lifetime totals ({exc})"
        return cls(path, host.facts.hostname, boot_id, previous, problem)

    def growth(self, key: str, value: int, now: float) -> Growth:
        """Judge `value` against the previous reading of `key` and remember it for the next run."""
        self.current[key] = {"value": int(value), "time": now}
        old = self.previous.get(key)
        if old is None:
            return Growth(value, True)
        if value < old["value"]:  # the driver reloaded or someone cleared the counters
            return Growth(value, True, since=old["time"], why_first=RESET)
        hours = max(now - old["time"], 0.0) / 3600.0
        return Growth(value, False, value - old["value"], hours, old["time"])

    def save(self) -> str | None:
        """Write what this audit read (readings it did not take are kept). -> a warning or None."""
        if self.path is None or not self.current:
            return None
        from gpunode.outputs import write_atomic

        # Readings this audit did not take (a check skipped, --only) are kept for the next one,
        # until they are too old to say anything: a replaced GPU or HCA does not linger forever.
        newest = max(entry["time"] for entry in self.current.values())
        kept = {k: v for k, v in self.previous.items() if v["time"] >= newest - KEEP_S}
        readings = {**kept, **self.current}
        doc = {"schema": SCHEMA, "host": self.host, "boot_id": self.boot_id, "readings": readings}
        try:
            check_dir(self.path.parent, create=True)  # never chmod'ed: an untrusted one is refused
            write_atomic(self.path, json.dumps(doc, indent=1, sort_keys=True) + "\n", mode=0o600)
        except (OSError, UntrustedState) as exc:
            return f"cannot keep counter readings in {self.path}: {getattr(exc, 'strerror', None) or exc}"
        return None


def _readings(data, hostname: str, boot_id: str | None) -> dict[str, dict]:
    """The usable previous readings: none from another host, another boot (counters restart at
    boot), or with a malformed entry."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA or not isinstance(data.get("readings"), dict):
        raise ValueError(f"not a {SCHEMA} document")
    if data.get("host") != hostname or (boot_id and data.get("boot_id") != boot_id):
        return {}
    readings = {}
    for key, entry in data["readings"].items():
        if not isinstance(entry, dict):
            raise ValueError(f"reading {key!r} is not a mapping")
        value, when = entry.get("value"), entry.get("time")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"reading {key!r}: value must be a count")
        if isinstance(when, bool) or not isinstance(when, (int, float)) or not math.isfinite(when):
            raise ValueError(f"reading {key!r}: time must be a number")
        readings[str(key)] = {"value": value, "time": float(when)}
    return readings
