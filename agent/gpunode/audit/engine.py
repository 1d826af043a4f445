"""The check engine: declared checks, their findings, and running them safely.

A check is a plain function `fn(ctx) -> Finding | list[Finding]`, declared with `@check(...)`.
An exception inside a check becomes ERROR for that check only; each check runs under a
watchdog so a hung one is named and the run still ends inside its budget.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the context imports this module: a name for annotations only
    from gpunode.audit.context import AuditContext

from gpunode import status as status_words
from gpunode.exits import EXIT_CODES  # noqa: F401 - re-exported: verdict -> exit code
from gpunode.ids import is_old_setting_pattern, matches, matches_any, normalise, unmatched

# What a check function returns: one finding or several.
CheckFunc = Callable[["AuditContext"], "Finding | Sequence[Finding]"]


class Status(str, Enum):
    PASS = "PASS"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"
    ERROR = "ERROR"


SEVERITIES = ("critical", "warning", "info")
_BAD_STATUS = {"critical": Status.FAIL, "warning": Status.WARN, "info": Status.PASS}


@dataclass(frozen=True)
class Finding:
    """What a check found. status None means 'not as expected': the check's severity decides."""

    status: Status | None
    message: str
    observed: Any = None
    expected: Any = None
    subject: str | None = None


def ok(message: str, observed=None, expected=None, subject=None) -> Finding:
    return Finding(Status.PASS, message, observed, expected, subject)


def bad(message: str, observed=None, expected=None, subject=None) -> Finding:
    return Finding(None, message, observed, expected, subject)


def warn(message: str, observed=None, expected=None, subject=None) -> Finding:
    return Finding(Status.WARN, message, observed, expected, subject)


def fail(message: str, observed=None, expected=None, subject=None) -> Finding:
    return Finding(Status.FAIL, message, observed, expected, subject)


def skip(reason: str, subject=None) -> Finding:
    return Finding(Status.SKIP, reason, subject=subject)


def error(message: str, subject=None) -> Finding:
    return Finding(Status.ERROR, message, subject=subject)


class CheckSkipped(Exception):
    """Raised from helpers deep in a check to end it as SKIP with this reason."""


@dataclass(frozen=True)
class Check:
    """One check: an id, what it judges, its function and how a bad finding counts (severity)."""

    id: str
    title: str
    area: str
    func: CheckFunc
    severity: str = "warning"
    tags: frozenset[str] = frozenset()
    remediation: str = ""
    needs_root: bool = False
    needs_gpu: bool = False
    cost: str = "fast"  # fast (reads only) | slow (walks many files, runs a command)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"check {self.id}: severity {self.severity!r} not in {SEVERITIES}")


def check(
    id: str,
    title: str,
    area: str,
    severity: str = "warning",
    tags: Iterable[str] = (),
    remediation: str = "",
    needs_root: bool = False,
    needs_gpu: bool = False,
    cost: str = "fast",
) -> Callable[[CheckFunc], Check]:
    def wrap(func: CheckFunc) -> Check:
        return Check(id, title, area, func, severity, frozenset(tags), remediation, needs_root, needs_gpu, cost)

    return wrap


@dataclass
class Result:
    """One judged finding of a check, as reports, the gate and Prometheus show it."""

    id: str
    title: str
    area: str
    severity: str
    status: Status
    message: str
    observed: Any = None
    expected: Any = None
    subject: str | None = None
    remediation: str = ""
    duration_s: float = 0.0
    tags: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "subject": self.subject,
            "title": self.title,
            "area": self.area,
            "severity": self.severity,
            "status": self.status.value,
            "message": self.message,
            "observed": _jsonable(self.observed),
            "expected": _jsonable(self.expected),
            "remediation": self.remediation if self.status in (Status.WARN, Status.FAIL) else "",
            "duration_s": round(self.duration_s, 4),
            "tags": self.tags,
        }


def _jsonable(value):
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    return str(value)


SETTING_TAG = "profile"  # every profile setting's check carries it (checks/settings.py)
GATE_TAG = "gate"


def is_setting(c: Check) -> bool:
    return SETTING_TAG in c.tags


@dataclass(frozen=True)
class Selection:
    """What a selection keeps; the options that matched nothing (a typo must never run a smaller
    audit silently), and the gate-tagged checks a skip removed, each with what removed it."""

    checks: list[Check]
    unmatched: list[str] = field(default_factory=list)  # one message each: `--only 'gpu.eccc' matches no check ...`
    gate_not_run: list[tuple[str, str]] = field(default_factory=list)  # (check id, "--skip 'gpu.*'")


    def gate_not_run_json(self) -> list[dict]:
        return [{"id": i, "by": by} for i, by in self.gate_not_run]


