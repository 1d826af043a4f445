"""The watcher's three sources, each in its own thread, each putting Events on one queue:

- NvmlEvents: an NVML event set (Xid, ECC, clocks, power, recovery action) through
  gpunode.host.gpu.nvml.NvmlEventWatch, and the compute processes between waits (a process
  that appears is in the state within a second);
- Kmsg: the kernel log from /dev/kmsg (or any readable fd: a pipe in tests), read from its end
  at start without blocking; Xid and "fallen off the bus" lines through checks.xid's parser,
  plus SXid, PCIe AER and mlx5 errors; where /dev/kmsg cannot be opened (a container), the same
  records through journald: Journald runs `journalctl -k -f -o json` (KernelLog picks);
- Poll: the gate's checks every poll_s through the audit engine; error counters are judged as
  deltas against the previous poll (an in-memory CounterStore chain).
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from gpunode.checks.xid import CRITICAL_XIDS, parse_events, pci_address
from gpunode.host.facts.kernlog import LogRecord
from gpunode.host.runner import LineReader
from gpunode.watch.events import Event

if TYPE_CHECKING:
    from gpunode.audit.counters import CounterStore

TEXT_MAX = 500
WAIT_S = 0.5  # how long a source thread blocks before it looks at the stop flag
PROCESSES_EVERY_S = 1.0  # a foreign compute process is in the state within about this (issue 22: <= 2 s)

# /dev/kmsg: "<prio>,<seq>,<usec since boot>,<flags>[,...];<message>"; continuation lines
# (" SUBSYSTEM=pci") start with a space and are dropped.
_KMSG = re.compile(r"^(?P<prio>\d+),(?P<seq>\d+),(?P<usec>\d+),[^;]*;(?P<msg>.*)")
_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")
_SXID = re.compile(r"SXid \((?:PCI:)?(?P<addr>[0-9a-fA-F:.]+)\): (?P<code>\d+)")
_AER = re.compile(r"\bAER: (?P<what>Corrected|Uncorrected \((?P<sev>Fatal|Non-Fatal)\)|Multiple Uncorrected)"
                  r"(?: \((?P<sev2>Fatal|Non-Fatal)\))?")
_MLX5 = re.compile(r"\bmlx5_core [0-9a-fA-F:.]+: .*(?:\berr(?:or)?\b|fail|fatal|health compromised|syndrome)",
                   re.IGNORECASE)
AER_CODES = {"Corrected": 0, "Non-Fatal": 1, "Fatal": 2}  # Event.code of an "aer" event


def bounded(text: str) -> str:
    return " ".join(text.split())[:TEXT_MAX]


# --- the kernel log -------------------------------------------------------------------------

def kmsg_record(line: str, boot_epoch: float) -> LogRecord | None:
    """One /dev/kmsg line -> LogRecord (kernel time converted to epoch); None for a continuation
    or a line that is not a kmsg record."""
    match = _KMSG.match(line)
    if match is None:
        return None
    message = _ESCAPE.sub(lambda m: " " if m.group(1) in ("0a", "0A", "09") else chr(int(m.group(1), 16)),
                          match.group("msg"))  # a multi-line printk arrives with \x0a escapes
    return LogRecord(boot_epoch + int(match.group("usec")) / 1e6, message)


def journal_record(line: str, boot_epoch: float) -> tuple[LogRecord, str | None] | None:
    """One line of `journalctl -o json` -> (LogRecord, its cursor); None for a line that is not
    a journal entry with a message. The time is the kernel's own (_SOURCE_MONOTONIC_TIMESTAMP,
    converted as /dev/kmsg's), else when journald received it; MESSAGE comes as a string, as a
    list of bytes when it is not UTF-8, or null when larger than journalctl prints."""
    try:
        entry = json.loads(line)
    except ValueError:  # a truncated line
        return None
    if not isinstance(entry, dict):
        return None
    message = entry.get("MESSAGE")
    if isinstance(message, list) and all(isinstance(b, int) and 0 <= b < 256 for b in message):
        message = bytes(message).decode("utf-8", "replace")
    if not isinstance(message, str):
        return None
    kernel_usec, received_usec = entry.get("_SOURCE_MONOTONIC_TIMESTAMP"), entry.get("__REALTIME_TIMESTAMP")
    if isinstance(kernel_usec, str) and kernel_usec.isdigit():
        when: float | None = boot_epoch + int(kernel_usec) / 1e6
    elif isinstance(received_usec, str) and received_usec.isdigit():
        when = int(received_usec) / 1e6
    else:
        when = None
    cursor = entry.get("__CURSOR")
    # journald undoes the kernel's \x0a escapes: one record, one line, as from /dev/kmsg
    return LogRecord(when, " ".join(message.split())), cursor if isinstance(cursor, str) else None


def kernel_events(records: list[LogRecord], gpu_of: Callable[[str], str] = lambda a: a,
                  source: str = "kmsg") -> list[Event]:
    """Events in kernel log records. `gpu_of`: PCI address (0000:18:00) -> GPU UUID where known."""
    found: list[Event] = []
    xids, _ = parse_events(records)
    for x in xids:
        kind = "fallen_off_bus" if x.inferred else "xid"
        found.append(Event(source, kind, x.time or time.time(), gpu_of(x.address), x.xid,
                           text=bounded(f"Xid {x.xid} {x.detail}" if not x.inferred else x.detail)))
    for rec in records:
        when = rec.time or time.time()
        if sxid := _SXID.search(rec.text):
            found.append(Event(source, "sxid", when, None, int(sxid.group("code")), text=bounded(rec.text)))
        elif aer := _AER.search(rec.text):
            severity = aer.group("sev") or aer.group("sev2") or ("Corrected" if aer.group("what") == "Corrected"
                                                                 else "Non-Fatal")
            found.append(Event(source, "aer", when, None, AER_CODES[severity], text=bounded(rec.text)))
        elif _MLX5.search(rec.text):
            found.append(Event(source, "mlx5", when, None, text=bounded(rec.text)))
    return found


def blocking(event: Event) -> bool:
    """Whether the gate must FAIL on this event before the next poll has judged the node: a
    critical Xid (checks.xid's list), a GPU off the bus, an uncorrectable ECC error, an
    uncorrected fatal PCIe error, a recovery action other than none."""
    if event.kind in ("xid", "fallen_off_bus"):
        return event.code in CRITICAL_XIDS
    if event.kind in ("ecc_dbe",):
        return True
    if event.kind == "aer":
        return event.code == AER_CODES["Fatal"]
    if event.kind == "recovery_action":
        return bool(event.code)
    return False


class Kmsg:
    """Reads kernel log records from `path` (/dev/kmsg) or an open fd; starts at the end."""

    name = "kmsg"

    def __init__(self, out: queue.Queue, path: str = "/dev/kmsg", fd: int | None = None,
                 boot_epoch: float | None = None, gpu_of: Callable[[str], str] = lambda a: a) -> None:
        self.out = out
        self.path = path
        self.fd = fd
        # usec since boot -> epoch: CLOCK_MONOTONIC and the kernel's printk clock agree on
        # a server that does not suspend; good to well under a second.
        self.boot_epoch = time.time() - time.monotonic() if boot_epoch is None else boot_epoch
        self.gpu_of = gpu_of
        self.status = "not started"
        self.lines: LineReader | None = None

    @property
    def eof(self) -> bool:
        """A FIFO without a writer: readable at once, forever."""
        return self.lines is not None and self.lines.eof

    def open(self) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.lseek(self.fd, 0, os.SEEK_END)  # only what happens from now on
            except OSError:
                pass  # a pipe has no end to seek to
        else:
            os.set_blocking(self.fd, False)
        if self.lines is None:
            self.lines = LineReader(self.fd)
        self.status = "ok"

    def read_available(self) -> list[Event]:
        """Every complete record readable now, without blocking."""
        if self.lines is None:
            assert self.fd is not None, "open() first"
            self.lines = LineReader(self.fd)
        lines = self.lines.read_lines()
        if self.lines.overwritten:  # /dev/kmsg's ring overwrote records we had not read (EPIPE)
            self.status = "ok (some kernel messages were overwritten before they were read)"
        texts = (line.decode("utf-8", "replace") for line in lines)
        records = [r for r in (kmsg_record(text, self.boot_epoch) for text in texts) if r is not None]
        return kernel_events(records, self.gpu_of) if records else []

    def run(self, stop: threading.Event) -> None:
        try:
            self.open()
        except OSError as exc:
            self.status = f"unreadable: {exc.strerror or exc}"
            return
        fd = self.fd
        assert fd is not None
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], WAIT_S)
            if not ready:
                continue
            try:
                events = self.read_available()
            except OSError as exc:
                self.status = f"read failed: {exc.strerror or exc}"
                return
            for event in events:
                self.out.put(event)
            if self.eof:
                stop.wait(WAIT_S)  # no writer on a FIFO: do not spin


JOURNALCTL = ("journalctl", "-k", "-f", "-o", "json")  # -k: the kernel's records of this boot
FROM_NOW = ("-n", "0")  # the first start: from now on, as /dev/kmsg read from its end
RESTART_S = 10.0  # a journalctl that ended is started again after this long


class Journald:
    """The kernel log through journald, for hosts where /dev/kmsg cannot be opened (a container):
    `journalctl -k -f -o json` started by the Runner, its lines read as they come (bounded, without
    blocking), the same parsing and events as Kmsg. A journalctl that ends is said in the status
    and started again after restart_s from the cursor of the last entry read (--after-cursor), or
    from its first start where it read none (--since): nothing in between is lost. `runner`: anything with stream(argv)."""

    name = "journald"

    def __init__(self, out: queue.Queue, runner=None, argv: tuple[str, ...] = JOURNALCTL,
                 boot_epoch: float | None = None, gpu_of: Callable[[str], str] = lambda a: a,
                 restart_s: float = RESTART_S) -> None:
        self.out = out
        self.runner = runner
        self.argv = argv
        self.boot_epoch = time.time() - time.monotonic() if boot_epoch is None else boot_epoch
        self.gpu_of = gpu_of
        self.restart_s = restart_s
        self.status = "not started"
        self.cursor: str | None = None
        self.first_start: float | None = None  # epoch of the first start (a restart with no cursor yet reads from it)
        self.stream = None

    def start(self) -> None:
        if self.runner is None:
            from gpunode.host.runner import Runner

            self.runner = Runner()
        if self.cursor is not None:  # where the last one stopped
            since: tuple[str, ...] = (f"--after-cursor={self.cursor}",)
        elif self.first_start is None:
            self.first_start, since = time.time(), FROM_NOW
        else:  # it ended before any kernel record: what came in the gap is read (a repeat is de-duplicated)
            since = (f"--since=@{int(self.first_start)}",)
        self.stream = self.runner.stream([*self.argv, *since])
        self.status = "ok"

    def read_available(self) -> list[Event]:
        """Every complete entry journalctl wrote so far, without blocking."""
        records = []
        for line in self.stream.read_lines():
            parsed = journal_record(line, self.boot_epoch)
            if parsed is not None:
                records.append(parsed[0])
                self.cursor = parsed[1] or self.cursor
        return kernel_events(records, self.gpu_of, source="journald") if records else []

    def ended(self) -> str:
        """Stop the stream; -> why it ended, for the status."""
        code = self.stream.stop()
        said = self.stream.stderr()
        self.stream = None
        return f"journalctl ended (exit {code}){': ' + said if said else ''}; started again in {self.restart_s:g} s"

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.start()
                except OSError as exc:
                    self.status = f"journalctl cannot start: {exc.strerror or exc}"
                    stop.wait(self.restart_s)
                    continue
                self._follow(stop)
                if not stop.is_set():
                    self.status = self.ended()
                    stop.wait(self.restart_s)
        finally:
            if self.stream is not None:
                self.stream.stop()

    def _follow(self, stop: threading.Event) -> None:
        """Read until journalctl ends or the watcher stops."""
        while not stop.is_set():
            ready, _, _ = select.select([self.stream.fd], [], [], WAIT_S)
            if not ready:
                continue
            for event in self.read_available():
                self.out.put(event)
            if self.stream.eof:
                return


class KernelLog:
    """The kernel-log source: /dev/kmsg (Kmsg) where it opens, else journald (Journald), said in
    the status (`ok via journald (/dev/kmsg: Permission denied)`)."""

    name = "kmsg"

    def __init__(self, kmsg: Kmsg, journald: Journald) -> None:
        self.kmsg = kmsg
        self.journald = journald
        self.why: str | None = None  # why not /dev/kmsg

    @property
    def status(self) -> str:
        if self.why is None:
            return self.kmsg.status
        said = self.journald.status
        return f"ok via journald ({self.why})" if said == "ok" else f"{said} (journald; {self.why})"

    def run(self, stop: threading.Event) -> None:
        try:
            self.kmsg.open()
        except OSError as exc:
            self.why = f"{self.kmsg.path}: {exc.strerror or exc}"
            self.journald.run(stop)
            return
        self.kmsg.run(stop)


# --- NVML events ----------------------------------------------------------------------------

class NvmlEvents:
    """Waits on the NVML event set in its own thread; between waits, notes compute processes that
    appear (Event kind "foreign_process", code = pid). `watch`: an NvmlEventWatch or a fake with
    open/wait/processes/close/unavailable."""

    name = "nvml"

    def __init__(self, out: queue.Queue, watch=None, clock: Callable[[], float] = time.time,
                 processes_every_s: float = PROCESSES_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic, clock_events: bool = False) -> None:
        self.out = out
        self.watch = watch
        self.clock_events = clock_events  # the live watch waits on NVML's clock events too (costly)
        self.clock = clock
        self.processes_every_s = processes_every_s
        self.monotonic = monotonic
        self._processes_due = 0.0
        self.status = "not started"
        self.bus_ids: dict[str, str] = {}  # uuid -> 0000:18:00
        self.serials: dict[str, str] = {}  # uuid and PCI address -> board serial (filled at open)
        self.processes: dict[str, list] = {}
        self._seen: dict[str, set[int]] = {}

    def open(self) -> None:
        if self.watch is None:
            from gpunode.host.gpu.nvml import NvmlEventWatch

            self.watch = NvmlEventWatch(self.clock_events)
        watched = self.watch.open()
        missing = self.watch.unavailable()
        self.bus_ids = {u: pci_address(b) for u, b in getattr(self.watch, "bus_ids", {}).items()}
        for uuid, serial in getattr(self.watch, "serials", {}).items():  # the same dict object: shared, filled here
            self.serials[uuid] = serial
            if uuid in self.bus_ids:
                self.serials[self.bus_ids[uuid]] = serial
        self.status = "ok" if watched and not missing else (
            f"partial: {'; '.join(f'{k}: {v}' for k, v in missing.items())}" if watched else
            f"no GPU events: {'; '.join(f'{k}: {v}' for k, v in missing.items()) or 'no GPU'}")
        self.check_processes()  # what runs already did not appear: only noted

    def step(self, timeout_s: float = WAIT_S) -> list[Event]:
        timeout_s = min(timeout_s, max(self._processes_due - self.monotonic(), 0.0))  # wake for the next list
        now_events = [Event("nvml", e["kind"], self.clock(), e.get("gpu"), e.get("code"),
                            text=bounded(f"NVML event {e['kind']} data {e.get('code')}"))
                      for e in self.watch.wait(timeout_s)]
        # On a timer, not after each wait: under load clock events wake the wait many times a
        # second, and each process list is a driver call per GPU.
        if self.monotonic() < self._processes_due:
            return now_events
        return now_events + self.check_processes()

    def check_processes(self) -> list[Event]:
        self._processes_due = self.monotonic() + self.processes_every_s
        found = []
        current = self.watch.processes()
        for gpu, procs in current.items():
            pids = {pid for pid, _ in procs}
            for pid, name in procs:
                if pid not in self._seen.get(gpu, set()):
                    found.append(Event("nvml", "foreign_process", self.clock(), gpu, pid,
                                       text=bounded(f"compute process {pid} ({name or 'unknown'}) appeared")))
            self._seen[gpu] = pids
        self.processes = {gpu: [[pid, name] for pid, name in procs] for gpu, procs in current.items()}
        return found

    def run(self, stop: threading.Event) -> None:
        try:
            self.open()
        except Exception as exc:  # noqa: BLE001 - no driver: the other sources go on
            self.status = f"unavailable: {exc}"
            return
        try:
            while not stop.is_set():
                for event in self.step():
                    self.out.put(event)
        except Exception as exc:  # noqa: BLE001 - said in the state; the watcher goes on
            self.status = f"stopped: {exc!r}"
        finally:
            self.watch.close()


class ScriptedNvmlWatch:
    """A fake NvmlEventWatch: `script` is a list of wait() answers (lists of event dicts), then
    nothing; `procs` a list of processes() answers, the last one repeated. For tests and the
    benchmarks' dry mode."""

    def __init__(self, script=(), procs=({},), bus_ids=None, serials=None) -> None:
        self.script = list(script)
        self.procs = list(procs)
        self.bus_ids = bus_ids or {}
        self.serials = serials or {}
        self.closed = False

    def open(self) -> dict:
        return {uuid: ["xid"] for uuid in self.bus_ids} or {"GPU-fake": ["xid"]}

    def unavailable(self) -> dict:
        return {}

    def wait(self, timeout_s: float) -> list[dict]:
        return self.script.pop(0) if self.script else []

    def processes(self) -> dict:
        return self.procs.pop(0) if len(self.procs) > 1 else self.procs[0]

    def close(self) -> None:
        self.closed = True


# --- the gate's checks, polled --------------------------------------------------------------

# Checks of cost "slow" (the Xid check parses the whole kernel log of the boot) run once a minute,
# their last results standing in between: the kernel-log source sees a new Xid at once meanwhile.
SLOW_EVERY_S = 60.0


class Poll:
    """Runs the gate's checks (tag `gate`) through the audit engine. `run_checks_now`: a stand-in
    for tests -> list of Result. `read_at`: check id -> when its result was read."""

    name = "poll"

    def __init__(self, config, profile=None, checks=None, run_checks_now=None, check_timeout: float = 5.0,
                 state_dir=None, slow_every_s: float = SLOW_EVERY_S, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.profile = profile
        self.checks = checks or []
        self.check_timeout = check_timeout
        self.state_dir = state_dir
        self.slow_every_s = slow_every_s
        self.clock = clock
        self.counters: CounterStore | None = None
        self.run_checks_now = run_checks_now or self._run
        self.status = "ok"
        self.read_at: dict[str, float] = {}
        self.fresh: set[str] | None = None  # the check ids this poll read (None: all)
        self._kept: dict[str, list] = {}  # slow check id -> its last results
        self._slow_at: float | None = None

    def _run(self) -> list:
        from gpunode.audit.context import AuditContext
        from gpunode.audit.counters import CounterStore
        from gpunode.audit.engine import run_checks
        from gpunode.host.gpu.source import GATE_UNREAD
        from gpunode.host.seam import live_host

        host = live_host(GATE_UNREAD)  # a fresh NVML read and kernel log each poll; only what the gate judges
        if self.counters is None:  # deltas since the last audit's readings, then since each poll
            counters = CounterStore.load(self.state_dir, host)
        else:
            previous = {**self.counters.previous, **self.counters.current}
            counters = CounterStore(None, host.facts.hostname, self.counters.boot_id, previous)
        counters.path = None  # never saved: the audits own counters.json
        self.counters = counters
        ctx = AuditContext(host=host, profile=self.profile, config=self.config, counters=counters)
        now = self.clock()
        slow_due = self._slow_at is None or now - self._slow_at >= self.slow_every_s
        chosen = [c for c in self.checks if slow_due or c.cost != "slow"]
        read = run_checks(chosen, ctx, check_timeout=self.check_timeout, total_timeout=self.check_timeout * 4)
        by_id: dict[str, list] = {}
        for r in read:
            by_id.setdefault(r.id, []).append(r)
        self.fresh = {c.id for c in chosen}
        for check_id in self.fresh:
            self.read_at[check_id] = now
        if slow_due:
            self._slow_at = now
            self._kept = {c.id: by_id.get(c.id, []) for c in self.checks if c.cost == "slow"}
        return [r for c in self.checks for r in (by_id.get(c.id, []) if c.id in self.fresh else self._kept.get(c.id, []))]

    def events(self, results, now: float) -> list[Event]:
        """The results this poll read (a slow check's kept result is not a new reading)."""
        return [Event("poll", "check", now, r.subject, check_id=r.id, status=r.status.value,
                      text=bounded(r.message)) for r in results if self.fresh is None or r.id in self.fresh]
