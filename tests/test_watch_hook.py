"""The prolog hook's fast path (the watcher's one-line verdict, judged in shell without Python),
`slurm install --watch`, and the systemd unit."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gpunode.slurm.install import WatchVerdict, hook_scripts
from gpunode.watch.state import VERDICT_FILE, read_boot_id, uptime_s
from gpunode.watch.unit import unit_text

ROOT = Path(__file__).resolve().parent.parent
BOOT = read_boot_id()
SHELLS = [s for s in ("/bin/sh", "/bin/bash", "/usr/bin/dash") if os.path.exists(s)]
pytestmark = pytest.mark.skipif(BOOT is None or uptime_s() is None, reason="no boot id or /proc/uptime")


@pytest.fixture()
def hook(tmp_path):
    """The rendered prolog with the fast path; its `python` is a stub that leaves a mark and exits
    2, so a run that fell back to the full gate is told from one the verdict answered."""
    stub = tmp_path / "python"
    mark = tmp_path / "gate-ran"
    stub.write_text(f"#!/bin/sh\ntouch {mark}\nexit 2\n")
    stub.chmod(0o755)
    entry = tmp_path / "__main__.py"
    entry.write_text("")
    verdict = tmp_path / VERDICT_FILE
    (prolog,) = [s for s in hook_scripts(tmp_path, str(stub), entry=entry,
                                         watch=WatchVerdict(str(verdict), 20)) if s.mode == "prolog"]
    prolog.path.write_text(prolog.text)
    prolog.path.chmod(0o755)

    def run(line: str | None, shell: str = "/bin/sh") -> tuple[int, bool]:
        mark.unlink(missing_ok=True)
        if line is not None:
            verdict.write_text(line)
        r = subprocess.run([shell, str(prolog.path)], capture_output=True, text=True, timeout=30, env={})
        assert "arithmetic" not in r.stderr and "Syntax error" not in r.stderr, r.stderr
        return r.returncode, mark.exists()

    return run


def line(status="OK", boot=None, pid=None, up=None, extra=""):
    up = uptime_s() if up is None else up
    return f"{status} {int(time.time())} {boot or BOOT} {pid or os.getpid()} {up}{extra}\n"


@pytest.mark.parametrize("shell", SHELLS)
def test_a_fresh_ok_verdict_answers_without_python(hook, shell):
    assert hook(line(), shell) == (0, False)


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("name,text", [
    ("fail", line("FAIL")),
    ("warn", line("WARN")),
    ("stale", line(up=uptime_s() - 21)),
    ("future", line(up=uptime_s() + 100)),
    ("other boot", line(boot="00000000-0000-0000-0000-000000000000")),
    ("boot id too short", line(boot="0000")),
    ("extra field", line(extra=" 1")),
    ("leading zero", line(up="0999")),
    ("octal trap", line(up="09")),
    ("not a number", line(up="1e3")),
    ("negative", line(up="-5")),
    ("huge", line(up="9" * 30)),
    ("command", f"OK $(touch /tmp/gpunode-pwned) {BOOT} {os.getpid()} 1\n"),
    ("backticks", f"OK 1 {BOOT} `touch /tmp/gpunode-pwned` 1\n"),
    ("empty", ""),
    ("garbage", "\x00\x01 \xff\n"),
])
def test_anything_but_a_fresh_ok_runs_the_full_gate(hook, shell, name, text):
    assert hook(text, shell) == (2, True), name
    assert not os.path.exists("/tmp/gpunode-pwned")


def test_a_dead_watchers_verdict_runs_the_full_gate(hook):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert hook(line(pid=child.pid)) == (2, True)


def test_a_missing_verdict_runs_the_full_gate(hook):
    assert hook(None) == (2, True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the file to another user")
def test_a_verdict_root_does_not_own_runs_the_full_gate(hook, tmp_path):
    assert hook(line()) == (0, False)
    os.chown(tmp_path / VERDICT_FILE, 65534, 65534)
    assert hook(None) == (2, True)


def test_the_watchers_own_verdict_line_passes_the_hook(hook, tmp_path):
    """What the watcher writes (watch.state.write_state) is what the hook accepts."""
    from gpunode.audit.engine import Result, Status
    from gpunode.watch.loop import Watcher

    class Poll:
        def run_checks_now(self):
            return [Result("gpu.count", "t", "gpu", "critical", Status.PASS, "1 GPU")]

        def events(self, results, now):
            return []

    Watcher(str(tmp_path), Poll(), 10.0, notify=lambda m: True, boot_id=BOOT).tick(time.time())
    assert hook(None) == (0, False)


def test_without_watch_the_prolog_has_no_fast_path(tmp_path):
    scripts = hook_scripts(tmp_path, sys.executable)
    assert not any("gpunode_watch_ok" in s.text for s in scripts)
    with_watch = hook_scripts(tmp_path, sys.executable, watch=WatchVerdict())
    assert [s.mode for s in with_watch if "gpunode_watch_ok" in s.text] == ["prolog"]


@pytest.mark.parametrize("path", ["relative", "/run/x y", "/run/$(x)", "/run/../etc/x"])
def test_a_verdict_path_that_is_not_plain_is_refused(path):
    with pytest.raises(ValueError):
        WatchVerdict(path)


# --- the unit ---------------------------------------------------------------------------------

def test_the_example_unit_is_what_install_writes():
    assert (ROOT / "docs/examples/systemd/gpunode-watch.service").read_text() == unit_text("/opt/gpunode/bin/python")


def test_the_unit_is_hardened_and_notifies():
    text = unit_text("/opt/gpunode/bin/python", 5, shadow=True)
    for line_ in ("Type=notify", "WatchdogSec=60", "Restart=on-failure", "ProtectSystem=strict", "NoNewPrivileges=yes",
                  "PrivateTmp=yes", "ReadWritePaths=-/run/gpunode -/var/lib/gpunode -/var/lib/prometheus/node-exporter"):
        assert line_ in text.splitlines(), line_
    assert "--poll 5 --shadow" in text
    with pytest.raises(ValueError):
        unit_text("/opt/my python")
    with pytest.raises(ValueError):
        unit_text("/usr/bin/python3", poll_s=0.1)


def test_systemd_analyze_verifies_the_unit(tmp_path):
    from testkit import require

    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")
    unit = tmp_path / "gpunode-watch.service"
    unit.write_text(unit_text(sys.executable))
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Unknown" not in r.stderr and "nvalid" not in r.stderr, r.stderr


def test_slurm_install_watch_writes_the_unit_and_the_fast_path(tmp_path):
    units = tmp_path / "units"
    units.mkdir()
    (tmp_path / "slurm.conf").write_text("ClusterName=test\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    r = subprocess.run([sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(tmp_path),
                        "--watch", "--watch-poll", "5", "--unit-dir", str(units),
                        "--slurm-conf", str(tmp_path / "slurm.conf")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--poll 5" in (units / "gpunode-watch.service").read_text()
    assert oct((units / "gpunode-watch.service").stat().st_mode & 0o777) == "0o644"
    prolog = (tmp_path / "gpunode-prolog").read_text()
    assert "gpunode_watch_ok /run/gpunode/verdict" in prolog and '-le 10 ]' in prolog
    assert "gpunode_watch_ok" not in (tmp_path / "gpunode-epilog").read_text()
