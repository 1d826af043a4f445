"""The watcher's kernel-log sources: how a line could be lost between the kernel and the policy
(issue 22: 24 of 25 /dev/kmsg injections were seen on the lent H100), each way fed through a
pipe or a fake read, and the journald source (`journalctl -k -f -o json` through the Runner)
on recorded journalctl output."""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import queue
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from gpunode.host.runner import LineReader, Runner
from gpunode.watch.events import Action, Event
from gpunode.watch.loop import Watcher
from gpunode.watch.sources import Journald, KernelLog, Kmsg, journal_record, kernel_events, kmsg_record

ROOT = Path(__file__).resolve().parent.parent
JOURNAL = ROOT / "tests" / "fixtures" / "journald"
BOOT = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
XID95 = "4,{seq},{usec},-;NVRM: Xid (PCI:0000:18:00): 95, pid=1, name=x, Uncontained ECC error\n"


def recording_watcher(tmp_path) -> tuple[Watcher, list[Action]]:
    taken: list[Action] = []
    w = Watcher(str(tmp_path / "run"), None, 10.0, decide=lambda s, e, c, n: [Action("record", "gpunode: x", e.gpu, e)],
                actor=taken.append, notify=lambda m: True, boot_id=BOOT, host="n1", clock=lambda: 5000.0)
    return w, taken


def piped(records: str) -> list[Event]:
    """The events a Kmsg source reads from a pipe that holds `records`."""
    r, w = os.pipe()
    try:
        source = Kmsg(queue.Queue(), fd=r, boot_epoch=1000.0)
        source.open()
        os.write(w, records.encode())
        return source.read_available()
    finally:
        os.close(w)
        os.close(r)


# --- /dev/kmsg: the ways a record could be lost ------------------------------------------------

def test_identical_xid_lines_within_one_second_are_two_faults(tmp_path):
    """The de-duplication key is (GPU, event, second): two identical lines 0.3 s apart were merged
    into one, so a repeat (an Xid storm, a benchmark injecting the same line) went missing."""
    events = piped(XID95.format(seq=1, usec=5_100_000) + XID95.format(seq=2, usec=5_400_000))
    assert [int(e.time) for e in events] == [1005, 1005]
    w, taken = recording_watcher(tmp_path)
    assert all(w.handle(e) for e in events)
    assert len(w.events) == 2 and len(taken) == 2 and w.counts["xid"] == 2


def test_one_fault_from_two_sources_or_one_record_read_twice_is_handled_once(tmp_path):
    w, taken = recording_watcher(tmp_path)
    (kernel,) = piped(XID95.format(seq=1, usec=5_100_000))
    nvml = Event("nvml", "xid", 1005.3, "0000:18:00", 95)
    assert w.handle(kernel) and not w.handle(nvml)  # the same fault, said by NVML as well
    assert not w.handle(kernel)  # the same record again (a source that re-reads after a restart)
    assert w.handle(Event("nvml", "xid", 1005.6, "0000:18:00", 95))  # NVML's own second report: a repeat
    assert len(taken) == 2


def test_several_records_and_their_continuation_lines_in_one_read_are_all_read():
    """A pipe hands several records in one read; /dev/kmsg one record with its ` KEY=value`
    continuation lines: every record is read, no continuation becomes one."""
    chunk = (XID95.format(seq=1, usec=1) + " SUBSYSTEM=pci\n DEVICE=+pci:0000:18:00.0\n"
             + XID95.format(seq=2, usec=2) + XID95.format(seq=3, usec=3))
    assert [e.time for e in piped(chunk)] == [1000.000001, 1000.000002, 1000.000003]


def test_records_the_ring_overwrote_are_said_and_the_reader_reads_on(monkeypatch):
    """read() fails with EPIPE once when the kernel overwrote records this reader had not read;
    the next read returns the oldest record still there: the reader must go on, not stop."""
    answers = [OSError(errno.EPIPE, "Broken pipe"), XID95.format(seq=7, usec=1).encode(), BlockingIOError()]

    def fake_read(fd, n):
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    source = Kmsg(queue.Queue(), fd=99, boot_epoch=0.0)
    monkeypatch.setattr("gpunode.watch.sources.os.read", fake_read)
    (event,) = source.read_available()
    assert (event.kind, event.code) == ("xid", 95) and "overwritten" in source.status and not answers


# --- the latency benchmark counts what it injected ---------------------------------------------

