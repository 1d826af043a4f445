"""The watcher core (gpunode.watch): sources with fakes (a pipe for /dev/kmsg, a scripted NVML
event set), de-duplication, the state document and verdict line, sd_notify over a real unix
datagram socket, and the loop driven without sleeping."""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import threading
from pathlib import Path

import pytest

from gpunode.audit.engine import Result, Status
from gpunode.watch.events import Action, Event
from gpunode.watch.loop import PollDone, Watcher, sd_notify, watchdog_interval
from gpunode.watch.sources import Kmsg, NvmlEvents, ScriptedNvmlWatch, blocking, kernel_events, kmsg_record
from gpunode.watch.state import (
    SCHEMA,
    STATE_FILE,
    VERDICT_FILE,
    StateRefused,
    pid_start,
    read_fresh,
    verdict_line,
)

FIXTURES = Path(__file__).parent / "fixtures" / "kmsg"
BOOT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def kmsg_lines(name: str) -> list[str]:
    return (FIXTURES / name).read_text().splitlines()


# --- the kernel log -------------------------------------------------------------------------

def test_a_recorded_boot_log_has_no_events_and_continuations_are_dropped():
    lines = kmsg_lines("vm-boot.txt")
    records = [kmsg_record(line, 1000.0) for line in lines]
    assert any(line.startswith(" ") for line in lines)  # the recording has continuation lines
    assert all(r is None for r, line in zip(records, lines, strict=True) if line.startswith(" "))
    first = next(r for r in records if r is not None)
    assert first.time == 1000.0 and first.text.startswith("Linux version")
    assert kernel_events([r for r in records if r is not None]) == []
    tabbed = next(r for r in records if r is not None and r.text.endswith("Tasks RCU enabled."))
    assert "\\x09" not in tabbed.text  # kmsg's escapes are undone


def test_faults_in_kmsg_records_become_events():
    records = [r for r in (kmsg_record(line, 1000.0) for line in kmsg_lines("hgx-faults.txt")) if r]
    events = kernel_events(records, gpu_of={"0000:2a:00": "GPU-2a"}.get)
    got = sorted((e.kind, e.code, e.gpu) for e in events)
    assert ("xid", 79, "GPU-2a") in got
    assert ("xid", 13, None) in got and ("xid", 48, None) in got  # gpu_of knows no other address
    assert ("fallen_off_bus", 79, None) in got  # the \x0a-escaped three-line notice, no Xid line
    assert ("sxid", 12028, None) in got
    assert ("aer", 2, None) in got and ("aer", 0, None) in got
    assert [k for k, _, _ in got].count("mlx5") == 2
    assert not any(e.code == 79 and e.kind == "fallen_off_bus" and e.gpu == "GPU-2a" for e in events)  # one fault, once
    xid79 = next(e for e in events if e.kind == "xid" and e.code == 79)
    assert xid79.time == pytest.approx(1000.0 + 412.016)
    assert all(len(e.text) <= 500 and "\n" not in e.text for e in events)


def test_blocking_events_are_the_ones_that_must_fail_the_gate():
    def ev(kind, code=None):
        return Event("kmsg", kind, 1.0, None, code)

    assert blocking(ev("xid", 79)) and blocking(ev("xid", 48)) and blocking(ev("ecc_dbe"))
    assert blocking(ev("aer", 2)) and blocking(ev("recovery_action", 1))
    assert not blocking(ev("xid", 13)) and not blocking(ev("xid", 31))  # the application's fault
    assert not blocking(ev("aer", 0)) and not blocking(ev("clock")) and not blocking(ev("ecc_sbe"))
    assert not blocking(ev("recovery_action", 0)) and not blocking(ev("mlx5"))


def test_kmsg_reads_a_pipe_without_blocking_and_keeps_a_partial_line():
    r, w = os.pipe()
    out: queue.Queue = queue.Queue()
    source = Kmsg(out, fd=r, boot_epoch=0.0)
    source.open()
    try:
        assert source.read_available() == []  # nothing written: returns at once
        line = "4,9,5000000,-;NVRM: Xid (PCI:0000:18:00): 79, pid=1, name=x, GPU has fallen off the bus.\n"
        os.write(w, line[:30].encode())
        assert source.read_available() == []  # half a record waits for its end
        os.write(w, line[30:].encode())
        (event,) = source.read_available()
        assert (event.kind, event.code, event.gpu, event.time) == ("xid", 79, "0000:18:00", 5.0)
    finally:
        os.close(w)
        os.close(r)


