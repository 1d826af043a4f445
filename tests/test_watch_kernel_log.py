"""The watcher's kernel-log sources: how a line could be lost between the kernel and the policy
(issue 22: 24 of 25 /dev/kmsg injections were seen on the lent H100), each way fed through a
pipe or a fake read, and the journald source (`journalctl -k -f -o json` through the Runner)
on recorded journalctl output."""

from __future__ import annotations

import errno
import importlib.util
import os
import queue
import subprocess
import sys
from pathlib import Path

from gpunode.watch.events import Action, Event
from gpunode.watch.loop import Watcher
from gpunode.watch.sources import Kmsg

ROOT = Path(__file__).resolve().parent.parent
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
