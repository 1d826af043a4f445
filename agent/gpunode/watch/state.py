"""The watcher's state document (/run/gpunode/health.json) and its one-line verdict file.

health.json (schema gpunode.watch/1), written atomically after every poll and every event:
    {"schema", "host", "boot_id", "pid", "pid_start", "poll_s", "time" (last write),
     "poll": {"time", "duration_s", "status"}, "checks": [Result.to_json() + "read_at"],
     "gpus": {gpu: {"status", "read_at", "processes": [[pid, name]]}}, "events": [...],
     "sources": {name: "ok" | why not}}
verdict (one line, for the Slurm prolog hook, which reads it in shell without Python):
    <status> <epoch> <boot id> <pid> <uptime>     e.g. `OK 1765000000 0f1e...-... 4242 86400`
`uptime` is whole seconds since boot (/proc/uptime), so a plain /bin/sh can judge its age
without starting `date`.

The reader (read_fresh) is on the gate's path: standard library only, every field checked,
because the document is input like any other (another writer, a stale file, a hostile one).
"""

from __future__ import annotations

import math
import os
import stat

from gpunode import status

SCHEMA = "gpunode.watch/1"
STATE_DIR = "/run/gpunode"
STATE_FILE = "health.json"
VERDICT_FILE = "verdict"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
MAX_BYTES = 4 << 20
MAX_EVENTS = 200  # the newest are kept: the document stays small however noisy the node
STATUSES = status.RESULTS
VERDICTS = status.VERDICTS
POLL_RANGE_S = (1.0, 600.0)


# --- facts of this process and boot --------------------------------------------------------

def read_boot_id(path: str = BOOT_ID) -> str | None:
    try:
        with open(path, encoding="ascii") as fh:
            value = fh.read(64).strip()
    except (OSError, UnicodeDecodeError):
        return None
    return value if _is_boot_id(value) else None


def _is_boot_id(value: object) -> bool:
    return (isinstance(value, str) and len(value) == 36
            and all(c in "0123456789abcdef-" for c in value) and value.count("-") == 4)


def pid_start(pid: int, proc: str = "/proc") -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22): a pid the
    kernel reused for another process has another start time."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as fh:
            raw = fh.read(4096).decode("ascii", "replace")
    except OSError:
        return None
    fields = raw.rpartition(")")[2].split()  # the command name may hold spaces and parentheses
    try:
        return int(fields[19])  # field 22; fields[0] is field 3 (state)
    except (IndexError, ValueError):
        return None


def uptime_s(path: str = "/proc/uptime") -> int | None:
    try:
        with open(path, encoding="ascii") as fh:
            return int(float(fh.read(64).split()[0]))
    except (OSError, ValueError, IndexError):
        return None


# --- writing --------------------------------------------------------------------------------

def ensure_dir(directory: str) -> None:
    """Create the state directory 0755 when it is missing; an existing one is never chmod'ed
    (an operator's choice, or someone else's directory: then writing into it fails loudly)."""
    try:
        os.mkdir(directory, 0o755)
    except FileExistsError:
        return
    os.chmod(directory, 0o755)  # our own new directory: the umask must not narrow what readers see


def verdict_line(status: str, epoch: float, boot_id: str | None, pid: int, up: int | None) -> str:
    if status not in VERDICTS:
        raise ValueError(f"not a verdict: {status!r}")
    return f"{status} {int(epoch)} {boot_id or '-'} {int(pid)} {-1 if up is None else int(up)}\n"


def write_state(directory: str, document: dict, verdict: str, now: float) -> None:
    """health.json, then the verdict line (the hook trusts only the line; the gate the document)."""
    import json

    from gpunode.outputs import write_atomic

    ensure_dir(directory)
    text = json.dumps(document, indent=1, sort_keys=True, allow_nan=False) + "\n"
    write_atomic(os.path.join(directory, STATE_FILE), text, mode=0o644)
    line = verdict_line(verdict, now, document.get("boot_id"), document["pid"], uptime_s())
    write_atomic(os.path.join(directory, VERDICT_FILE), line, mode=0o644)


# --- reading (the gate's path) --------------------------------------------------------------

class StateRefused(ValueError):
    """health.json cannot be trusted now: the reason says why (the gate reads NVML instead)."""


def read_document(path: str) -> dict:
    """The parsed document of a regular file that only root (or this user) may have written."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise StateRefused("not a regular file")
        if info.st_uid not in (0, os.geteuid()) or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise StateRefused(f"owned by uid {info.st_uid} or writable by others (mode {info.st_mode & 0o777:o})")
        if info.st_size > MAX_BYTES:
            raise StateRefused(f"larger than {MAX_BYTES} bytes")
        raw = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = parse_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise StateRefused(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise StateRefused("not a JSON object")
    return data


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


class _Strict:
    """What CPython's C JSON scanner reads from its decoder (json.decoder.JSONDecoder's fields)."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)  # NaN, Infinity: refused
    memo: dict = {}