def gate_not_run_line(entries: Sequence[dict]) -> str:
    """The report's own line for gate checks a skip took out (`gate_checks_not_run` of a
    document): `gate checks not run: gpu.count, gpu.ecc (--skip 'gpu.*')`; "" when none."""
    by: dict[str, list[str]] = {}
    for e in entries:
        by.setdefault(e["by"], []).append(e["id"])
    parts = [f"{', '.join(ids)} ({why})" for why, ids in by.items()]
    return f"gate checks not run: {'; '.join(parts)}" if parts else ""


def select(
    checks: Sequence[Check],
    only: Sequence[str] = (),
    skip_ids: Sequence[str] = (),
    tags: Sequence[str] = (),
    areas: Sequence[str] = (),
    skip_areas: Sequence[str] = (),
) -> list[Check]:
    """Filter by id globs (`gpu.*`; old setting ids `gpu/*` select settings only, see
    gpunode.ids), tags, areas, and ids to skip."""
    return selection(checks, only, skip_ids, tags, areas, skip_areas).checks


def selection(
    checks: Sequence[Check],
    only: Sequence[str] = (),
    skip_ids: Sequence[str] = (),
    tags: Sequence[str] = (),
    areas: Sequence[str] = (),
    skip_areas: Sequence[str] = (),
    disabled: Sequence[str] = (),
    added: Sequence[Check] = (),
) -> Selection:
    """`select` that also says which options match none of `checks` and which gate-tagged checks
    --skip, --skip-area or the config's `disable_checks` (`disabled`) took out. `added`: checks a
    command adds on request (--golden): kept unless an id pattern leaves them out."""
    chosen = []
    gate_not_run = []
    for c in checks:
        setting = is_setting(c)
        if only and not matches_any(c.id, only, setting):
            continue
        if tags and not (set(tags) & c.tags):
            continue
        if areas and c.area not in areas:
            continue
        removed_by = _removed_by(c, setting, skip_ids, skip_areas, disabled)
        if removed_by:
            if GATE_TAG in c.tags:
                gate_not_run.append((c.id, removed_by))
            continue
        chosen.append(c)
    chosen += [c for c in added if not (only and not matches_any(c.id, only, False))
               and not _removed_by(c, False, skip_ids, (), disabled)]
    unmatched_parts = _unmatched(checks, added, only, skip_ids, tags, areas, skip_areas, disabled)
    return Selection(chosen, unmatched_parts, gate_not_run)


def _removed_by(c: Check, setting: bool, skip_ids, skip_areas, disabled) -> str:
    for option, patterns in (("--skip", skip_ids), ("config disable_checks", disabled)):
        pattern = next((p for p in patterns if matches(c.id, p, setting)), None)
        if pattern is not None:
            return f"{option} {pattern!r}"
    return f"--skip-area {c.area!r}" if c.area in skip_areas else ""