def load_benchmark():
    spec = importlib.util.spec_from_file_location("watch_latency", ROOT / "benchmarks" / "watch_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_benchmark_closes_each_record_and_counts_only_the_drain_of_its_own_line():
    """A write to /dev/kmsg without a newline stays an open record that no reader sees until the
    next one is logged: the benchmark's first injection always 'missed' and each later sample
    timed the previous line, credited by whatever drain came next."""
    bench = load_benchmark()
    assert bench.devkmsg_record("NVRM: Xid (PCI:0000:20:00): 95, x").endswith(b"\n")
    called: queue.Queue = queue.Queue()
    called.put((1.0, Action("drain", "gpunode: late", "0000:20:00")))  # the previous injection's
    called.put((2.0, Action("record", "gpunode: x", "0000:21:00")))
    called.put((3.0, Action("drain", "gpunode: this", "0000:21:00")))
    assert bench.wait_for_drain(called, "0000:21:00", timeout_s=5) == 3.0
    assert bench.wait_for_drain(called, "0000:22:00", timeout_s=0.05) is None


def test_the_benchmark_sees_every_one_of_identical_lines(tmp_path):
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "agent"), GPUNODE_STATE_DIR=str(tmp_path / "state"))
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "watch_latency.py"), "--dry", "--same-gpu",
                        "--json", str(out)], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0 and "missed 0," in r.stdout, r.stdout + r.stderr


# --- journald: `journalctl -k -f -o json` through the Runner ----------------------------------

def journal_lines(name: str) -> list[str]:
    return (JOURNAL / name).read_text().splitlines()


@pytest.mark.parametrize("name", ["vm-kernel-50.json", "vm-kernel-boot-head.json", "vm-kernel-devices.json",
                                  "vm-follow.json"])
def test_recorded_journal_entries_are_read_with_the_kernels_time_and_hold_no_fault(name):
    lines = journal_lines(name)
    parsed = [journal_record(line, 1000.0) for line in lines]
    assert all(p is not None for p in parsed)
    for line, (record, cursor) in zip(lines, parsed, strict=True):
        entry = json.loads(line)
        assert record.time == 1000.0 + int(entry["_SOURCE_MONOTONIC_TIMESTAMP"]) / 1e6
        assert cursor == entry["__CURSOR"] and "\n" not in record.text
    assert kernel_events([r for r, _ in parsed]) == []


def test_a_multi_line_and_a_byte_list_message_are_one_line_of_text():
    texts = [journal_record(line, 0.0)[0].text for line in journal_lines("vm-follow.json")]
    assert texts[1] == "gpunode fixture: a multi-line record its second line its third line"
    assert texts[2] == "gpunode fixture: a byte that is not UTF-8: \ufffd"


def test_faults_through_journald_are_the_events_kmsg_gives():
    """The same records through journald and through /dev/kmsg: the same events (kind, code,
    GPU, time), so the two de-duplicate; the truncated last line is no entry."""
    lines = journal_lines("hgx-faults.json")
    assert journal_record(lines[-1], 1000.0) is None
    journal = [journal_record(line, 1000.0)[0] for line in lines[:-1]]
    kmsg = [r for r in (kmsg_record(line, 1000.0) for line in (ROOT / "tests" / "fixtures" / "kmsg" /
                                                                "hgx-faults.txt").read_text().splitlines()) if r]
    gpu_of = {"0000:2a:00": "GPU-2a"}.get

    def seen(events):
        return sorted((e.kind, e.code, e.gpu, e.time) for e in events)

    from_journal = kernel_events(journal, gpu_of, source="journald")
    assert seen(from_journal) == seen(kernel_events(kmsg, gpu_of)) and len(from_journal) == 9
    assert {e.source for e in from_journal} == {"journald"}
    assert ("fallen_off_bus", 79, None) in {(e.kind, e.code, e.gpu) for e in from_journal}  # the 3-line notice


def fake_journalctl(tmp_path, fixture: str, then: str) -> tuple[tuple[str, ...], Path]:
    """argv of a stand-in journalctl: writes its arguments to a file, prints `fixture`'s lines,
    then `then` ('exit': says why on stderr and exits 1; 'wait': runs until killed)."""
    said = tmp_path / "argv.json"
    script = "\n".join([
        "import json, sys, time",
        f"open({str(said)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')",
        f"sys.stdout.write(open({str(JOURNAL / fixture)!r}).read()); sys.stdout.flush()",
        "if sys.argv[1:2] != ['wait']:",
        "    sys.stderr.write('Failed to open files: No such file or directory\\n'); sys.exit(1)",
        "time.sleep(600)",
    ])
    return (sys.executable, "-c", script, then), said


