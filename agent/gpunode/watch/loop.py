"""The resident loop: take events from the sources' queue, de-duplicate them, ask the policy what
to do, hand each action to the actor, keep the state document and the metrics current, and tell
systemd we are alive.

Everything that waits or reads the clock is injected (clock, the stop event, the queue), so
tests drive `handle()` and `tick()` directly, without sleeping.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable

from gpunode.watch.events import Action, Event, PolicyState
from gpunode.watch.policy import decide as policy_decide
from gpunode.watch.sources import blocking
from gpunode.watch.state import (
    MAX_EVENTS,
    SCHEMA,
    blocking_events_since,
    pid_start,
    read_boot_id,
    write_state,
)

# Clock and power-source events come by the second under load, corrected (single-bit) ECC errors
# in storms: informational (the gate's throttle and ECC checks judge them at each poll), they must
# not push Xids out of the kept events or wake the policy.
NOISY = ("clock", "power", "ecc_sbe")
DEDUP_KEEP_S = 120.0  # a key older than this cannot come again from a source that lags less
LOOP_WAIT_S = 1.0  # the loop wakes at least this often (systemd's watchdog ping)
WATCHDOG_GRACE_S = 60.0


# --- sd_notify, by hand: one datagram to $NOTIFY_SOCKET (no dependency) ---------------------

def sd_notify(message: str, environ=os.environ) -> bool:
    """Send `READY=1`, `WATCHDOG=1`, `STATUS=...` to systemd; False when not run by systemd.
    An address starting with @ is in the abstract namespace."""
    address = environ.get("NOTIFY_SOCKET")
    if not address or address[0] not in "/@":
        return False
    if address[0] == "@":
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True


def watchdog_interval(environ=os.environ) -> float | None:
    """Half of WatchdogSec (systemd passes WATCHDOG_USEC, and WATCHDOG_PID when it is for us)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6