def _unmatched(checks: Sequence[Check], added, only, skip_ids, tags, areas, skip_areas, disabled) -> list[str]:
    ids = [c.id for c in [*checks, *added]]
    settings = {c.id for c in checks if is_setting(c)}
    out = []
    for option, patterns in (("--only", only), ("--skip", skip_ids), ("config disable_checks", disabled)):
        for p in unmatched(ids, patterns, settings):
            from difflib import get_close_matches  # only a typo pays for it, not every gate run

            near = get_close_matches(normalise(p), ids, n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            if is_old_setting_pattern(p):
                hint += "(old kind/key ids name profile settings only, never checks) "
            out.append(f"{option} {p!r} matches no check; {hint}`gpunode checks` lists the ids")
    known_tags = sorted({t for c in checks for t in c.tags})
    known_areas = sorted({c.area for c in checks})
    for option, values, known in (("--tag", tags, known_tags), ("--area", areas, known_areas),
                                  ("--skip-area", skip_areas, known_areas)):
        out.extend(f"{option} {v!r} matches no check; there are: {', '.join(known)}" for v in values if v not in known)
    return out


def _to_result(c: Check, f: Finding, duration: float) -> Result:
    status = f.status if f.status is not None else _BAD_STATUS[c.severity]
    return Result(
        id=c.id,
        title=c.title,
        area=c.area,
        severity=c.severity,
        status=status,
        message=f.message,
        observed=f.observed,
        expected=f.expected,
        subject=f.subject,
        remediation=c.remediation,
        duration_s=duration,
        tags=sorted(c.tags),
    )


class _Worker:
    """A daemon thread that runs one function at a time, handed over through two locks."""

    def __init__(self) -> None:
        self._job: tuple[Callable[[], Any], dict[str, Any]] | None = None
        self._go, self._done = threading.Lock(), threading.Lock()
        self._go.acquire()
        self._done.acquire()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            self._go.acquire()
            job = self._job
            if job is None:
                return
            func, box = job
            try:
                box["value"] = func()
            except BaseException as exc:  # noqa: BLE001 - contained and reported
                box["exc"] = exc
            self._done.release()

    def run(self, func: Callable[[], Any], timeout: float | None) -> dict[str, Any] | None:
        """The function's {"value"} or {"exc"}; None when it did not return within `timeout`
        (None: no limit; below 0 counts as 0, as Thread.join has it)."""
        box: dict[str, Any] = {}
        self._job = (func, box)
        self._go.release()
        if self._done.acquire(timeout=-1 if timeout is None else max(timeout, 0)):
            return box
        self.stop()  # the thread stays with the hung function and ends when (if) it returns
        return None

    def stop(self) -> None:
        self._job = None
        try:
            self._go.release()
        except RuntimeError:  # it has not taken its last job yet: it finds none there and ends
            pass


class _Watchdog:
    """Runs each check in a worker thread and waits at most its timeout. One thread serves the
    checks of a run one after another (a thread started per check cost the gate ~1 ms before
    every job, issue 21); a check that hangs keeps its thread, the next check gets a new one."""

    def __init__(self) -> None:
        self._worker: _Worker | None = None

    def call(self, func: Callable[[], Any], timeout: float | None) -> tuple[str, Any]:
        """-> ("ok", value) | ("raised", exc) | ("timeout", None)."""
        worker, self._worker = self._worker or _Worker(), None
        try:
            box = worker.run(func, timeout)
        except BaseException:  # interrupted while waiting: the thread ends when its check returns
            worker.stop()
            raise
        if box is None:
            return "timeout", None
        self._worker = worker
        if "exc" in box:
            return "raised", box["exc"]
        return "ok", box.get("value")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None


def run_checks(
    checks: Sequence[Check],
    ctx: AuditContext,
    check_timeout: float = 10.0,
    total_timeout: float | None = None,
    on_result: Callable[[Result], None] | None = None,
) -> list[Result]:
    """Run checks in order. `ctx` must have `.host` (for facts); checks get ctx as argument."""
    results: list[Result] = []
    started = time.monotonic()
    watchdog = _Watchdog()
    try:
        for c in checks:
            remaining = None if total_timeout is None else total_timeout - (time.monotonic() - started)
            if remaining is not None and remaining <= 0.05:
                found = [error(f"not run: the time budget of {total_timeout:.1f}s was used up")]
                duration = 0.0
            else:
                timeout = check_timeout if remaining is None else min(check_timeout, remaining)
                found, duration = _run_one(c, ctx, timeout, watchdog)
            for f in found:
                result = _to_result(c, f, duration)
                results.append(result)
                if on_result:
                    on_result(result)
    finally:
        watchdog.close()
    return results


def _run_one(c: Check, ctx: AuditContext, timeout: float, watchdog: _Watchdog) -> tuple[list[Finding], float]:
    if c.needs_root and not ctx.host.facts.is_root:
        return [skip("needs root")], 0.0
    t0 = time.monotonic()
    state, value = watchdog.call(lambda: _materialize(c.func(ctx)), timeout)
    duration = time.monotonic() - t0
    if state == "timeout":
        return [error(f"check {c.id} hung: no answer within {timeout:.1f}s")], duration
    if state == "raised":
        if isinstance(value, CheckSkipped):
            return [skip(str(value))], duration
        return [error(f"check raised {type(value).__name__}: {value}")], duration
    if value is None:
        return [error("check returned nothing")], duration
    if not value:
        return [error("check returned no finding")], duration
    strays = [f for f in value if not isinstance(f, Finding)]
    if strays:  # a bug in the check: judged here, never a crash of the whole run
        return [error(f"check returned {type(strays[0]).__name__}, not a finding")], duration
    return value, duration


def _materialize(value) -> list | None:
    """A Finding or an iterable of them -> a list, built inside the watchdog (a generator's
    body runs only when iterated: a hang or an exception there belongs to the check)."""
    if value is None:
        return None
    if isinstance(value, Finding):
        return [value]
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        return [value]  # not findings: _run_one says so
    return list(value)




def overall(results: Sequence[Result]) -> str:
    """Nagios-style: any FAIL -> FAIL; else any ERROR -> UNKNOWN; else any WARN -> WARN; else OK.
    Nothing judged (every result SKIP, or none) is UNKNOWN: nothing measured is never OK."""
    return status_words.verdict(r.status.value for r in results)
