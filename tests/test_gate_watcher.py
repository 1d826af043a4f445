"""`gpunode gate` judges from a fresh `gpunode watch` state without opening NVML; a stale one,
another boot's, a dead writer's or a hostile document is never trusted (the gate reads NVML)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpunode.audit.engine import Result, Status
from gpunode.slurm.from_watcher import WATCH_DIR_ENV, watcher_state
from gpunode.watch.events import Event
from gpunode.watch.loop import Watcher
from gpunode.watch.state import STATE_FILE, StateRefused, read_boot_id, read_fresh

BOOT = read_boot_id()
pytestmark = pytest.mark.skipif(BOOT is None, reason="no /proc/sys/kernel/random/boot_id")


class Poll:
    def __init__(self, results):
        self.results = results

    def run_checks_now(self):
        return self.results

    def events(self, results, now):
        return []


def ok_results(status=Status.PASS):
    return [Result("gpu.count", "GPU count", "gpu", "critical", Status.PASS, "1 GPU", tags=["gate"]),
            Result("gpu.ecc", "No ECC errors", "gpu", "critical", status, "no uncorrectable error", subject="GPU0",
                   tags=["gate"])]


def write_state(directory: Path, results=None, when: float | None = None, seen=(), before=(), **changes) -> dict:
    """A watcher's document after one poll at `when`: `before` events seen 5 s before it, `seen` after."""
    when = time.time() if when is None else when
    w = Watcher(str(directory), Poll(results or ok_results()), 10.0, clock=lambda: when, notify=lambda m: True,
                host="n1", boot_id=BOOT)
    for event in before:
        w.handle(event, when - 5)
    w.tick(when)
    for event in seen:
        w.handle(event, when)
    doc = w.document(when)
    doc.update(changes)
    (directory / STATE_FILE).write_text(json.dumps(doc))
    os.chmod(directory / STATE_FILE, 0o644)
    return doc