def test_kmsg_thread_puts_events_on_the_queue_and_stops():
    r, w = os.pipe()
    out: queue.Queue = queue.Queue()
    stop = threading.Event()
    source = Kmsg(out, fd=r, boot_epoch=0.0)
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    try:
        os.write(w, b"4,1,1,-;NVRM: Xid (PCI:0000:18:00): 95, Uncontained ECC error\n")
        event = out.get(timeout=10)
        assert (event.kind, event.code) == ("xid", 95)
    finally:
        stop.set()
        thread.join(timeout=10)
        os.close(w)
        os.close(r)
    assert not thread.is_alive()


def test_an_unreadable_kmsg_is_said_not_raised(tmp_path):
    source = Kmsg(queue.Queue(), path=str(tmp_path / "missing"))
    source.run(threading.Event())
    assert source.status.startswith("unreadable")


# --- NVML events (fake) ---------------------------------------------------------------------

def test_nvml_events_and_a_process_that_appears():
    fake = ScriptedNvmlWatch(
        script=[[{"gpu": "GPU-a", "kind": "xid", "code": 79}], [{"gpu": "GPU-a", "kind": "ecc_dbe", "code": 1}]],
        procs=[{"GPU-a": [(10, "slurmstepd")]}, {"GPU-a": [(10, "slurmstepd")]},
               {"GPU-a": [(10, "slurmstepd"), (4242, "miner")]}],
        bus_ids={"GPU-a": "00000000:18:00.0"})
    now = [0.0]
    source = NvmlEvents(queue.Queue(), fake, clock=lambda: 50.0, monotonic=lambda: now[0])
    source.open()  # the first list
    assert source.bus_ids == {"GPU-a": "0000:18:00"} and source.status == "ok"
    now[0] = 1.0
    first = source.step(0)
    assert [(e.kind, e.code, e.gpu, e.time) for e in first] == [("xid", 79, "GPU-a", 50.0)]
    now[0] = 2.0
    second = source.step(0)
    assert [(e.kind, e.code) for e in second] == [("ecc_dbe", 1), ("foreign_process", 4242)]
    assert source.processes == {"GPU-a": [[10, "slurmstepd"], [4242, "miner"]]}


def test_processes_are_listed_on_a_timer_not_after_every_event():
    """Under load clock events wake the wait many times a second: the process list (a driver call
    per GPU) is read once per processes_every_s however often events come."""
    now = [0.0]
    calls = []

    class Counting(ScriptedNvmlWatch):
        def processes(self):
            calls.append(now[0])
            return {"GPU-a": [(10, "job")]}

    fake = Counting(script=[[{"gpu": "GPU-a", "kind": "clock", "code": 1}]] * 30)
    source = NvmlEvents(queue.Queue(), fake, monotonic=lambda: now[0], processes_every_s=1.0)
    source.open()
    for i in range(30):  # 30 events within 3 s
        now[0] = (i + 1) / 10
        source.step(0)
    assert len(calls) == 1 + 3  # at open, then once a second
    assert len([e for e in source.step(0) if e.kind == "clock"]) == 0  # the script is used up


def test_the_nvml_wait_ends_when_the_next_process_list_is_due():
    """A wait never outlasts the process timer: a process is listed within processes_every_s
    (not that plus a whole wait), and a wait never asks NVML for a negative time."""
    now = [0.0]
    waits = []

    class Recording(ScriptedNvmlWatch):
        def wait(self, timeout_s):
            waits.append(timeout_s)
            return []

    source = NvmlEvents(queue.Queue(), Recording(), monotonic=lambda: now[0], processes_every_s=1.0)
    source.open()  # listed at 0.0: the next list is due at 1.0
    now[0] = 0.8
    source.step(0.5)
    now[0] = 1.3  # late (a slow driver call): due already
    source.step(0.5)
    assert waits == [pytest.approx(0.2), 0.0]


