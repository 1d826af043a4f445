"""`gpunode watch` as systemd runs it: a real process, a FIFO standing in for /dev/kmsg, a real
unix datagram socket as $NOTIFY_SOCKET; then `gpunode watch --status` and the gate reading it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpunode.watch.state import STATE_FILE, VERDICT_FILE, read_boot_id

pytestmark = pytest.mark.skipif(read_boot_id() is None, reason="no boot id")
XID79 = "4,1,{usec},-;NVRM: Xid (PCI:0000:18:00): 79, pid=1, name=x, GPU has fallen off the bus.\n"


def env_for(tmp_path: Path, **more) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM", "NOTIFY_", "WATCHDOG_"))}
    env.update(GPUNODE_STATE_DIR=str(tmp_path / "state"), **more)
    return env


def wait_for(predicate, what: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"no {what} within {timeout:.0f} s")


def state(run: Path) -> dict | None:
    try:
        return json.loads((run / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


def test_watch_runs_notifies_sees_a_kernel_xid_and_stops(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("profile: training\n")
    kmsg = tmp_path / "kmsg"
    os.mkfifo(kmsg)
    run = tmp_path / "run"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(60)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpunode", "watch", "--state-dir", str(run), "--kmsg", str(kmsg), "--no-nvml",
         "--shadow", "--poll", "1", "--config", str(config), "--textfile", str(tmp_path / "watch.prom")],
        env=env_for(tmp_path, NOTIFY_SOCKET=str(tmp_path / "notify")), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert notify.recv(64) == b"READY=1"  # after the first poll wrote the state
        doc = state(run)
        assert doc is not None and doc["pid"] == proc.pid
        assert (run / VERDICT_FILE).read_text().split()[3] == str(proc.pid)
        assert notify.recv(64) == b"WATCHDOG=1"
        wait_for(lambda: (d := state(run)) and d["sources"]["kmsg"] == "ok", "kernel log source open")
        with open(kmsg, "w") as writer:  # the kernel log source holds the FIFO open for reading
            writer.write(XID79.format(usec=int(time.monotonic() * 1e6)))
        doc = wait_for(lambda: (d := state(run)) and d["events"] and d, "Xid event in the state")
        (event,) = doc["events"]
        assert (event["kind"], event["code"], event["gpu"], event["blocking"]) == ("xid", 79, "0000:18:00", True)
        assert doc["actions"] and doc["actions"][-1]["action"].startswith("would-")  # --shadow: nothing done
        status = subprocess.run([sys.executable, "-m", "gpunode", "watch", "--status", "--state-dir", str(run)],
                                capture_output=True, text=True, timeout=60, env=env_for(tmp_path))
        assert "event xid gpu=0000:18:00 code=79" in status.stdout, status.stdout + status.stderr
        assert "gpunode_watch_events_total" in wait_for(lambda: (tmp_path / "watch.prom").read_text(), "textfile")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        notify.close()
    assert proc.returncode == 0, err
    assert "event kmsg/xid gpu=0000:18:00 code=79" in err and "would-" in err


def test_status_without_a_watcher_is_unknown(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpunode", "watch", "--status", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60, env=env_for(tmp_path))
    assert r.returncode == 3 and r.stderr.startswith("gpunode: error: "), r.stderr


@pytest.mark.parametrize("args", [["--poll", "0.5"], ["--poll", "nan"], ["--metrics-port", "70000"]])
def test_bad_options_are_usage_errors(tmp_path, args):
    r = subprocess.run([sys.executable, "-m", "gpunode", "watch", "--state-dir", str(tmp_path), *args],
                       capture_output=True, text=True, timeout=60, env=env_for(tmp_path))
    assert r.returncode == 3 and r.stderr.startswith("gpunode: error: "), r.stderr
    assert not (tmp_path / STATE_FILE).exists()


# Modules the resident watcher must not hold: typer and what it loads (click, rich, pydantic:
# ~20 MB of the watcher's RSS, issue 22's <= 60 MB), and what only other commands need.
NOT_RESIDENT = ("typer", "click", "rich", "pydantic", "pydantic_core", "shellingham", "email", "importlib.metadata",
                "hashlib", "sqlite3", "prometheus_client", "numpy", "torch", "cupy", "ansible_runner", "jsonschema")


def test_the_resident_watcher_imports_only_what_it_needs(tmp_path):
    """`gpunode watch` runs without typer (cli/watch_cmd.py fast_main): after its first poll and
    state write the process holds none of NOT_RESIDENT. A module count, not a memory figure."""
    kmsg = tmp_path / "kmsg"
    os.mkfifo(kmsg)
    run = tmp_path / "run"
    config = tmp_path / "config.yaml"
    config.write_text("profile: training\n")
    argv = ["gpunode", "watch", "--state-dir", str(run), "--kmsg", str(kmsg), "--no-nvml", "--shadow", "--poll", "1",
            "--config", str(config), "--textfile", str(tmp_path / "watch.prom")]
    code = "\n".join([
        "import os, signal, sys, threading, time",
        "def stop_after_the_first_state():",
        f"    while not os.path.exists({str(run / STATE_FILE)!r}):",
        "        time.sleep(0.05)",
        "    os.kill(os.getpid(), signal.SIGTERM)",
        "threading.Thread(target=stop_after_the_first_state, daemon=True).start()",
        f"sys.argv = {argv!r}",
        "from gpunode.cli import main",
        "try:\n    main()\nexcept SystemExit as done:\n    print('exit', done.code)",
        f"print(sorted(m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in {NOT_RESIDENT!r})))",
    ])
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env_for(tmp_path))
    assert r.stdout.splitlines()[-2:] == ["exit 0", "[]"], r.stdout + r.stderr


def test_a_bad_option_of_the_lean_watch_is_one_error_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "gpunode", "watch", "--state-dir", str(tmp_path), "--bogus"],
                       capture_output=True, text=True, timeout=60, env=env_for(tmp_path))
    assert r.returncode == 3 and r.stderr == "gpunode: error: no such option: '--bogus' (see `gpunode watch --help`)\n"
    assert not (tmp_path / STATE_FILE).exists()