def gate(*args, watch_dir: Path, code: str | None = None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    env[WATCH_DIR_ENV] = str(watch_dir)
    env["GPUNODE_STATE_DIR"] = str(watch_dir / "state")
    program = code or "import sys; sys.argv = ['gpunode', 'gate', *sys.argv[1:]]\nfrom gpunode.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=60, env=env)


# --- fresh: judged from the watcher, no NVML -------------------------------------------------

def test_a_fresh_state_answers_the_gate_without_nvml(tmp_path):
    """Nor anything else a non-blocking verdict does not need: no config, profile, check module,
    engine, and not json/re/enum (the state is parsed by the C scanner)."""
    write_state(tmp_path)
    code = "\n".join([
        "import sys; sys.argv = ['gpunode', 'gate', '--prolog']",
        "from gpunode.cli import main",
        "try:\n    main()\nexcept SystemExit as e:\n    rc = e.code",
        "heavy = sorted(m for m in sys.modules if m in ('pynvml', 'yaml', 'gpunode.host.gpu.nvml', 'gpunode.config',"
        " 'gpunode.audit.engine', 'gpunode.slurm.gate', 'logging', 'json', 're', 'enum', 'pathlib')"
        " or m.startswith('gpunode.checks'))",
        "print('rc', rc, heavy)",
    ])
    r = gate(watch_dir=tmp_path, code=code)
    assert "source: watcher (age " in r.stdout and "gpunode gate (prolog): OK" in r.stdout, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "rc 0 []", r.stdout + r.stderr


def test_check_mode_warn_and_json_from_the_watcher(tmp_path):
    import jsonschema

    write_state(tmp_path, ok_results(Status.WARN))
    r = gate("--json", watch_dir=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    doc = json.loads(r.stdout)
    schema = json.loads((Path(__file__).parent.parent / "docs" / "schemas" / "gate.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["source"].startswith("watcher (age ") and doc["status"] == "WARN"
    assert [c["id"] for c in doc["checks"]] == ["gpu.count", "gpu.ecc"]


def test_a_failed_check_in_the_state_fails_the_gate_with_its_reason(tmp_path):
    write_state(tmp_path, ok_results(Status.FAIL))
    r = gate("--no-scontrol", "--prolog", watch_dir=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "source: watcher (age" in r.stdout
    assert "gpunode: gpu.ecc GPU0: no uncorrectable error" in r.stderr


def test_an_event_newer_than_the_last_poll_fails_the_gate_at_once(tmp_path):
    now = time.time()
    write_state(tmp_path, when=now, seen=[Event("kmsg", "xid", now + 0.5, "GPU-a", 79,
                                                  text="Xid 79 GPU has fallen off the bus.")])
    r = gate(watch_dir=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "FAIL  watch.events GPU-a: xid 79 seen by gpunode watch" in r.stdout
    assert "source: watcher (age" in r.stdout


def test_an_event_before_the_last_poll_is_left_to_the_poll(tmp_path):
    now = time.time()
    doc = write_state(tmp_path, when=now, before=[Event("kmsg", "xid", now + 3, "GPU-a", 79)])  # kernel clock ahead
    watched = watcher_state({}, "check", {WATCH_DIR_ENV: str(tmp_path)})
    assert watched is not None and watched.events == [] and len(doc["events"]) == 1


def test_a_harmless_event_does_not_fail_the_gate(tmp_path):
    now = time.time()
    write_state(tmp_path, when=now, seen=[Event("nvml", "clock", now + 0.5, "GPU-a", 8)])
    assert watcher_state({}, "check", {WATCH_DIR_ENV: str(tmp_path)}).events == []


# --- not trusted: the gate reads NVML as before ----------------------------------------------

def refused(tmp_path) -> str:
    with pytest.raises(StateRefused) as exc:
        read_fresh(str(tmp_path), time.time(), BOOT)
    assert watcher_state({}, "check", {WATCH_DIR_ENV: str(tmp_path)}) is None
    return str(exc.value)


def test_a_stale_state_is_not_used(tmp_path):
    write_state(tmp_path, when=time.time() - 21)  # 2 x 10 s poll + 1
    assert "more than 2 x 10 s" in refused(tmp_path)


def test_a_state_just_inside_two_polls_is_used(tmp_path):
    write_state(tmp_path, when=time.time() - 15)
    _, age = read_fresh(str(tmp_path), time.time(), BOOT)
    assert 15 <= age < 20


def test_another_boots_state_is_not_used(tmp_path):
    write_state(tmp_path, boot_id="00000000-0000-0000-0000-000000000000")
    assert "before this boot" in refused(tmp_path)


def test_a_dead_writers_state_is_not_used(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    write_state(tmp_path, pid=child.pid, pid_start=None)
    assert "is gone" in refused(tmp_path)


def test_a_reused_pid_is_not_the_writer(tmp_path):
    doc = write_state(tmp_path)
    write_state(tmp_path, pid_start=doc["pid_start"] + 1)
    assert "is gone" in refused(tmp_path)


HOSTILE = [
    {"schema": "gpunode.watch/2"},
    {"boot_id": "$(reboot)"},
    {"pid": "1"},
    {"pid": True},
    {"poll_s": 0},
    {"poll_s": 1e9},
    {"poll": {"time": "now"}},
    {"checks": {"gpu.ecc": "PASS"}},
    {"checks": [{"id": "gpu.ecc", "title": "t", "area": "gpu", "severity": "critical", "message": "m",
                 "status": "OK"}]},
    {"checks": [{"id": 3, "title": "t", "area": "gpu", "severity": "critical", "message": "m", "status": "PASS"}]},
    {"events": [{"time": 1, "kind": "xid", "gpu": None, "text": "t", "blocking": "yes"}]},
    {"events": "none"},
    {"events": [{"time": 1, "kind": "xid", "gpu": None, "text": "t", "blocking": True}]},  # no `seen`
    {"poll": {"time": 1.0, "started": "then"}},
    {"time": float("inf")},
    {"checks": [{"id": "gpu.ecc", "title": "t", "area": "gpu", "severity": "critical", "message": "a\x1b[2Jb",
                 "status": "PASS"}]},
    {"checks": [{"id": "gpu.ecc", "title": "t", "area": "gpu", "severity": "critical", "message": "\ud800",
                 "status": "PASS"}]},
]


@pytest.mark.parametrize("change", HOSTILE, ids=[json.dumps(h)[:40] for h in HOSTILE])
def test_a_hostile_document_is_refused(tmp_path, change):
    write_state(tmp_path, **change)
    refused(tmp_path)


@pytest.mark.parametrize("text", ["", "[]", "{", '{"time": NaN}', "\xff", "[" * 100000, '{"a": 1} {}'],
                         ids=["empty", "a list", "cut", "NaN", "not UTF-8", "too deep", "two documents"])
def test_a_document_that_is_not_json_is_refused(tmp_path, text):
    """Parsed by CPython's C scanner without importing json (the gate's start-up)."""
    (tmp_path / STATE_FILE).write_text(text, errors="surrogateescape") if text != "\xff" else \
        (tmp_path / STATE_FILE).write_bytes(b"\xff")
    refused(tmp_path)


def test_an_infinite_time_is_refused(tmp_path):
    """1e999 is valid JSON and parses as inf: no time may be infinite (an event that is always
    newer than the last poll would fail every gate)."""
    write_state(tmp_path)
    path = tmp_path / STATE_FILE
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(doc).replace(f'"time": {json.dumps(doc["time"])}', '"time": 1e999', 1))
    assert '"time": 1e999' in path.read_text()
    assert "time: not a finite number" in refused(tmp_path)


def test_a_state_others_may_write_is_refused(tmp_path):
    write_state(tmp_path)
    os.chmod(tmp_path / STATE_FILE, 0o666)
    assert "writable by others" in refused(tmp_path)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_state_owned_by_another_user_is_refused(tmp_path):
    write_state(tmp_path)
    os.chown(tmp_path / STATE_FILE, 65534, 65534)
    assert "owned by uid 65534" in refused(tmp_path)


def test_a_symlink_or_fifo_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    write_state(real)
    (tmp_path / STATE_FILE).symlink_to(real / STATE_FILE)
    refused(tmp_path)
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / STATE_FILE)
    refused(fifo)  # opened without blocking, refused as not a regular file


def test_snapshot_epilog_and_expected_gpus_never_use_the_watcher(tmp_path):
    write_state(tmp_path)
    env = {WATCH_DIR_ENV: str(tmp_path)}
    assert watcher_state({}, "check", env) is not None
    assert watcher_state({}, "epilog", env) is None  # leftovers need a fresh read after the job
    assert watcher_state({"snapshot": "/x"}, "check", env) is None
    assert watcher_state({}, "check", {**env, "GPUNODE_SNAPSHOT": "/x"}) is None
    assert watcher_state({"expected_gpus": 8}, "check", env) is None


def test_a_stale_state_in_the_real_gate_falls_back_to_nvml(tmp_path):
    write_state(tmp_path, when=time.time() - 60)
    r = gate(watch_dir=tmp_path)
    assert "source: watcher" not in r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("gpunode gate (check): "), r.stdout + r.stderr


def test_the_health_check_judges_from_the_watcher_and_drains_on_its_fail(tmp_path):
    """A health check always takes the full path (it drains and resumes), with the watcher's results."""
    write_state(tmp_path, ok_results(Status.FAIL))
    r = gate("--health-check", "--no-scontrol", watch_dir=tmp_path, code=None)
    assert r.returncode == 0, r.stdout + r.stderr  # the health check drains itself
    assert "source: watcher (age" in r.stdout and "gpu.ecc GPU0" in r.stdout
    assert "slurm: would-drain: gpunode: gpu.ecc GPU0: no uncorrectable error" in r.stdout, r.stdout


def test_the_gate_stats_the_document_where_the_watcher_writes_it():
    """from_watcher stats health.json before it imports the reader (the gate's start-up): the
    same place as watch.state's."""
    from gpunode.slurm import from_watcher
    from gpunode.watch import state

    assert (from_watcher.STATE_DIR, from_watcher.STATE_FILE) == (state.STATE_DIR, state.STATE_FILE)