def test_nvml_without_a_driver_is_a_status_not_a_crash():
    class Broken(ScriptedNvmlWatch):
        def open(self):
            raise RuntimeError("NVML Shared Library Not Found")

    source = NvmlEvents(queue.Queue(), Broken())
    source.run(threading.Event())
    assert source.status.startswith("unavailable")


# --- the loop, the state and the verdict ----------------------------------------------------

def result(check_id: str, status: Status, subject: str | None = None, message: str = "m") -> Result:
    return Result(check_id, "title", "gpu", "critical", status, message, subject=subject, tags=["gate"])


class FakePoll:
    fresh = None  # every result is a new reading

    def __init__(self, *answers):
        self.answers = list(answers)

    def run_checks_now(self):
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]

    def events(self, results, now):
        from gpunode.watch.sources import Poll

        return Poll.events(self, results, now)


class Clock:
    def __init__(self, t: float = 1000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def make_watcher(tmp_path, poll=None, decide=None, **kwargs) -> tuple[Watcher, list, Clock]:
    taken: list[Action] = []
    clock = Clock()
    w = Watcher(str(tmp_path / "run"), poll or FakePoll([result("gpu.ecc", Status.PASS, "GPU0")]), 10.0,
                decide=decide, actor=taken.append, clock=clock, notify=lambda m: True, boot_id=BOOT,
                host="n1", **kwargs)
    return w, taken, clock


def test_duplicates_from_two_sources_are_handled_once(tmp_path):
    w, taken, clock = make_watcher(tmp_path)
    nvml = Event("nvml", "xid", 1000.2, "GPU-a", 79)
    kmsg = Event("kmsg", "xid", 1000.7, "GPU-a", 79, text="the kernel's line")
    assert w.handle(nvml) and not w.handle(kmsg)
    assert len(w.events) == 1 and len(taken) == 1
    assert w.handle(Event("kmsg", "xid", 1001.1, "GPU-a", 79))  # another second: another event
    assert w.handle(Event("kmsg", "xid", 1000.2, "GPU-b", 79))  # another GPU
    clock.t += 500
    w.housekeeping(clock.t)
    assert w.seen == {}  # old keys are forgotten: the dedup set stays small


def test_two_faults_in_one_second_each_reported_by_both_sources_are_two_events(tmp_path):
    """NVML sees two Xids of one GPU within a second, then the kernel log reports the same two:
    two faults, handled twice, not three times; a third line from the kernel is a third fault."""
    w, taken, _ = make_watcher(tmp_path)
    seen = [bool(w.handle(Event(source, "xid", when, "GPU-a", 79)))
            for source, when in (("nvml", 1000.1), ("nvml", 1000.5), ("kmsg", 1000.12), ("kmsg", 1000.52),
                                 ("kmsg", 1000.52), ("kmsg", 1000.9))]
    assert seen == [True, True, False, False, False, True]  # the kernel's third line is a third fault
    assert len(w.events) == 3 and len(taken) == 3


def test_clock_events_are_counted_not_kept_nor_decided(tmp_path):
    """Under load NVML reports clock changes every second: they must not push an Xid out of the
    kept events, wake the policy (an audit-trail line each) or rewrite the state each time."""
    asked: list[Event] = []
    w, taken, _ = make_watcher(tmp_path, decide=lambda s, e, c, n: asked.append(e) or [])
    w.handle(Event("kmsg", "xid", 999.0, "GPU-a", 79))
    w.dirty = False
    for second in range(500):
        w.handle(Event("nvml", "clock", 1000.0 + second, "GPU-a", 8))
    assert [e["kind"] for e in w.events] == ["xid"] and [e.kind for e in asked] == ["xid"]
    assert w.counts["clock"] == 500 and w.noisy["clock"]["GPU-a"]["time"] == 1499.0
    assert not w.dirty  # the next poll writes them
    w.handle(Event("nvml", "ecc_dbe", 1500.0, "GPU-a", 1))
    assert w.dirty


def test_the_policy_decides_and_shadow_actions_are_logged_as_would(tmp_path):
    def decide(state, event, config, now):
        return [Action("drain", "gpunode: xid 79", event.gpu, event, shadow=True)]

    w, taken, _ = make_watcher(tmp_path, decide=decide)
    w.handle(Event("kmsg", "xid", 1000.0, "GPU-a", 79))
    assert taken[0].kind == "drain" and w.actions[-1]["action"] == "would-drain"
    assert w.action_counts == {"would-drain": 1}


def test_a_policy_or_actor_that_raises_does_not_stop_the_watcher(tmp_path):
    def decide(state, event, config, now):
        raise KeyError("bug")

    w, _, _ = make_watcher(tmp_path, decide=decide)
    assert w.handle(Event("kmsg", "xid", 1000.0, "GPU-a", 79)) == []
    assert "policy failed" in w.problems[-1]


def test_the_state_document_and_the_verdict_line(tmp_path):
    poll = FakePoll([result("gpu.ecc", Status.PASS, "GPU0"), result("gpu.count", Status.PASS)])
    w, _, clock = make_watcher(tmp_path, poll=poll)
    w.tick(clock.t)
    run = tmp_path / "run"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755
    doc = json.loads((run / STATE_FILE).read_text())
    assert stat.S_IMODE((run / STATE_FILE).stat().st_mode) == 0o644
    assert doc["schema"] == SCHEMA and doc["boot_id"] == BOOT and doc["pid"] == os.getpid()
    assert doc["pid_start"] == pid_start(os.getpid()) and doc["poll_s"] == 10.0
    assert doc["poll"]["time"] == 1000.0 and doc["verdict"] == "OK"
    assert [(c["id"], c["status"], c["read_at"]) for c in doc["checks"]] == [("gpu.ecc", "PASS", 1000.0),
                                                                             ("gpu.count", "PASS", 1000.0)]
    assert doc["gpus"]["GPU0"]["status"] == "PASS"
    assert stat.S_IMODE((run / VERDICT_FILE).stat().st_mode) == 0o644
    assert sorted(p.name for p in run.iterdir()) == [STATE_FILE, VERDICT_FILE]  # atomic: no temp file left
    status, when, boot, pid, _up = (run / VERDICT_FILE).read_text().split()
    assert (status, when, boot, pid) == ("OK", "1000", BOOT, str(os.getpid()))
    # A blocking event turns the verdict to FAIL at once, before the next poll.
    clock.t = 1003.0
    w.handle(Event("kmsg", "xid", 1003.0, "GPU0", 79))
    w.write(clock.t)
    assert (run / VERDICT_FILE).read_text().startswith("FAIL 1003 ")
    assert json.loads((run / STATE_FILE).read_text())["events"][0]["blocking"] is True


def test_an_existing_state_dir_is_never_chmodded(tmp_path):
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    os.chmod(run, 0o700)
    w, _, clock = make_watcher(tmp_path)
    w.tick(clock.t)
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert (run / STATE_FILE).exists()


def test_a_state_it_cannot_write_is_a_problem_not_a_crash(tmp_path):
    (tmp_path / "run").write_text("a file where the directory should be")
    w, _, clock = make_watcher(tmp_path)
    w.tick(clock.t)
    assert any("cannot write the state" in p for p in w.problems)


def test_a_failed_poll_is_unknown(tmp_path):
    class Broken(FakePoll):
        def run_checks_now(self):
            raise OSError("boom")

    w, _, clock = make_watcher(tmp_path, poll=Broken([]))
    w.tick(clock.t)
    assert w.last_poll["status"] == "UNKNOWN" and "poll failed" in w.problems[-1]


def test_the_loop_runs_and_stops_without_sleeping(tmp_path):
    """run(): a poll first, READY=1, queued events handled and written at once, STOPPING=1."""
    said: list[str] = []
    stop = threading.Event()
    events: queue.Queue = queue.Queue()

    class StopAfter:
        name, status = "fake", "ok"

        def run(self, stop_event):
            events.put(Event("kmsg", "xid", 1000.0, "GPU0", 79))
            events.put(PollDone([result("gpu.ecc", Status.FAIL, "GPU0")], 1000.0, 1000.0))
            stop_event.wait(10)

    w, taken, clock = make_watcher(tmp_path, sources=[StopAfter()], stop=stop, events=events)
    w.notify = lambda m: said.append(m) or True
    original = w.drain_queue

    def drain_then_stop(timeout):
        n = original(10)
        if len(w.events) and w.last_poll["status"] == "FAIL":
            stop.set()
        return n

    w.drain_queue = drain_then_stop
    w.run()
    assert said[0] == "READY=1" and said[-1] == "STOPPING=1"
    assert w.events[0]["kind"] == "xid" and w.last_poll["status"] == "FAIL"
    assert json.loads((tmp_path / "run" / STATE_FILE).read_text())["verdict"] == "FAIL"


def test_an_event_reaches_the_state_before_the_next_poll(tmp_path):
    """The gate FAILs at once only if the event is in health.json at once, not at the next poll."""
    stop = threading.Event()
    events: queue.Queue = queue.Queue()

    class OneXid:
        name, status = "kmsg", "ok"

        def run(self, stop_event):
            events.put(Event("kmsg", "xid", 1000.0, "GPU0", 79))
            stop_event.wait(10)

    w, _, _ = make_watcher(tmp_path, sources=[OneXid()], stop=stop, events=events)
    original = w.drain_queue

    def drain_then_stop(timeout):
        n = original(10)
        if w.events:
            stop.set()
        return n

    w.drain_queue = drain_then_stop
    w.run()
    doc = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert [e["kind"] for e in doc["events"]] == ["xid"] and doc["verdict"] == "FAIL"


def test_a_hung_poll_stops_the_watchdog_pings(tmp_path):
    said: list[str] = []
    w, _, clock = make_watcher(tmp_path)
    w.notify = lambda m: said.append(m) or True
    w.tick(clock.t)
    assert said == ["WATCHDOG=1"]
    clock.t += 61  # no poll came back for a minute (3 x 10 s and the grace)
    w.housekeeping(clock.t)
    assert said == ["WATCHDOG=1"]


# --- sd_notify --------------------------------------------------------------------------------

def test_sd_notify_sends_a_datagram_to_the_notify_socket(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(10)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": path})
        assert server.recv(64) == b"READY=1"
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": path})
        assert server.recv(64) == b"WATCHDOG=1"
    assert not sd_notify("READY=1", {})  # not under systemd
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": "relative"})
    assert not sd_notify("READY=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})


def test_sd_notify_abstract_socket():
    name = f"gpunode-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(10)
        assert sd_notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert server.recv(64) == b"READY=1"


def test_watchdog_interval_is_half_of_watchdog_sec():
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None  # not for us
    assert watchdog_interval({}) is None


def test_verdict_line_refuses_a_word_it_does_not_know():
    assert verdict_line("OK", 12.7, BOOT, 5, 99) == f"OK 12 {BOOT} 5 99\n"
    with pytest.raises(ValueError):
        verdict_line("OK; rm -rf /", 1, BOOT, 5, 1)


def test_read_fresh_is_refused_for_a_missing_state(tmp_path):
    with pytest.raises(StateRefused):
        read_fresh(str(tmp_path), 1000.0, BOOT)


def test_polls_judge_counters_as_deltas_since_the_previous_poll(tmp_path, monkeypatch):
    """The gate checks run through the audit engine on each poll's fresh host; every poll's error
    counter readings are the next poll's 'previous' (deltas), and counters.json stays the audits'."""
    from gpunode.audit.run import choose, load_audit_profile
    from gpunode.config import Config
    from gpunode.host import seam
    from gpunode.watch.sources import Poll
    from testkit import HOSTS

    left_out = []
    monkeypatch.setattr(seam, "live_host",
                        lambda unread: left_out.append(unread) or seam.snapshot_host(HOSTS / "h100-sxm-1gpu"))
    cfg = Config()
    profile = load_audit_profile(cfg.profile, cfg)
    # The gate's checks here read no counter; the PCIe replay check (a site may tag it `gate`) does.
    checks = choose(profile, tags=["gate"]).checks + choose(profile, only=["gpu.pcie.replay"]).checks
    poll = Poll(cfg, profile, checks, state_dir=tmp_path)
    first = poll.run_checks_now()
    assert {r.id for r in first} >= {"gpu.nvml", "gpu.ecc.uncorrectable", "pcie.replay"}
    readings = dict(poll.counters.current)
    assert readings and poll.counters.path is None
    poll.run_checks_now()
    assert set(readings) <= set(poll.counters.previous)  # the first poll's readings judge the second
    assert not (tmp_path / "counters.json").exists()
    # each poll reads from NVML only what the gate judges, as the gate does (the full read costs
    # the resident watcher CPU at every poll for fields no gate check looks at)
    from gpunode.host.gpu.source import GATE_UNREAD

    assert left_out == [GATE_UNREAD, GATE_UNREAD]


def test_slow_checks_run_once_a_minute_and_their_results_stand_between(tmp_path, monkeypatch):
    """gpu.xid (cost slow: the whole kernel log) runs on the first poll and then once a minute;
    between, its last result stands with its own read time and is not handed on as a new reading."""
    from gpunode.audit.run import choose, load_audit_profile
    from gpunode.config import Config
    from gpunode.host import seam
    from gpunode.watch.sources import Poll
    from testkit import HOSTS

    monkeypatch.setattr(seam, "live_host", lambda unread: seam.snapshot_host(HOSTS / "h100-sxm-1gpu"))
    cfg = Config()
    profile = load_audit_profile(cfg.profile, cfg)
    clock = Clock(0.0)
    poll = Poll(cfg, profile, choose(profile, tags=["gate"]).checks, clock=clock)
    ids = [r.id for r in poll.run_checks_now()]
    assert "gpu.xid" in ids and poll.read_at["gpu.xid"] == 0.0
    clock.t = 10.0
    again = poll.run_checks_now()
    assert [r.id for r in again] == ids  # the same results, in the same order
    assert "gpu.xid" not in poll.fresh and poll.read_at["gpu.xid"] == 0.0 and poll.read_at["gpu.nvml"] == 10.0
    assert "gpu.xid" not in {e.check_id for e in poll.events(again, 10.0)}
    w, _, _ = make_watcher(tmp_path, poll=poll)
    w.poll_now(10.0)
    assert {c["id"]: c["read_at"] for c in w.checks}["gpu.xid"] == 0.0
    clock.t = 61.0
    poll.run_checks_now()
    assert "gpu.xid" in poll.fresh and poll.read_at["gpu.xid"] == 61.0


# --- validate: every refusal names its field (the gate trusts nothing else) -------------------

GOOD_CHECK = {"id": "gpu.ecc", "title": "t", "area": "gpu", "severity": "critical", "message": "m", "status": "PASS",
              "tags": ["gate"]}
GOOD_EVENT = {"time": 1.0, "seen": 2.0, "kind": "xid", "gpu": None, "text": "t", "blocking": True, "code": 79}


@pytest.mark.parametrize("change,why", [
    ({"schema": "x"}, f"schema is not {SCHEMA}"),
    ({"boot_id": "x"}, "boot_id: not a boot id"),
    ({"pid": 0}, "pid: not a process id"),
    ({"pid_start": -1}, "pid_start: not a count of clock ticks"),
    ({"pid_start": True}, "pid_start: not a count of clock ticks"),
    ({"poll_s": 0.5}, "poll_s: not a finite number in [1, 600]"),
    ({"poll": []}, "poll: not an object"),
    ({"poll": {"time": 1.0, "started": -1}}, "started: not a finite number in [0, inf]"),
    ({"checks": [1]}, "checks[0]: not an object"),
    ({"checks": [{**GOOD_CHECK, "subject": 3}]}, "subject: not one line of at most 4096 printable characters"),
    ({"checks": [{**GOOD_CHECK, "tags": "gate"}]}, "checks[0].tags: not a list of strings"),
    ({"checks": [{**GOOD_CHECK, "tags": [1]}]}, "checks[0].tags: not a list of strings"),
    ({"checks": [GOOD_CHECK] * 10001}, "checks: not a list"),
    ({"events": [GOOD_EVENT, 1]}, "events[1]: not an object"),
    ({"events": [{**GOOD_EVENT, "kind": "x" * 65}]}, "kind: not one line of at most 64 printable characters"),
    ({"events": [{**GOOD_EVENT, "gpu": "g" * 129}]}, "gpu: not one line of at most 128 printable characters"),
    ({"events": [{**GOOD_EVENT, "code": True}]}, "events[0].code: not an integer"),
    ({"events": [{**GOOD_EVENT, "code": "79"}]}, "events[0].code: not an integer"),
    ({"events": [GOOD_EVENT] * 201}, "events: not a list"),
])
def test_validate_names_the_first_bad_field(change, why):
    from gpunode.watch.state import validate

    good = {"schema": SCHEMA, "boot_id": BOOT, "pid": 4242, "pid_start": 7, "poll_s": 10, "time": 3.0,
            "poll": {"time": 3.0, "started": 2.5}, "checks": [GOOD_CHECK], "events": [GOOD_EVENT]}
    assert validate(dict(good)) == good
    with pytest.raises(StateRefused) as refused:
        validate({**good, **change})
    assert str(refused.value) == why


def test_the_live_event_watch_asks_a_process_name_once_while_it_runs(monkeypatch):
    """NvmlEventWatch over a fake pynvml: a process's name is one driver call while it stays on
    the GPU (the list is read every second); a pid that went away and came back is asked again."""
    import ctypes
    import sys
    from types import SimpleNamespace

    import pynvml

    from gpunode.host.gpu.nvml import NvmlEventWatch

    handle = ctypes.c_void_p(0x1000)  # events name their device by the handle's pointer
    running = [[4242], [4242], [], [4242, 77]]
    asked, registered = [], []

    def name(pid):
        asked.append(pid)
        return b"job.py"

    def wait(_set, _ms):
        return SimpleNamespace(device=handle, eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=79)

    fake = SimpleNamespace(**{k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith(("NVML_", "nvmlEventType"))})
    fake.__dict__.update(
        NVMLError=pynvml.NVMLError, nvmlInit=lambda: None, nvmlShutdown=lambda: None,
        nvmlDeviceGetCount=lambda: 1, nvmlDeviceGetHandleByIndex=lambda i: handle,
        nvmlDeviceGetUUID=lambda h: "GPU-a", nvmlDeviceGetPciInfo=lambda h: SimpleNamespace(busId=b"00000000:18:00.0"),
        nvmlDeviceGetSerial=lambda h: "1650000000001", nvmlEventSetCreate=lambda: "set",
        nvmlEventSetFree=lambda s: None, nvmlDeviceGetSupportedEventTypes=lambda h: 0xFFFF,
        nvmlDeviceRegisterEvents=lambda h, bits, s: registered.append(bits), nvmlEventSetWait_v2=wait,
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=p) for p in running.pop(0)],
        nvmlSystemGetProcessName=name)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    watch = NvmlEventWatch()
    assert "xid" in watch.open()["GPU-a"] and watch.serials == {"GPU-a": "1650000000001"}
    # the device supports every type; clock events (ten a second on an idle H100) are not asked for
    assert registered[0] & pynvml.nvmlEventTypeXidCriticalError and not registered[0] & pynvml.nvmlEventTypeClock
    assert watch.wait(0.5) == [{"gpu": "GPU-a", "kind": "xid", "code": 79}]
    assert watch.processes() == {"GPU-a": [(4242, "job.py")]}
    assert watch.processes() == {"GPU-a": [(4242, "job.py")]}
    assert asked == [4242]  # not asked again while it runs
    assert watch.processes() == {"GPU-a": []}
    assert watch.processes() == {"GPU-a": [(4242, "job.py"), (77, "job.py")]}
    assert asked == [4242, 4242, 77]  # gone, then back (perhaps another process with that pid): asked again
    watch.close()
    asking = NvmlEventWatch(clock_events=True)  # config watch.clock_events: the site pays for them
    assert "clock" in asking.open()["GPU-a"] and registered[-1] & pynvml.nvmlEventTypeClock
    asking.close()


def test_the_config_asks_the_nvml_source_for_clock_events(tmp_path, monkeypatch):
    from gpunode.cli.watch_cmd import build_watcher
    from gpunode.config import load_config

    monkeypatch.setenv("GPUNODE_STATE_DIR", str(tmp_path / "state"))
    cfg = tmp_path / "c.yaml"
    for text, asked in (("watch: {clock_events: true}\n", True), ("watch: {shadow: true}\n", False)):
        cfg.write_text(text)
        watcher = build_watcher(str(tmp_path / "run"), load_config(str(cfg)), 10.0, True, "/dev/null", True, None)
        nvml = next(s for s in watcher.sources if s.name == "nvml")
        assert nvml.clock_events is asked