def parse_json(text: str):
    """json.loads without importing json: the gate reads the state before every job, and json
    imports re and enum (~10 ms). CPython's C scanner (_json) does the work; elsewhere, json."""
    try:
        from _json import make_scanner
    except ImportError:
        import json

        return json.loads(text, parse_constant=_no_constant)
    text = text.strip(" \t\n\r")
    try:
        value, end = make_scanner(_Strict())(text, 0)  # type: ignore[arg-type]  # duck-typed decoder
    except StopIteration as stop:
        raise ValueError(f"no JSON value at character {stop.value}") from None
    if end != len(text):
        raise ValueError(f"extra data at character {end}")
    return value


def _number(doc: dict, key: str, low: float = 0.0, high: float = math.inf) -> float:
    value = doc.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
            or not math.isfinite(value):  # 1e999 parses as inf: no time is infinite
        raise StateRefused(f"{key}: not a finite number in [{low:g}, {high:g}]")
    return float(value)


def _text(doc: dict, key: str, optional: bool = False, limit: int = 4096) -> str | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit or not value.isprintable():
        raise StateRefused(f"{key}: not one line of at most {limit} printable characters")
    return value


def validate(data: dict) -> dict:
    """Type-check every field the gate uses; StateRefused naming the first bad one."""
    _validate_header(data)
    _validate_checks(data.get("checks"))
    _validate_events(data.get("events"))
    return data


def _validate_header(data: dict) -> None:
    if data.get("schema") != SCHEMA:
        raise StateRefused(f"schema is not {SCHEMA}")
    if not _is_boot_id(data.get("boot_id")):
        raise StateRefused("boot_id: not a boot id")
    pid = data.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 1 <= pid < 1 << 22:
        raise StateRefused("pid: not a process id")
    start = data.get("pid_start")
    if start is not None and (isinstance(start, bool) or not isinstance(start, int) or start < 0):
        raise StateRefused("pid_start: not a count of clock ticks")
    _number(data, "poll_s", *POLL_RANGE_S)
    _number(data, "time")
    poll = data.get("poll")
    if not isinstance(poll, dict):
        raise StateRefused("poll: not an object")
    _number(poll, "time")
    if "started" in poll:
        _number(poll, "started")


def _validate_checks(checks: object) -> None:
    if not isinstance(checks, list) or len(checks) > 10000:
        raise StateRefused("checks: not a list")
    for i, entry in enumerate(checks):
        if not isinstance(entry, dict):
            raise StateRefused(f"checks[{i}]: not an object")
        for key in ("id", "title", "area", "severity", "message"):
            _text(entry, key)
        _text(entry, "subject", optional=True)
        if entry.get("status") not in STATUSES:
            raise StateRefused(f"checks[{i}].status: not one of {', '.join(STATUSES)}")
        tags = entry.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise StateRefused(f"checks[{i}].tags: not a list of strings")


def _validate_events(events: object) -> None:
    if not isinstance(events, list) or len(events) > MAX_EVENTS:
        raise StateRefused("events: not a list")
    for i, event in enumerate(events):
        if not isinstance(event, dict):
            raise StateRefused(f"events[{i}]: not an object")
        _number(event, "time")
        _number(event, "seen")
        _text(event, "kind", limit=64)
        _text(event, "gpu", optional=True, limit=128)
        _text(event, "text", limit=1000)
        if not isinstance(event.get("blocking"), bool):
            raise StateRefused(f"events[{i}].blocking: not true/false")
        code = event.get("code")
        if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
            raise StateRefused(f"events[{i}].code: not an integer")


def process_alive(pid: int, start: int | None, proc: str = "/proc") -> bool:
    now = pid_start(pid, proc)
    return now is not None and (start is None or now == start)


def read_fresh(directory: str, now: float, boot_id: str | None = None, proc: str = "/proc") -> tuple[dict, float]:
    """(document, age of its last poll in seconds) when the gate may judge from it: written by a
    live watcher of this boot, polled at most 2 x its interval ago. StateRefused otherwise."""
    try:
        data = validate(read_document(os.path.join(directory, STATE_FILE)))
    except OSError as exc:
        raise StateRefused(exc.strerror or str(exc)) from None
    boot_id = boot_id or read_boot_id()
    if data["boot_id"] != boot_id:
        raise StateRefused("written before this boot")
    if not process_alive(data["pid"], data.get("pid_start"), proc):
        raise StateRefused(f"its watcher (pid {data['pid']}) is gone")
    age = now - data["poll"]["time"]
    if not -1.0 <= age <= 2 * data["poll_s"]:  # a little clock skew between processes is fine
        raise StateRefused(f"last poll {age:.1f} s ago (more than 2 x {data['poll_s']:g} s)")
    return data, max(age, 0.0)


def blocking_events_since(data: dict, poll: dict) -> list[dict]:
    """Events the gate must FAIL on at once: blocking ones the watcher saw after its last poll
    began (by its own clock: the kernel's time of a line may lag or lead by seconds)."""
    since = poll.get("started", poll["time"])
    return [e for e in data["events"] if e["blocking"] and e["seen"] >= since]