def read_until_end(source: Journald) -> list[Event]:
    events: list[Event] = []
    while not source.stream.eof:
        select.select([source.stream.fd], [], [], 30)
        events += source.read_available()
    return events


def test_a_journalctl_that_exits_is_said_and_started_again_after_its_last_cursor(tmp_path):
    argv, said = fake_journalctl(tmp_path, "hgx-faults.json", "exit")
    source = Journald(queue.Queue(), Runner(), argv=argv, boot_epoch=1000.0)
    source.start()
    events = read_until_end(source)
    assert len(events) == 9 and {e.source for e in events} == {"journald"}
    why = source.ended()
    assert why.startswith("journalctl ended (exit 1): Failed to open files: No such file or directory"), why
    last = json.loads(journal_lines("hgx-faults.json")[-2])["__CURSOR"]  # the truncated line has none to give
    assert source.cursor == last
    source.start()  # as run() does after restart_s
    read_until_end(source)
    source.ended()
    first, again = [json.loads(line) for line in said.read_text().splitlines()]
    assert first == ["exit", "-n", "0"] and again == ["exit", f"--after-cursor={last}"]


def test_a_journalctl_that_exits_before_any_record_is_started_again_from_its_first_start(tmp_path):
    """No kernel record yet (a quiet, healthy node) gives no cursor: the restart must not read
    from `now` again (-n 0), or what the kernel logged in the restart gap is lost."""
    empty = tmp_path / "empty.json"
    empty.write_text("")
    argv, said = fake_journalctl(tmp_path, str(empty), "exit")
    source = Journald(queue.Queue(), Runner(), argv=argv, boot_epoch=1000.0)
    source.start()
    read_until_end(source)
    source.ended()
    source.start()
    read_until_end(source)
    source.ended()
    first, again = [json.loads(line) for line in said.read_text().splitlines()]
    assert first == ["exit", "-n", "0"] and again == ["exit", f"--since=@{int(source.first_start)}"]


def test_without_kmsg_the_kernel_log_comes_through_journald_and_stops_with_the_watcher(tmp_path):
    argv, _ = fake_journalctl(tmp_path, "hgx-faults.json", "wait")
    out: queue.Queue = queue.Queue()
    journald = Journald(out, Runner(), argv=argv, boot_epoch=1000.0)
    source = KernelLog(Kmsg(out, path=str(tmp_path / "no-kmsg"), boot_epoch=1000.0), journald)
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(stop,))
    thread.start()
    try:
        first = out.get(timeout=60)
        assert first.source == "journald" and (first.kind, first.code) == ("xid", 13)
        assert source.status == f"ok via journald ({tmp_path / 'no-kmsg'}: No such file or directory)"
        assert source.name == "kmsg"  # the state and metrics keep one kernel-log source
        proc = journald.stream.proc
    finally:
        stop.set()
        thread.join(timeout=30)
    assert not thread.is_alive() and proc.returncode is not None  # journalctl killed on stop


def test_kmsg_is_used_where_it_opens(tmp_path):
    r, w = os.pipe()
    try:
        kmsg = Kmsg(queue.Queue(), fd=r, boot_epoch=0.0)
        source = KernelLog(kmsg, Journald(queue.Queue(), runner=object()))  # never asked to stream
        stop = threading.Event()
        stop.set()
        source.run(stop)
        assert source.status == "ok" and source.why is None
    finally:
        os.close(w)
        os.close(r)


# --- the Runner's stream and its bounded lines -------------------------------------------------

def test_a_line_longer_than_the_bound_is_dropped_up_to_its_end():
    r, w = os.pipe()
    try:
        os.set_blocking(r, False)
        reader = LineReader(r, line_max=10)
        os.write(w, b"short\n" + b"x" * 25)  # a long line, its end not yet written
        assert reader.read_lines() == [b"short"] and reader.dropped == 1
        os.write(w, b"yyy\nnext\n" + b"z" * 11 + b"\nlast")
        assert reader.read_lines() == [b"next"] and reader.dropped == 2
        os.write(w, b"\n")
        assert reader.read_lines() == [b"last"] and not reader.eof
    finally:
        os.close(w)
        os.close(r)


def test_stream_reads_lines_as_they_come_and_stop_kills_it():
    stream = Runner().stream([sys.executable, "-c", "import time; print('one', flush=True); time.sleep(600)"])
    try:
        lines: list[str] = []
        while not lines:
            select.select([stream.fd], [], [], 30)
            lines += stream.read_lines()
        assert lines == ["one"] and stream.returncode is None
    finally:
        code = stream.stop()
    assert code is not None and code < 0  # killed, not waited 600 s for