class Watcher:
    """One watcher. `sources`: objects with name/status/run(stop); `poll`: watch.sources.Poll;
    `actor(action)`: takes each Action (the CLI builds it; tests record them)."""

    def __init__(self, state_dir: str, poll, poll_s: float = 10.0, sources=(), config=None,
                 decide: Callable | None = None, actor: Callable[[Action], object] | None = None,
                 clock: Callable[[], float] = time.time, stop: threading.Event | None = None,
                 events: queue.Queue | None = None, notify: Callable[[str], bool] = sd_notify,
                 textfile: str | None = None, host: str | None = None, boot_id: str | None = None,
                 pid: int | None = None, log: Callable[[str], None] | None = None,
                 policy_state: PolicyState | None = None) -> None:
        self.state_dir = state_dir
        self.poll = poll
        self.poll_s = poll_s
        self.sources = list(sources)
        self.config = config
        self.decide = decide or policy_decide
        self.actor = actor or (lambda action: None)
        self.clock = clock
        self.stop = stop or threading.Event()
        self.queue = events or queue.Queue()
        self.notify = notify
        self.textfile = textfile
        self.host = host or os.uname().nodename
        self.boot_id = boot_id if boot_id is not None else read_boot_id()
        self.pid = pid or os.getpid()
        self.pid_start = pid_start(self.pid)
        self.log = log or (lambda line: None)
        self.policy = policy_state or PolicyState()  # the actor persists the same object (watch.memory)
        self.seen: dict[tuple, tuple[float, dict]] = {}  # key -> (when first seen, {source: {exact times}})
        self.events: list[dict] = []
        self.checks: list[dict] = []
        self.gpus: dict[str, dict] = {}
        self.last_poll: dict = {"time": 0.0, "started": 0.0, "duration_s": 0.0, "status": "UNKNOWN"}
        self.actions: list[dict] = []
        self.next_poll = 0.0
        self.problems: list[str] = []
        self.counts: dict[str, int] = {}  # events by kind (metrics)
        self.noisy: dict[str, dict] = {}  # kind -> GPU -> the latest clock/power event
        self.dirty = False  # an event the state does not show yet
        self.action_counts: dict[str, int] = {}

    # -- events --------------------------------------------------------------------------

    def handle(self, event: Event, now: float | None = None) -> list[Action]:
        """De-duplicate, remember, ask the policy, act. -> the actions taken (or shadowed)."""
        now = self.clock() if now is None else now
        if self.duplicate(event, now):
            return []
        if event.kind in NOISY:  # counted and the latest kept; no policy, log line or state write each
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
            self.noisy.setdefault(event.kind, {})[event.gpu or "node"] = {"time": event.time, "code": event.code}
            return []
        if event.kind != "check":
            self.dirty = True
            self.counts[event.kind] = self.counts.get(event.kind, 0) + 1
            self.events.append({"time": event.time, "seen": now, "source": event.source, "kind": event.kind,
                                "gpu": event.gpu, "code": event.code, "text": event.text,
                                "blocking": blocking(event)})
            del self.events[:-MAX_EVENTS]
            self.log(f"event {event.source}/{event.kind} gpu={event.gpu} code={event.code}: {event.text}")
        try:
            actions = list(self.decide(self.policy, event, self.config, now))
        except Exception as exc:  # noqa: BLE001 - a policy bug must not stop the watching
            self.problems.append(f"policy failed on {event.kind}: {exc!r}")
            return []
        for action in actions:
            self.act(action, now)
        return actions

    def duplicate(self, event: Event, now: float) -> bool:
        """Whether `event` was handled already: the same (GPU, event, second) from another source
        (one fault that NVML and the kernel log both report), or the same record again. A repeat
        from the same source at another instant is a new event: two identical Xid lines within
        one second are two faults (an Xid storm, an injection benchmark), not one. So a source's
        n-th report of a key is new only when no other source has reported it n times."""
        key = event.key()
        known = self.seen.get(key)
        if known is None:
            self.seen[key] = (now, {event.source: {event.time}})
            return False
        mine = known[1].setdefault(event.source, set())
        if event.time in mine:
            return True
        mine.add(event.time)
        return len(mine) <= max((len(t) for s, t in known[1].items() if s != event.source), default=0)

    def act(self, action: Action, now: float) -> None:
        verb = f"would-{action.kind}" if action.shadow else action.kind
        self.actions.append({"time": now, "action": verb, "reason": action.reason, "gpu": action.gpu})
        self.action_counts[verb] = self.action_counts.get(verb, 0) + 1
        del self.actions[:-MAX_EVENTS]
        if action.kind not in ("record", "none"):
            self.log(f"{verb}: {action.reason}")
        try:
            self.actor(action)
        except Exception as exc:  # noqa: BLE001 - said in the state; the watching goes on
            self.problems.append(f"{verb} failed: {exc!r}")
            del self.problems[:-20]

    def drain_queue(self, timeout: float) -> int:
        """Handle what the sources queued (events, finished polls); wait at most `timeout` for
        the first. -> how many were handled."""
        handled = 0
        try:
            item = self.queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return 0
        while True:
            if isinstance(item, PollDone):
                self.take_poll(item)
            else:
                self.handle(item)
            handled += 1
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                return handled

    # -- polls ---------------------------------------------------------------------------

    def run_poll(self) -> PollDone:
        started = self.clock()
        try:
            results, problem = self.poll.run_checks_now(), None
        except Exception as exc:  # noqa: BLE001 - one failed poll is UNKNOWN, not a crash
            results, problem = [], f"poll failed: {exc!r}"
        return PollDone(results, started, self.clock(), problem)

    def poll_now(self, now: float) -> None:
        """Poll in this thread (tests, and the first poll before READY=1)."""
        self.take_poll(self.run_poll())

    def take_poll(self, done: PollDone) -> None:
        results, read_at = done.results, done.read_at
        if done.problem:
            self.problems.append(done.problem)
            del self.problems[:-20]
        for event in self.poll.events(results, read_at):
            self.handle(event, read_at)
        from gpunode.audit.engine import overall

        when = getattr(self.poll, "read_at", {})  # a slow check's kept result says when it was read
        self.checks = [one_line({**r.to_json(), "read_at": when.get(r.id, read_at)}) for r in results]
        self.gpus = self._gpu_verdicts(results, read_at)
        self.last_poll = {"time": read_at, "started": done.started, "duration_s": round(read_at - done.started, 3),
                          "status": overall(results)}
        self.write(read_at)

    def _gpu_verdicts(self, results, read_at: float) -> dict:
        order = ("PASS", "SKIP", "WARN", "ERROR", "FAIL")
        gpus: dict[str, dict] = {}
        for r in results:
            if r.subject and r.subject.startswith("GPU"):
                entry = gpus.setdefault(r.subject, {"status": "PASS", "read_at": read_at})
                if order.index(r.status.value) > order.index(entry["status"]):
                    entry["status"] = r.status.value
        nvml = next((s for s in self.sources if s.name == "nvml"), None)
        for gpu, procs in (getattr(nvml, "processes", None) or {}).items():
            gpus.setdefault(gpu, {"status": None, "read_at": read_at})["processes"] = procs
        return gpus

    # -- state ---------------------------------------------------------------------------

    def verdict(self, now: float) -> str:
        """The one word the prolog hook trusts: a blocking event since the last poll is FAIL."""
        if blocking_events_since({"events": self.events}, self.last_poll):
            return "FAIL"
        return self.last_poll["status"]

    def document(self, now: float) -> dict:
        return {
            "schema": SCHEMA, "host": self.host, "boot_id": self.boot_id, "pid": self.pid,
            "pid_start": self.pid_start, "poll_s": self.poll_s, "time": now, "poll": self.last_poll,
            "verdict": self.verdict(now), "checks": self.checks, "gpus": self.gpus, "events": self.events,
            "actions": self.actions, "problems": self.problems, "counts": self.counts,
            "action_counts": self.action_counts, "latest": self.noisy,
            "sources": {s.name: s.status for s in self.sources},
        }

    def write(self, now: float) -> None:
        self.dirty = False
        try:
            write_state(self.state_dir, self.document(now), self.verdict(now), now)
        except (OSError, ValueError) as exc:
            message = f"cannot write the state in {self.state_dir}: {getattr(exc, 'strerror', None) or exc}"
            if message not in self.problems:
                self.problems.append(message)
                self.log(message)
        if self.textfile:
            self.write_metrics(now)

    def write_metrics(self, now: float) -> None:
        from gpunode.prometheus import watch_families, write_textfile

        try:
            write_textfile(self.textfile, watch_families(self.document(now)))
        except OSError as exc:
            message = f"cannot write {self.textfile}: {exc.strerror or exc}"
            if message not in self.problems:
                self.problems.append(message)

    # -- the loop ------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Synchronous clockwork (tests): poll when due, forget old dedup keys, ping systemd."""
        if now >= self.next_poll:
            self.next_poll = now + self.poll_s
            self.poll_now(now)
        self.housekeeping(now)

    def housekeeping(self, now: float) -> None:
        self.seen = {k: v for k, v in self.seen.items() if now - v[0] <= DEDUP_KEEP_S}
        # A hung poll (a wedged driver) stops the pings: systemd's watchdog restarts us.
        if now - self.last_poll["time"] <= max(3 * self.poll_s, WATCHDOG_GRACE_S):
            self.notify("WATCHDOG=1")

    def poll_thread(self) -> None:
        last = self.clock()  # run() polled once already
        while not self.stop.wait(max(self.poll_s - (self.clock() - last), 0.0)):
            last = self.clock()
            self.queue.put(self.run_poll())

    def start_sources(self) -> list[threading.Thread]:
        threads = [threading.Thread(target=s.run, args=(self.stop,), name=f"watch-{s.name}", daemon=True)
                   for s in self.sources]
        threads.append(threading.Thread(target=self.poll_thread, name="watch-poll", daemon=True))
        for t in threads:
            t.start()
        return threads

    def run(self) -> None:
        """Until the stop event: sources and polls in their threads, events handled here."""
        threads = self.start_sources()
        self.poll_now(self.clock())  # the state exists before systemd hears READY
        self.notify("READY=1")
        wait = min(LOOP_WAIT_S, watchdog_interval() or LOOP_WAIT_S)  # ping at least twice per WatchdogSec
        try:
            while not self.stop.is_set():
                self.drain_queue(wait)
                if self.dirty:
                    self.write(self.clock())  # an event reaches the state (and the gate) at once
                self.housekeeping(self.clock())
        finally:
            self.notify("STOPPING=1")
            self.stop.set()
            for t in threads:
                t.join(timeout=2.0)


def one_line(check: dict) -> dict:
    """A result as the state keeps it: its words on one printable line (the gate refuses others)."""
    for key in ("title", "message", "subject", "remediation"):
        if isinstance(check.get(key), str):
            check[key] = "".join(c if c.isprintable() else " " for c in " ".join(check[key].split()))
    return check


class PollDone:
    """A finished poll, handed from the poll thread to the loop."""

    __slots__ = ("results", "started", "read_at", "problem")

    def __init__(self, results: list, started: float, read_at: float, problem: str | None = None) -> None:
        self.results, self.started, self.read_at, self.problem = results, started, read_at, problem
