"""Apply is a transaction against its own failures too: a journal record that cannot be
written (disk full, I/O error) and SIGINT/SIGTERM roll the batch back like a failed change,
say what was and was not restored (root and state dir named), and exit non-zero (3 as any
failed apply; 128 + the signal's number). Signals during a rollback wait for it. Faults come
from tests/testhooks (GPUNODE_TEST_JOURNAL_FAIL fails the journal's own os.write/os.fsync)."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading

import pytest
from apply_fixtures import apply_json, gpunode, make_tree, on_a_terminal, picture, with_test_hooks
from test_schemas import validate

from gpunode.tune.execute import StopSignals
from gpunode.tune.journal import JournalWriteError, JournalWriter, StateDir, parse_journal

ONLY = "sysctl.vm.*,sysctl.kernel.*,sysfs.thp.*,limits.*"  # 9 changes: 1 begin + 9 x (change, done) + 1 end
JOURNAL_WRITES = 20


def _apply(root, state, *extra, env=None):
    return gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", ONLY, *extra, env=env)


def _history(state) -> list[dict]:
    """The applies as their journals say, newest first (wherever below the state dir a
    --sysroot apply keeps them)."""
    return [r.summary() for d in sorted(state.rglob("applies")) for r in reversed(StateDir(d.parent).records())]


def _settles_and_works_again(root, state, before) -> None:
    """Afterwards (the disk has room again) rollback leaves the tree as it was and a new apply runs."""
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert picture(root) == before
    assert _apply(root, state).returncode == 0


# N: the journal write that fails first; 2 = change 1's record, 6 = change 3's, 9 = done of change 4,
# 19 = done of the last change, 20 = the end record (everything was written)
@pytest.mark.parametrize("fault", ["ENOSPC:2", "ENOSPC:6", "ENOSPC:9", "ENOSPC:19", f"ENOSPC:{JOURNAL_WRITES}",
                                   "EIO:7", "EIO:12:once"])
def test_a_journal_write_that_fails_rolls_the_batch_back(tmp_path, fault):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    proc = _apply(root, state, env={"GPUNODE_TEST_JOURNAL_FAIL": fault})
    assert proc.returncode == 3, proc.stderr
    assert picture(root) == before  # restored by the apply itself, journal or not
    lines = proc.stderr.splitlines()
    why = "No space left on device" if fault.startswith("ENOSPC") else "Input/output error"
    assert lines[0].startswith("gpunode: error: apply failed and was rolled back: journal ")
    assert f"cannot write: {why}" in lines[0]
    assert f"NOT restored under {root} (state dir {state}" in lines[1]
    n = int(fault.split(":")[1])
    changed = (n - 1) // 2  # changes written before the failing record
    assert lines[1].startswith(f"gpunode: {changed} change(s) restored, 0 found unchanged, 0 NOT restored")
    if fault.endswith("once"):  # the fault passed: the rollback is journaled, the apply settled
        assert len(lines) == 2 and _history(state)[0]["status"] == "failed"
    elif changed:  # the disk stayed full: the journal says what it could not record, and how to settle it
        assert f"could not record {changed + 1} record(s)" in lines[2] and why in lines[2]
        assert f"gpunode rollback --id {_history(state)[0]['id']} --sysroot {root} --state-dir {state}" in lines[3]
        assert "the host is already restored" in lines[3]
    _settles_and_works_again(root, state, before)


def test_journal_failure_json_says_what_went_unrecorded(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", ONLY,
                         env={"GPUNODE_TEST_JOURNAL_FAIL": "ENOSPC:8"})
    validate(doc)
    assert rc == 3 and doc["exit_code"] == 3 and doc["result"] == "failed"
    assert [c["status"] for c in doc["changes"]][:5] == ["rolled-back"] * 3 + ["not-run"] * 2
    assert [r["status"] for r in doc["rolled_back"]] == ["restored"] * 3
    assert doc["journal_unrecorded"]["records"][-1] == "end of the apply"
    assert "No space left on device" in doc["journal_unrecorded"]["reason"]
    assert picture(root) == before


def test_a_journal_that_cannot_begin_changes_nothing(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    proc = _apply(root, state, env={"GPUNODE_TEST_JOURNAL_FAIL": "ENOSPC:1"})
    assert proc.returncode == 3
    assert proc.stderr.startswith("gpunode: error: journal ") and proc.stderr.count("\n") == 1
    assert f"No space left on device; nothing changed on {root} (state dir {state}" in proc.stderr
    assert picture(root) == before
    assert _apply(root, state).returncode == 0


def test_a_failed_append_cuts_its_partial_line(tmp_path, monkeypatch):
    # a disk that fills in the middle of a record: the part written is cut off again, so the
    # next record (once there is room) is not glued to a torn line and the journal reads whole
    path = tmp_path / "j.jsonl"
    writer = JournalWriter(path)
    writer.append({"type": "begin", "seq": 1})
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    with pytest.raises(JournalWriteError, match="cannot write: short write"):
        writer.append({"type": "end", "result": "applied"})
    monkeypatch.setattr(os, "write", real_write)
    writer.append({"type": "end", "result": "failed"})
    writer.close()
    record = parse_journal("j", path.read_text())
    assert record.bad_lines == [] and record.end == {"type": "end", "result": "failed"}


@pytest.mark.parametrize(("sig", "point", "restored"), [
    ("TERM", "journal:4", 4),  # while change 4 is written: it is finished (and verified), then undone
    ("INT", "write:1", 1),
    ("TERM", "write:9", 9),  # after the last write: nothing is kept
    ("HUP", "write:5", 5),  # `kill -HUP`, a multiplexer closing its window: stderr still there
])
def test_a_signal_during_apply_rolls_the_batch_back(tmp_path, sig, point, restored):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    signum = getattr(signal, "SIG" + sig)
    env = {"GPUNODE_TEST_CRASH_AFTER": point, "GPUNODE_TEST_CRASH_SIGNAL": sig}
    proc = _apply(root, state, "--json", env=env)
    assert proc.returncode == 128 + signum, proc.stderr
    assert picture(root) == before
    doc = json.loads(proc.stdout)
    validate(doc)
    assert doc["result"] == "interrupted" and doc["signal"] == f"SIG{sig}" and doc["exit_code"] == 128 + signum
    assert [r["status"] for r in doc["rolled_back"]] == ["restored"] * restored
    lines = proc.stderr.splitlines()
    assert lines[0] == f"gpunode: SIG{sig}: stopping after the current step, then undoing what this run changed"
    assert lines[1].startswith(f"gpunode: error: apply interrupted by SIG{sig} and was rolled back: stopped by SIG{sig}")
    assert lines[2].startswith(f"gpunode: {restored} change(s) restored, 0 found unchanged, 0 NOT restored "
                               f"under {root} (state dir {state}")
    assert _history(state)[0]["status"] == "failed"  # settled: nothing left for rollback
    nothing = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert nothing.returncode == 0 and "nothing to roll back" in nothing.stderr
    assert _apply(root, state).returncode == 0


@pytest.mark.parametrize("syslog_listens", [True, False])
def test_a_closed_terminal_rolls_the_batch_back_and_the_trail_says_so(tmp_path, syslog_listens):
    # The most common way an operator's apply dies: the ssh session closes. The apply runs on a
    # terminal of its own, stops itself (SIGSTOP) right after its 4th write, and the terminal
    # closes: the kernel sends SIGHUP (then SIGCONT) and every later write to it fails with EIO.
    # The batch is rolled back, the exit is 129, and the syslog line says what happened (the
    # terminal that would have shown the message is gone). A syslog that refuses the line makes
    # a warning, which must not turn the exit into a crash on the dead terminal either.
    root, state, log = make_tree(tmp_path / "root"), tmp_path / "state", tmp_path / "log.sock"
    before = picture(root)
    (tmp_path / "config.yaml").write_text(f"audit_log: {log}\n")
    env = {**os.environ, "GPUNODE_CONFIG": str(tmp_path / "config.yaml"), "COLUMNS": "200",
           "GPUNODE_TEST_CRASH_AFTER": "write:4", "GPUNODE_TEST_CRASH_SIGNAL": "STOP",
           "PYTHONPATH": with_test_hooks(os.environ.get("PYTHONPATH"))}
    env.pop("GPUNODE_STATE_DIR", None)
    argv = [sys.executable, "-m", "gpunode", "apply", "--sysroot", str(root), "--state-dir", str(state), "--only", ONLY]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(log))
        syslog.settimeout(10)
        if not syslog_listens:
            syslog.close()  # the socket file stays: sending to it is refused
        proc, terminal = on_a_terminal(argv, env)
        try:
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            assert os.WIFSTOPPED(status), status
        finally:
            os.close(terminal)  # the ssh session closes
        assert proc.wait(timeout=60) == 128 + signal.SIGHUP
        assert picture(root) == before
        line = syslog.recv(4096).decode() if syslog_listens else ""
    if not syslog_listens:
        return
    assert " apply id=" in line and "result=interrupted" in line
    assert "reason='stopped by SIGHUP before change 5 of 9'" in line
    assert _history(state)[0]["status"] == "failed"  # settled: nothing left for rollback
    nothing = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert nothing.returncode == 0 and "nothing to roll back" in nothing.stderr


@pytest.mark.parametrize("syslog_listens", [True, False])
def test_a_closed_terminal_waits_for_gpunode_rollback_and_the_trail_says_so(tmp_path, syslog_listens):
    # gpunode rollback on an operator's terminal stops itself (SIGSTOP) at its first undo and
    # the terminal closes: SIGHUP waits for the restores, the report to the dead terminal (EIO)
    # is dropped, the exit is the rollback's own (0: all restored; a signal that only waited
    # does not change it, as with Ctrl-C) and the syslog line names the SIGHUP.
    root, state, log = make_tree(tmp_path / "root"), tmp_path / "state", tmp_path / "log.sock"
    before = picture(root)
    assert _apply(root, state).returncode == 0
    (tmp_path / "config.yaml").write_text(f"audit_log: {log}\n")
    env = {**os.environ, "GPUNODE_CONFIG": str(tmp_path / "config.yaml"), "COLUMNS": "200",
           "GPUNODE_TEST_SIGNAL_IN_UNDO": "STOP", "PYTHONPATH": with_test_hooks(os.environ.get("PYTHONPATH"))}
    env.pop("GPUNODE_STATE_DIR", None)
    argv = [sys.executable, "-m", "gpunode", "rollback", "--sysroot", str(root), "--state-dir", str(state)]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(log))
        syslog.settimeout(10)
        if not syslog_listens:
            syslog.close()  # the socket file stays: sending to it is refused (a warning to print)
        proc, terminal = on_a_terminal(argv, env)
        try:
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            assert os.WIFSTOPPED(status), status
        finally:
            os.close(terminal)  # the ssh session closes: SIGHUP, SIGCONT
        while True:  # the hook stops again at each later undo
            _, status = os.waitpid(proc.pid, os.WUNTRACED)
            if not os.WIFSTOPPED(status):
                break
            os.kill(proc.pid, signal.SIGCONT)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here by waitpid, not by Popen
        assert proc.returncode == 0
        assert picture(root) == before
        line = syslog.recv(4096).decode() if syslog_listens else ""
    assert _history(state)[0]["status"] == "rolled-back"
    if syslog_listens:
        assert " rollback id=" in line and "restored=9 left=0 signal=SIGHUP" in line


def test_signals_during_the_batch_rollback_wait_for_it(tmp_path):
    # SIGINT stops the batch after change 5; every undo of the rollback is then hit by SIGTERM
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    env = {"GPUNODE_TEST_CRASH_AFTER": "write:5", "GPUNODE_TEST_CRASH_SIGNAL": "INT",
           "GPUNODE_TEST_SIGNAL_IN_UNDO": "TERM"}
    proc = _apply(root, state, env=env)
    assert proc.returncode == 130, proc.stderr
    assert picture(root) == before
    assert proc.stderr.count("gpunode: SIGTERM: the rollback finishes first") == 5
    assert "5 change(s) restored" in proc.stderr


def test_signals_during_the_rollback_of_a_failed_change_wait_for_it(tmp_path):
    # /etc/sysctl.d is a file: change 6 fails for real; SIGTERM at every undo of the rollback
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    (root / "etc/sysctl.d/99-site.conf").unlink()
    (root / "etc/sysctl.d").rmdir()
    (root / "etc/sysctl.d").write_text("not a directory\n")
    before = picture(root)
    proc = _apply(root, state, env={"GPUNODE_TEST_SIGNAL_IN_UNDO": "TERM"})
    assert proc.returncode == 3, proc.stderr
    assert picture(root) == before
    assert "persist.sysctl" in proc.stderr and "5 change(s) restored, 1 found unchanged" in proc.stderr
    assert proc.stderr.count("gpunode: SIGTERM: the rollback finishes first") == 5


def test_signals_during_gpunode_rollback_wait_for_it(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    assert _apply(root, state).returncode == 0
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json",
                 env={"GPUNODE_TEST_SIGNAL_IN_UNDO": "INT"})
    assert rb.returncode == 0, rb.stderr
    assert json.loads(rb.stdout)["result"] == "complete"
    assert picture(root) == before and _history(state)[0]["status"] == "rolled-back"


def test_stop_signals_puts_the_handlers_back_and_leaves_ignored_signals_ignored():
    previous_int, previous_term = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    # Python's own SIGINT handler, whatever started the tests (`cmd &` in a script ignores SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as nohup or a service manager may start gpunode
    try:
        with StopSignals() as stop:
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # noted, not a KeyboardInterrupt
            assert stop.signum == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def test_stop_signals_outside_the_main_thread_installs_nothing():
    seen = []

    def other():
        with StopSignals() as stop:
            seen.append(stop.signum)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [None]


# The rollback of a 9-change apply writes 11 records: its start, 9 restores, its end. N: the
# first that fails; ENOSPC leaves the disk full from there on, EIO fails fsync, :once passes.
@pytest.mark.parametrize(("fault", "unrecorded"), [("ENOSPC:1", 11), ("ENOSPC:3", 9), ("EIO:6", 6),
                                                   ("ENOSPC:11", 1), ("ENOSPC:5:once", 1)])
def test_a_rollback_whose_journal_fails_goes_on_restoring_and_says_so(tmp_path, fault, unrecorded):
    # Stopping at the failed record would leave the host half-restored (half a profile: a state
    # nobody asked for) to keep a record; the restores go on, exit 3 says the journal is not
    # settled, and a rollback run once the disk has room settles it.
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    assert _apply(root, state).returncode == 0
    apply_id = _history(state)[0]["id"]
    full = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json",
                   env={"GPUNODE_TEST_JOURNAL_FAIL": fault})
    assert full.returncode == 3, full.stderr
    assert picture(root) == before  # every change restored, journal or not
    doc = json.loads(full.stdout)
    validate(doc)
    assert doc["exit_code"] == 3 and [r["status"] for r in doc["restores"]] == ["restored"] * 9
    assert doc["result"] == "complete"  # every change is back; the journal's lack is journal_unrecorded
    assert len(doc["journal_unrecorded"]["records"]) == unrecorded
    why = "No space left on device" if fault.startswith("ENOSPC") else "Input/output error"
    assert why in doc["journal_unrecorded"]["reason"]
    lines = full.stderr.splitlines()
    assert lines[0].startswith(f"gpunode: error: the journal could not record {unrecorded} record(s) of this "
                               f"rollback (journal ")
    assert why in lines[0] and doc["journal_unrecorded"]["records"][-1] in lines[0]
    assert lines[1] == (f"gpunode: the restores went on: 9 change(s) restored, 0 found unchanged, 0 NOT restored "
                        f"under {root} (state dir {state})")
    assert f"`gpunode rollback --id {apply_id} --sysroot {root} --state-dir {state}` once" in lines[2]
    assert len(lines) == 3
    again = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert again.returncode == 0, again.stderr  # settled (or nothing left to settle)
    assert picture(root) == before and _history(state)[0]["status"] in ("rolled-back", "failed")
    assert _apply(root, state).returncode == 0


def test_a_rollback_whose_journal_cannot_begin_restores_nothing(tmp_path, monkeypatch):
    # a journal write that fails before the first restore (the repair of a torn line) stops the
    # rollback with nothing restored, and says so
    from gpunode.tune import journal

    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    assert _apply(root, state).returncode == 0
    applied = picture(root)

    def full(*_args, **_kwargs):
        raise journal.JournalWriteError("journal x: cannot write: No space left on device")

    monkeypatch.setattr(journal.StateDir, "append_to", full)
    from gpunode.tune.apply_case import Stopped, prepare_rollback, run_rollback

    job = prepare_rollback(None, str(state), root)
    with pytest.raises(Stopped, match=f"nothing was restored \\(root {root}, state dir "):
        run_rollback(job)
    assert picture(root) == applied


def test_a_shared_file_someone_else_changed_is_still_left_alone(tmp_path):
    # limits.memlock and limits.nofile both write limits.d/90-gpunode.conf: a rollback that
    # finds neither gpunode's content nor the file before the batch leaves both alone (the
    # check that lets a later change pass when the file is back as before the batch must not
    # hide someone else's edit)
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    assert _apply(root, state).returncode == 0
    (root / "etc/security/limits.d/90-gpunode.conf").write_text("*  soft  nofile  2048\n")
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 1, rb.stderr
    statuses = {r["setting"]: r["status"] for r in json.loads(rb.stdout)["restores"]}
    assert statuses["limits.nofile"] == statuses["limits.memlock"] == "left"


def _in_process(tmp_path, sysroot_class=None):
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.host.seam import sysroot_host
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.plan import select_settings
    from gpunode.tune.profiles import load_profile

    root = make_tree(tmp_path / "root")
    host = sysroot_host(root)
    if sysroot_class is not None:
        host.sys = sysroot_class(root)
    profile = load_profile("training")
    settings = select_settings(profile, ["sysfs.thp.*", "sysctl.vm.swappiness", "sysctl.kernel.*"])
    return root, ApplyEnv(host=host, gpu=NoGpuControl("none")), profile, settings


def test_an_unexpected_error_in_a_write_still_undoes_the_batch_including_that_write(tmp_path):
    from gpunode.host.sysroot import SysRoot
    from gpunode.tune.session import apply_profile

    class Buggy(SysRoot):  # writes, then fails as a bug would
        def write(self, path, data):
            super().write(path, data)
            if path == "/proc/sys/kernel/numa_balancing" and data == "0\n":
                raise TypeError("a bug")

    root, env, profile, settings = _in_process(tmp_path, Buggy)
    before = picture(root)
    outcome = apply_profile(env, profile, settings, StateDir(tmp_path / "state"), persist=False)
    assert outcome.result == "failed" and outcome.exit_code == 3
    assert outcome.reason.endswith("internal error: TypeError: a bug")
    assert [r.status for r in outcome.restored] == ["restored"] * 3  # the half-done write too
    assert picture(root) == before


def test_a_change_the_audit_disagrees_with_after_its_write_is_undone_once(tmp_path, monkeypatch):
    # the write went through (journaled done) but audit's own judgement disagrees: the batch is
    # undone and each change is listed once in what was restored (never twice for the failing one)
    from gpunode.tune import execute
    from gpunode.tune.actions import ApplyError
    from gpunode.tune.session import apply_profile

    verify = execute._verify_setting

    def disagree(env, plan, setting_id, subjects):
        if setting_id == "sysctl.kernel.numa_balancing":
            raise ApplyError("after writing, the audit still reads /proc/sys/kernel/numa_balancing = 1 (wanted 0)")
        verify(env, plan, setting_id, subjects)

    monkeypatch.setattr(execute, "_verify_setting", disagree)
    root, env, profile, settings = _in_process(tmp_path)
    before = picture(root)
    outcome = apply_profile(env, profile, settings, StateDir(tmp_path / "state"), persist=False)
    assert outcome.result == "failed" and outcome.reason.endswith("the audit still reads "
                                                                  "/proc/sys/kernel/numa_balancing = 1 (wanted 0)")
    assert [(r.seq, r.status) for r in outcome.restored] == [(3, "restored"), (2, "restored"), (1, "restored")]
    assert picture(root) == before


def test_an_unexpected_error_before_a_write_still_undoes_the_batch(tmp_path, monkeypatch):
    from gpunode.tune import actions
    from gpunode.tune.session import apply_profile

    prepare, calls = actions.prepare, []

    def failing_third(env, change):
        calls.append(change)
        if len(calls) == 3:
            raise KeyError("a bug")
        prepare(env, change)

    monkeypatch.setattr(actions, "prepare", failing_third)
    root, env, profile, settings = _in_process(tmp_path)
    before = picture(root)
    outcome = apply_profile(env, profile, settings, StateDir(tmp_path / "state"), persist=False)
    assert outcome.result == "failed" and "internal error: KeyError" in outcome.reason
    assert "(at change 3 of 3)" in outcome.reason
    assert [r.status for r in outcome.restored] == ["restored"] * 2
    assert picture(root) == before
    assert [r.status for r in StateDir(tmp_path / "state").records()] == ["failed"]
