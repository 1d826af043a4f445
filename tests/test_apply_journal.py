"""The journal: durable before every write, readable past damage, honest about killed rollbacks."""

from __future__ import annotations

import json
import os
import stat

import pytest
from apply_fixtures import apply_json, gpunode, make_tree, picture

from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.seam import sysroot_host
from gpunode.host.sysroot import SysRoot
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import JournalError, JournalWriter, StateDir, parse_journal
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
    return root, state, before, StateDir(state, root).applies / f"{doc['id']}.jsonl"


def test_a_corrupt_line_is_quarantined_and_blocks_nothing(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    lines = journal.read_text().splitlines()
    lines.insert(2, '{"type": "done", "seq"')  # damaged in the middle (a disk, an editor)
    lines.insert(3, json.dumps({"type": "change", "seq": 99}))  # a line missing a field
    journal.write_text("\n".join(lines) + "\n")

    hist = gpunode("history", "--state-dir", str(state), "--sysroot", str(root), "--json")
    assert hist.returncode == 0, hist.stderr
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stderr
    assert "could not be read; moved to" in rb.stderr and "line(s) 3 (not JSON), 4 (KeyError" in rb.stderr
    assert picture(root) == before
    quarantine = StateDir(state, root).quarantine / journal.name
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
    record = StateDir(state, root).load(journal.stem)
    assert record.bad_lines == [] and record.status == "rolled-back"


def test_a_killed_rollback_is_not_shown_as_applied(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    with open(journal, "a") as fh:  # what a rollback killed after its first restore leaves
        fh.write(json.dumps({"type": "rollback", "time": "t"}) + "\n")
    record = StateDir(state, root).load(journal.stem)
    assert record.status == "rollback-interrupted" and record.needs_rollback and record.unfinished
    hist = json.loads(gpunode("history", "--state-dir", str(state), "--sysroot", str(root), "--json").stdout)
    assert hist["applies"][0]["status"] == "rollback-interrupted"
    refused = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*")
    assert refused.returncode == 3 and "before its rollback finished" in refused.stderr
    assert f"gpunode rollback --id {journal.stem} --sysroot {root} --state-dir {state}" in refused.stderr
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert rb.returncode == 0, rb.stderr
    assert picture(root) == before
    assert StateDir(state, root).load(journal.stem).status == "rolled-back"


def test_unreadable_state_dir_is_one_line(tmp_path):
    state, root = tmp_path / "state", make_tree(tmp_path / "root")
    StateDir(state, root).ensure()
    (StateDir(state, root).applies / "x.jsonl").mkdir()  # a directory where a journal should be
    proc = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert proc.returncode == 3 and proc.stderr.startswith("gpunode: error:")
    assert proc.stderr.count("\n") == 1 and "x.jsonl" in proc.stderr


def test_a_rollback_killed_after_its_last_restore_finishes_cleanly(tmp_path):
    # limits.memlock creates the limits file and limits.nofile edits it: restoring both leaves
    # the file absent, which is neither "before" nor "after" of the nofile change alone
    root, state, before, journal = _applied(tmp_path)
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state)).returncode == 0
    lines = journal.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "rollback-end"
    journal.write_text("\n".join(lines[:-1]) + "\n")  # killed just before writing rollback-end
    assert StateDir(state, root).load(journal.stem).status == "rollback-interrupted"
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert {r["status"] for r in json.loads(rb.stdout)["restores"]} == {"restored"}
    assert picture(root) == before


def _fd_name(fd):
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


