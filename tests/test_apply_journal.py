"""The journal: durable before every write, readable past damage, honest about killed rollbacks."""

from __future__ import annotations

import json
import os
import stat

from apply_fixtures import apply_json, gpunode, make_tree, picture

from gpunode.host import sysroot_host
from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.sysroot import SysRoot
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import JournalWriter, StateDir
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import apply_profile


def test_append_fsyncs_the_journal_fd_after_writing_the_line(tmp_path, monkeypatch):
    events = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, data: events.append(("write", fd)) or real_write(fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", fd)) or real_fsync(fd))
    with JournalWriter(tmp_path / "j.jsonl") as journal:
        events.clear()
        journal.append({"type": "begin"})
        assert events == [("write", journal.fd), ("fsync", journal.fd)]


def test_each_change_is_durable_in_the_journal_before_it_is_written(tmp_path, monkeypatch):
    """Fails if the journal's fsync is removed or moved after the write of the value."""
    log = []
    real_fsync = os.fsync

    def fsync(fd):
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = "?"
        if name.endswith(".jsonl"):
            log.append(("journal-fsync", open(name).read().count('"type": "change"')))
        return real_fsync(fd)

    class Logged(SysRoot):
        def write(self, path, data):
            log.append(("knob", path))
            super().write(path, data)

    monkeypatch.setattr(os, "fsync", fsync)
    root = make_tree(tmp_path / "root")
    host = sysroot_host(root)
    host.sys = Logged(root)
    profile = load_profile("training")
    out = apply_profile(ApplyEnv(host=host, gpu=NoGpuControl("none")), profile,
                        select_settings(profile, ["sysctl.vm.*", "sysctl.kernel.*"]), StateDir(tmp_path / "state"),
                        persist=False)
    assert out.result == "applied"
    knobs = [i for i, e in enumerate(log) if e[0] == "knob"]
    assert len(knobs) >= 2
    for k, i in enumerate(knobs, 1):  # the k-th write comes after an fsync of a journal holding k changes
        synced = [e for e in log[:i] if e[0] == "journal-fsync"]
        assert synced and synced[-1][1] >= k, log


def _applied(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*,limits.*")
    assert rc == 0, doc
    return root, state, before, state / "applies" / f"{doc['id']}.jsonl"


def test_a_corrupt_line_is_quarantined_and_blocks_nothing(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    lines = journal.read_text().splitlines()
    lines.insert(2, '{"type": "done", "seq"')  # damaged in the middle (a disk, an editor)
    lines.insert(3, json.dumps({"type": "change", "seq": 99}))  # a line missing a field
    journal.write_text("\n".join(lines) + "\n")

    hist = gpunode("history", "--state-dir", str(state), "--json")
    assert hist.returncode == 0, hist.stderr
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stderr
    assert "could not be read; moved to" in rb.stderr and "line(s) 3 (not JSON), 4 (KeyError" in rb.stderr
    assert picture(root) == before
    quarantine = state / "quarantine" / journal.name
    assert stat.S_IMODE(quarantine.stat().st_mode) == 0o600
    assert stat.S_IMODE(quarantine.parent.stat().st_mode) == 0o700
    moved = [json.loads(line) for line in quarantine.read_text().splitlines()]
    assert [(m["line"], m["text"]) for m in moved] == [(3, '{"type": "done", "seq"'),
                                                      (4, json.dumps({"type": "change", "seq": 99}))]
    assert '"seq"\n' not in journal.read_text() and all(json.loads(x) for x in journal.read_text().splitlines())
    again = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*")
    assert again.returncode == 0, again.stderr


def test_a_torn_last_line_is_moved_aside_before_the_next_append(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    with open(journal, "a") as fh:
        fh.write('{"type": "rollback", "ti')  # a kill inside the journal write itself
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stderr
    assert picture(root) == before
    record = StateDir(state).load(journal.stem)
    assert record.bad_lines == [] and record.status == "rolled-back"


def test_a_killed_rollback_is_not_shown_as_applied(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    with open(journal, "a") as fh:  # what a rollback killed after its first restore leaves
        fh.write(json.dumps({"type": "rollback", "time": "t"}) + "\n")
    record = StateDir(state).load(journal.stem)
    assert record.status == "rollback-interrupted" and record.needs_rollback and record.unfinished
    hist = json.loads(gpunode("history", "--state-dir", str(state), "--json").stdout)
    assert hist["applies"][0]["status"] == "rollback-interrupted"
    refused = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*")
    assert refused.returncode == 3 and "before its rollback finished" in refused.stderr
    assert f"gpunode rollback --id {journal.stem} --sysroot {root} --state-dir {state}" in refused.stderr
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert rb.returncode == 0, rb.stderr
    assert picture(root) == before
    assert StateDir(state).load(journal.stem).status == "rolled-back"


def test_unreadable_state_dir_is_one_line(tmp_path):
    state = tmp_path / "state"
    (state / "applies").mkdir(parents=True)
    (state / "applies" / "x.jsonl").mkdir()  # a directory where a journal should be
    proc = gpunode("rollback", "--sysroot", str(make_tree(tmp_path / "root")), "--state-dir", str(state))
    assert proc.returncode in (2, 3) and proc.stderr.startswith("gpunode: error:")
    assert proc.stderr.count("\n") == 1 and "x.jsonl" in proc.stderr


def test_a_rollback_killed_after_its_last_restore_finishes_cleanly(tmp_path):
    # limits.memlock creates the limits file and limits.nofile edits it: restoring both leaves
    # the file absent, which is neither "before" nor "after" of the nofile change alone
    root, state, before, journal = _applied(tmp_path)
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state)).returncode == 0
    lines = journal.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "rollback-end"
    journal.write_text("\n".join(lines[:-1]) + "\n")  # killed just before writing rollback-end
    assert StateDir(state).load(journal.stem).status == "rollback-interrupted"
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert {r["status"] for r in json.loads(rb.stdout)["restores"]} == {"restored"}
    assert picture(root) == before
