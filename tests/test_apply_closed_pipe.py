"""`ssh host gpunode apply ...` without a terminal: when the client goes away, stdout (and
stderr) are pipes nobody reads, and a write fails with EPIPE (Python ignores SIGPIPE), never
SIGHUP. The batch still ends as it would have (applied, or rolled back when a change fails),
the exit code still says which, the trail line is still sent, and no traceback or
"internal error" is printed. The run stops itself (SIGSTOP, tests/testhooks) mid-batch, the
test closes its end of the pipe(s), then lets it go on (SIGCONT)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest
from apply_fixtures import ROOT, gpunode, make_tree, picture, with_test_hooks

ONLY = "sysctl.vm.*,sysctl.kernel.*,sysfs.thp.*,limits.*"  # 9 changes
UNIT = "/etc/systemd/system/gpunode-apply.service"
NOISE = ("Traceback", "internal error", "Exception ignored", "BrokenPipeError")


def _run_and_close(argv: list[str], env: dict, close_stderr: bool) -> tuple[int, str]:
    """Run gpunode until the hook stops it, close its stdout reader (and stderr's), let it go
    on; -> (exit code, what it wrote to stderr: '' when stderr was closed too). Every later
    SIGSTOP of the hook is continued too (a rollback's hook stops at each undo)."""
    full = {**os.environ, **env, "COLUMNS": "200", "PYTHONPATH": with_test_hooks(os.environ.get("PYTHONPATH"))}
    full.pop("GPUNODE_STATE_DIR", None)
    proc = subprocess.Popen([sys.executable, "-m", "gpunode", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full, cwd=ROOT)
    err, status = b"", None
    try:
        _, status = os.waitpid(proc.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status), status
        proc.stdout.close()  # the ssh client went away
        if close_stderr:
            proc.stderr.close()
        while True:
            os.kill(proc.pid, signal.SIGCONT)
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                break
        if not close_stderr:
            err = proc.stderr.read()
    finally:
        if status is None or os.WIFSTOPPED(status):  # the test failed on the way: leave no process
            proc.kill()
            proc.wait()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here by waitpid, not by Popen
    return proc.returncode, err.decode()


def _without_unit(files: dict) -> dict:
    return {path: what for path, what in files.items() if path != UNIT}


def _config(tmp_path) -> dict:
    (tmp_path / "config.yaml").write_text('audit_log: "off"\n')
    return {"GPUNODE_CONFIG": str(tmp_path / "config.yaml")}


@pytest.mark.parametrize("fmt", [(), ("--json",), ("--format", "tsv")])
@pytest.mark.parametrize("close_stderr", [False, True])
def test_an_apply_whose_reader_went_away_finishes_and_exits_0(tmp_path, fmt, close_stderr):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    twin, twin_state = make_tree(tmp_path / "twin"), tmp_path / "twin-state"
    before = picture(root)
    assert gpunode("apply", "--sysroot", str(twin), "--state-dir", str(twin_state), "--only", ONLY).returncode == 0
    env = {**_config(tmp_path), "GPUNODE_TEST_CRASH_AFTER": "write:4", "GPUNODE_TEST_CRASH_SIGNAL": "STOP"}
    code, err = _run_and_close(["apply", "--sysroot", str(root), "--state-dir", str(state), "--only", ONLY, *fmt],
                               env, close_stderr)
    assert code == 0, err
    assert not any(word in err for word in NOISE), err
    # all 9 changes, as an apply that was read to the end (the boot unit names its own state dir)
    assert _without_unit(picture(root)) == _without_unit(picture(twin)) != _without_unit(before)
    assert (root / UNIT.lstrip("/")).is_file()
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert rb.returncode == 0, rb.stderr
    assert picture(root) == before


def test_a_failed_apply_whose_reader_went_away_is_rolled_back_and_exits_3(tmp_path):
    # /etc/sysctl.d is a file: change 6 fails for real and the batch is rolled back; the
    # rollback's lines reach stderr, the table's EPIPE on stdout keeps exit 3 (rich would exit 1)
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    (root / "etc/sysctl.d/99-site.conf").unlink()
    (root / "etc/sysctl.d").rmdir()
    (root / "etc/sysctl.d").write_text("not a directory\n")
    before = picture(root)
    env = {**_config(tmp_path), "GPUNODE_TEST_CRASH_AFTER": "write:4", "GPUNODE_TEST_CRASH_SIGNAL": "STOP"}
    code, err = _run_and_close(["apply", "--sysroot", str(root), "--state-dir", str(state), "--only", ONLY],
                               env, close_stderr=False)
    assert code == 3, err
    assert not any(word in err for word in NOISE), err
    assert "gpunode: error: apply failed and was rolled back" in err
    assert picture(root) == before


@pytest.mark.parametrize("fmt", [(), ("--json",)])
@pytest.mark.parametrize("close_stderr", [False, True])
def test_a_rollback_whose_reader_went_away_restores_everything_and_exits_0(tmp_path, fmt, close_stderr):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    assert gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", ONLY).returncode == 0
    env = {**_config(tmp_path), "GPUNODE_TEST_SIGNAL_IN_UNDO": "STOP"}  # stops at each undo
    code, err = _run_and_close(["rollback", "--sysroot", str(root), "--state-dir", str(state), *fmt],
                               env, close_stderr)
    assert code == 0, err
    assert not any(word in err for word in NOISE), err
    assert picture(root) == before
    again = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert again.returncode == 0 and "nothing to roll back" in again.stderr


def test_nothing_to_roll_back_into_a_closed_pipe_is_still_exit_0(tmp_path):
    # the reader was gone before gpunode wrote anything: the --json document meets EPIPE
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {**os.environ, **_config(tmp_path)}
    env.pop("GPUNODE_STATE_DIR", None)
    try:
        proc = subprocess.run([sys.executable, "-m", "gpunode", "rollback", "--sysroot", str(make_tree(tmp_path / "r")),
                               "--state-dir", str(tmp_path / "state"), "--json"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT, timeout=60)
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "nothing to roll back" in proc.stderr and not any(word in proc.stderr for word in NOISE), proc.stderr


def test_a_plan_nobody_reads_is_not_confirmed(monkeypatch):
    # a live apply without --yes shows its plan first: when that meets EPIPE nothing is applied
    # and the exit is 3 (not confirmed), never rich's exit 1 ("done, some changes wait")
    from types import SimpleNamespace

    from rich.console import Console

    from gpunode.cli import apply_cmd

    read_end, write_end = os.pipe()
    os.close(read_end)
    dropped = []
    dead = os.fdopen(write_end, "w")
    monkeypatch.setattr(apply_cmd, "stdout_console", lambda: Console(file=dead, force_terminal=False))
    monkeypatch.setattr(apply_cmd, "discard_output", lambda: dropped.append(True))
    confirm = apply_cmd._confirmer(SimpleNamespace(facts=SimpleNamespace(hostname="node7")), "training", False)
    rows = [{"setting": "sysctl.vm.swappiness", "subject": "/proc/sys/vm/swappiness", "current": "60",
             "target": "10", "needs_root": True, "reboot_required": False, "gpu_reset_required": False,
             "status": "planned", "note": ""}]
    try:
        with pytest.raises(apply_cmd.NotConfirmed, match="its reader is gone"):
            confirm(rows)
    finally:
        with contextlib.suppress(BrokenPipeError):  # what rich left buffered; the descriptor is closed anyway
            dead.close()
    assert dropped == [True]