def _record_os(monkeypatch, events):
    """os.open/write/fsync/close/replace as (call, path) events, paths read back from the fd."""
    real = {name: getattr(os, name) for name in ("open", "write", "fsync", "close", "replace")}

    def opened(path, *a, **kw):
        fd = real["open"](path, *a, **kw)
        events.append(("open", str(path)))
        return fd

    monkeypatch.setattr(os, "open", opened)
    monkeypatch.setattr(os, "write", lambda fd, data: events.append(("write", _fd_name(fd))) or real["write"](fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", _fd_name(fd))) or real["fsync"](fd))
    monkeypatch.setattr(os, "close", lambda fd: events.append(("close", _fd_name(fd))) or real["close"](fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real["replace"](a, b))


def test_a_new_journal_file_is_made_durable_in_its_directory_before_the_first_record(tmp_path, monkeypatch):
    """Fails if the directory fsync after creating the journal is dropped, or done only for an
    existing journal: a crash could lose the whole file, with every change recorded in it."""
    applies = tmp_path / "applies"
    applies.mkdir()
    path = applies / "a.jsonl"
    events = []
    _record_os(monkeypatch, events)
    with JournalWriter(path) as journal:
        journal.append({"type": "begin"})
    assert events == [("open", str(path)), ("open", str(applies)), ("fsync", str(applies)), ("close", str(applies)),
                      ("write", str(path)), ("fsync", str(path)), ("close", str(path))]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    events.clear()
    with JournalWriter(path) as journal:  # appending to an existing journal: its entry is already durable
        journal.append({"type": "rollback"})
    assert events == [("open", str(path)), ("write", str(path)), ("fsync", str(path)), ("close", str(path))]


def _damaged(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    path = state.applies / "20250101T000000Z-1.jsonl"
    good = [json.dumps({"type": "begin", "seq": 1}), json.dumps({"type": "end", "result": "applied"})]
    path.write_text(good[0] + "\n" + '{"type": "done", "seq"\n' + good[1] + "\n")
    return state, path, good


def test_quarantine_syncs_the_moved_lines_and_the_new_journal_before_replacing_it(tmp_path, monkeypatch):
    """Fails if the fsync of the rewritten journal (or its close) is dropped: a crash after the
    rename could leave an empty journal, every recorded change lost."""
    state, path, good = _damaged(tmp_path)
    tmp = str(path.with_name(f".{path.name}.gpunode.tmp"))
    quarantine = str(state.quarantine / path.name)
    fds_before = sorted(os.listdir("/proc/self/fd"))
    events = []
    _record_os(monkeypatch, events)
    record = state.load(path.stem, repair=True)
    monkeypatch.undo()
    assert record.bad_lines == [] and record.status == "applied"
    assert sorted(os.listdir("/proc/self/fd")) == fds_before  # no descriptor left open
    replace = events.index(("replace", str(path)))
    assert events.index(("fsync", quarantine)) < replace
    written = events.index(("write", tmp))
    assert events[written:replace] == [("write", tmp), ("fsync", tmp), ("close", tmp)]
    assert events[replace + 1:] == [("open", str(state.applies)), ("fsync", str(state.applies)),
                                    ("close", str(state.applies))]
    assert path.read_text() == "\n".join(good) + "\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_damaged_line_read_without_the_lock_is_reported_and_left_in_place(tmp_path):
    state, path, _ = _damaged(tmp_path)
    text = path.read_text()
    record = state.load(path.stem)
    assert [(n, why) for n, _, why in record.bad_lines] == [(2, "not JSON")]
    assert state.warnings == [f"journal {path}: line(s) 2 (not JSON) could not be read (the next apply or rollback "
                              f"moves them to {state.quarantine / path.name})"]
    assert path.read_text() == text and not state.quarantine.exists()


def test_an_apply_id_cannot_name_a_file_outside_the_applies_directory(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    (state.root / "x.jsonl").write_text(json.dumps({"type": "begin", "seq": 1}) + "\n")
    (state.applies / ".hidden.jsonl").write_text(json.dumps({"type": "begin", "seq": 1}) + "\n")
    (state.applies / ".jsonl").write_text(json.dumps({"type": "begin", "seq": 1}) + "\n")
    for bad in ("../x", ".hidden", ""):
        with pytest.raises(JournalError, match="not an apply id"):
            state.path_of(bad)


def test_only_journal_files_count_as_applies(tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    (state.applies / "20250101T000000Z-1.jsonl").write_text(json.dumps({"type": "begin", "seq": 1}) + "\n")
    (state.applies / "notes.txt").write_text("an operator's notes\n")
    (state.applies / ".20250101T000000Z-1.jsonl.gpunode.tmp").write_text("")
    (state.applies / ".half.jsonl").write_text("")
    assert state.ids() == ["20250101T000000Z-1"]
    assert [r.id for r in state.records()] == ["20250101T000000Z-1"]


def test_the_last_restore_record_of_a_change_decides_whether_it_is_back(tmp_path):
    def restore(seq, status):
        return json.dumps({"type": "restore", "seq": seq, "status": status})

    lines = [restore(1, "error"), restore(1, "restored"), restore(2, "restored"), restore(2, "left"),
             restore(3, "not-written"), restore(4, "restored"), restore(4, "error")]
    record = parse_journal("x", "\n".join(lines) + "\n")
    assert record.bad_lines == [] and record.restored == {1, 3}


def test_a_journal_whose_begin_line_was_lost_keeps_its_place_among_the_applies(tmp_path):
    """The newest apply's begin line damaged: it still sorts last (its number from its id), so a
    plain rollback undoes it first and the next apply gets a fresh number."""
    state = StateDir(tmp_path / "state").ensure()
    change = json.dumps({"type": "change", "seq": 1, "setting": "sysctl.vm.swappiness"})
    (state.applies / "20250101T000000Z-1.jsonl").write_text(json.dumps({"type": "begin", "seq": 1}) + "\n")
    (state.applies / "20250101T000100Z-2.jsonl").write_text("{not json\n" + change + "\n")
    records = state.records()
    assert [(r.id, r.seq) for r in records] == [("20250101T000000Z-1", 1), ("20250101T000100Z-2", 2)]
    assert state.next_seq() == 3
