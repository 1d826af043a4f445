"""The state dir is input: tried as an attacker would (another uid's journal, a symlinked state
dir, a FIFO in applies/, numbers and types a journal should never hold, a world-writable
sticky directory). Each is refused or quarantined with one line, never obeyed, repaired or hung on."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess

import pytest
from apply_fixtures import apply_json, gpunode, make_tree, picture

import testkit
from gpunode.exits import USAGE_EXIT
from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.seam import sysroot_host
from gpunode.parsed_cache import ParsedCache
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import Refused, apply_profile, rollback

NOBODY = 65534
HANG_S = 30  # a FIFO read would block forever: the test fails at this bound instead of hanging


def one_error_line(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == USAGE_EXIT, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.startswith("gpunode: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr


def _applied(tmp_path, only="sysctl.vm.*"):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", only, "--no-persist")
    assert rc == 0, doc
    return root, state, before, next(state.rglob(f"{doc['id']}.jsonl"))  # below sysroots/<key>/


def _rollback(root, state, *extra):
    return gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), *extra, timeout=HANG_S)


def _history(state, *extra):
    return gpunode("history", "--state-dir", str(state), *extra, timeout=HANG_S)


# --- the state directory itself ---------------------------------------------------------------

def test_a_world_writable_sticky_state_dir_is_refused_and_keeps_its_mode(tmp_path):
    """`GPUNODE_STATE_DIR=/tmp gpunode rollback` took /tmp's sticky bit away (ensure_dir chmod'ed it)."""
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    root = make_tree(tmp_path / "root")
    before = picture(root)
    for proc in (_rollback(root, sticky),
                 _history(sticky),
                 gpunode("apply", "--sysroot", str(root), "--state-dir", str(sticky), "--only", "sysctl.vm.*")):
        one_error_line(proc, str(sticky), "writable by group and others (mode 1777)")
    assert stat.S_IMODE(sticky.stat().st_mode) == 0o1777
    assert os.listdir(sticky) == [] and picture(root) == before


def test_an_existing_state_dir_keeps_its_mode(tmp_path):
    """A 0750 directory root made is trusted as it is: gpunode never changes a directory's mode."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o750)
    root = make_tree(tmp_path / "root")
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*", "--no-persist")
    assert rc == 0, doc
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
    assert stat.S_IMODE(StateDir(state, root).applies.stat().st_mode) == 0o700  # made by gpunode


def test_a_symlinked_state_dir_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "state"
    link.symlink_to(real)
    root = make_tree(tmp_path / "root")
    for proc in (_rollback(root, link), _history(link),
                 gpunode("apply", "--sysroot", str(root), "--state-dir", str(link), "--only", "sysctl.vm.*")):
        one_error_line(proc, f"{link}: a symlink")
    assert os.listdir(real) == []


def test_a_group_writable_applies_dir_is_refused(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    journal.parent.chmod(0o770)
    one_error_line(_rollback(root, state), str(journal.parent), "writable by group (mode 0770)")
    assert stat.S_IMODE(journal.parent.stat().st_mode) == 0o770


def test_the_state_lock_is_never_taken_through_a_link(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep\n")
    (state / "lock").symlink_to(target)
    root = make_tree(tmp_path / "root")
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*")
    one_error_line(proc, f"{state / 'lock'}: a symlink")
    assert target.read_text() == "keep\n"


@pytest.fixture
def as_root():
    testkit.require(os.geteuid() == 0, "needs root to give a file to another uid")


def test_a_state_dir_of_another_uid_is_refused(tmp_path, as_root):
    root, state, before, journal = _applied(tmp_path)
    os.chown(state, NOBODY, NOBODY)
    for proc in (_rollback(root, state), _history(state)):
        one_error_line(proc, str(state), f"owned by uid {NOBODY}, not by uid 0")
    assert picture(root) != before  # not rolled back


def test_a_journal_of_another_uid_is_not_obeyed(tmp_path, as_root):
    """Root wrote a setuid-root file from a journal another user owned."""
    root, state, before, journal = _applied(tmp_path)
    changed = picture(root)
    _forge_setuid_restore(journal, "/usr/local/bin/evil")
    os.chown(journal, NOBODY, NOBODY)
    one_error_line(_rollback(root, state), f"{journal}: owned by uid {NOBODY}")
    one_error_line(_history(state, "--sysroot", str(root)), f"owned by uid {NOBODY}")
    assert picture(root) == changed and not (root / "usr/local/bin/evil").exists()


def test_a_group_or_world_writable_journal_is_refused(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    changed = picture(root)
    journal.chmod(0o602)
    one_error_line(_rollback(root, state), f"{journal}: writable by others (mode 0602)")
    assert picture(root) == changed and stat.S_IMODE(journal.stat().st_mode) == 0o602


def test_a_symlinked_journal_is_refused(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    moved = tmp_path / "moved.jsonl"
    journal.rename(moved)
    journal.symlink_to(moved)
    one_error_line(_rollback(root, state), f"{journal}: a symlink")
    one_error_line(_history(state, "--sysroot", str(root)), "a symlink")


def test_a_fifo_in_applies_is_refused_without_blocking(tmp_path):
    """rollback and history opened it for reading and waited forever for a writer."""
    root, state, before, journal = _applied(tmp_path)
    fifo = journal.with_name("20990101T000000Z-9.jsonl")
    os.mkfifo(fifo, 0o600)
    one_error_line(_rollback(root, state), f"{fifo}: not a regular file (a FIFO)")
    one_error_line(_history(state, "--sysroot", str(root)), "a FIFO")


def test_the_guard_judges_the_opened_fd(tmp_path):
    from gpunode.state_dir import UntrustedState, check_dir, open_file

    (tmp_path / "f").write_text("x")
    os.mkfifo(tmp_path / "p")
    (tmp_path / "d").mkdir()
    for name, why in (("p", "a FIFO"), ("d", "a directory")):
        with pytest.raises(UntrustedState, match=why):
            open_file(tmp_path / name)
    with pytest.raises(UntrustedState, match="not a directory"):
        check_dir(tmp_path / "f")
    assert check_dir(tmp_path / "missing") is False
    os.close(open_file(tmp_path / "f"))


# --- what a journal line may hold ---------------------------------------------------------------

def _lines(journal) -> list[dict]:
    return [json.loads(line) for line in journal.read_text().splitlines()]


def _write(journal, records: list) -> None:
    journal.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def test_a_non_finite_number_is_quarantined_not_a_traceback(tmp_path):
    """`"seq": 1e400` read as inf: int(inf) raised OverflowError, which history printed as a traceback."""
    state = StateDir(tmp_path / "state").ensure()
    begin = {"type": "begin", "seq": 1, "id": "20250101T000000Z-1", "root": "/", "profile": "training"}
    _write(state.applies / "20250101T000000Z-1.jsonl", [begin, '{"type": "done", "seq": 1e400, "result": null}'])
    hist = _history(state.root, "--json")
    assert hist.returncode == 0 and "Traceback" not in hist.stderr, hist.stderr
    assert json.loads(hist.stdout)["applies"][0]["damaged_lines"] == 1
    root, state_dir, before, journal = _applied(tmp_path)
    records = _lines(journal)
    done = next(i for i, r in enumerate(records) if r["type"] == "done")
    records[done] = json.dumps(records[done]).replace('"seq": 1', '"seq": 1e400')
    _write(journal, records)
    rb = _rollback(root, state_dir)
    assert rb.returncode == 0, rb.stderr
    assert f"line(s) {done + 1} (InputError" in rb.stderr and "too large to be finite" in rb.stderr
    assert picture(root) == before


@pytest.mark.parametrize("field,value", [
    ("raw_before", 7),  # the knob's bytes as a number: sys.write crashed halfway
    ("created_dirs", "/etc"),
    ("post", [["systemctl", 5]]),
    ("needs_root", "yes"),
])
def test_a_wrong_typed_field_is_quarantined_and_the_rollback_finishes(tmp_path, field, value):
    """A TypeError inside a restore left the apply `rollback-interrupted` for good: every later
    rollback crashed the same way and every apply refused."""
    root, state, before, journal = _applied(tmp_path, "sysctl.vm.*,sysfs.thp.*")
    records = _lines(journal)
    first = next(r for r in records if r["type"] == "change")
    target = first["change"]
    if field in ("raw_before", "created_dirs"):
        target["extra"][field] = value
    else:
        target[field] = value
    _write(journal, records)
    rb = _rollback(root, state, "--json")
    assert rb.returncode == 0 and "Traceback" not in rb.stderr, rb.stderr
    assert f"line(s) {records.index(first) + 1} (TypeError" in rb.stderr
    # the damaged change is set aside (its value stays as gpunode wrote it), every other is back
    left = {first["change"]["target"]}
    now, was = picture(root), before
    assert {p for p in was if now.get(p) != was[p]} == left
    assert StateDir(state, root).load(journal.stem).status == "rolled-back"
    again = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*")
    assert again.returncode in (0, 1), again.stderr  # not refused as "interrupted"


@pytest.mark.parametrize("bad", ['{"type": "done", "seq": true}', '{"type": "done", "seq": "1"}',
                                 '{"type": "done", "seq": 1.5}', '{"type": "end", "result": 3}',
                                 '{"type": "restore", "seq": 1, "status": "maybe"}',
                                 '{"type": "begin", "seq": 1, "root": ["/"]}', '[1, 2]',
                                 '{"type": "done", "seq": 1, "seq": 2}', '{"type": "rollback", "time": NaN}',
                                 '{"type": "done", "seq": 1e400}', '{"type": "failed", "seq": 1, "reason": -1e999}'])
def test_records_of_the_wrong_shape_are_bad_lines(bad):
    from gpunode.tune.journal import parse_journal

    record = parse_journal("x-1", bad + "\n")
    assert len(record.bad_lines) == 1 and record.restored == set() and record.done == {}


def _forge_setuid_restore(journal, path: str, mode=0o4755) -> None:
    """A change whose rollback writes `path` back as it 'was': a root-owned setuid program."""
    records = _lines(journal)
    change = {"setting_id": "persist.x", "subject": path, "action": "file", "target": path,
              "before": {"exists": True, "data": base64.b64encode(b"#!/bin/sh\nid\n").decode(), "mode": mode,
                         "link": None},
              "after": {"exists": False, "data": None, "mode": None, "link": None}, "extra": {"created_dirs": []}}
    records.insert(1, {"type": "change", "seq": 99, "change": change})
    _write(journal, records)


def test_a_restored_file_never_gets_setuid_setgid_or_sticky_bits(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    (root / "usr/local/bin").mkdir(parents=True)
    _forge_setuid_restore(journal, "/usr/local/bin/evil", mode=0o7755)
    rb = _rollback(root, state, "--json")
    assert rb.returncode == 0, rb.stderr
    assert stat.S_IMODE((root / "usr/local/bin/evil").stat().st_mode) == 0o755


@pytest.mark.parametrize("mode", [0o10755, -1, "0755", True, None, 4.5])
def test_a_recorded_mode_that_is_no_file_mode_is_quarantined(tmp_path, mode):
    root, state, before, journal = _applied(tmp_path)
    (root / "usr/local/bin").mkdir(parents=True)
    _forge_setuid_restore(journal, "/usr/local/bin/evil", mode=mode)
    rb = _rollback(root, state)
    assert rb.returncode == 0 and "line(s) 2 (" in rb.stderr, rb.stderr
    assert not (root / "usr/local/bin/evil").exists() and picture(root) == {**before, "/usr": ("dir",),
                                                                              "/usr/local": ("dir",),
                                                                              "/usr/local/bin": ("dir",)}


# --- the wrong root -----------------------------------------------------------------------------

def _in_process(tmp_path):
    """An apply on root A journaled in a state dir without --sysroot's separation (as journals
    made before it were), its begin line then lost; and a second root B."""
    a, b = make_tree(tmp_path / "a"), make_tree(tmp_path / "b")
    before_a, before_b = picture(a), picture(b)
    state = StateDir(tmp_path / "state")
    profile = load_profile("training")
    out = apply_profile(ApplyEnv(host=sysroot_host(a), gpu=NoGpuControl("none")), profile,
                        select_settings(profile, ["sysctl.vm.*", "sysfs.thp.*"]), state, persist=False)
    assert out.result == "applied"
    journal = state.applies / f"{out.apply_id}.jsonl"
    journal.write_text("".join(line + "\n" for line in journal.read_text().splitlines()[1:]))
    return a, b, before_a, before_b, state, out.apply_id


def test_a_journal_without_its_begin_line_is_not_rolled_back_onto_another_root(tmp_path):
    a, b, before_a, before_b, state, apply_id = _in_process(tmp_path)
    env_b = ApplyEnv(host=sysroot_host(b), gpu=NoGpuControl("none"))
    for which in (None, apply_id):
        with pytest.raises(Refused, match=f"apply {apply_id} lost its begin line.*--force"):
            rollback(env_b, state, which)
    assert picture(b) == before_b
    record, results = rollback(ApplyEnv(host=sysroot_host(a), gpu=NoGpuControl("none")), state, force=True)
    assert record.id == apply_id and {r.status for r in results} == {"restored"}
    assert picture(a) == before_a


def test_the_cli_asks_for_force_when_the_begin_line_is_lost(tmp_path):
    root, state, before, journal = _applied(tmp_path)
    _write(journal, _lines(journal)[1:])
    one_error_line(_rollback(root, state), "lost its begin line", "--force")
    other = make_tree(tmp_path / "other")
    one_error_line(_rollback(other, state, "--id", journal.stem), f"apply {journal.stem} was made under another root")
    assert _rollback(root, state, "--force").returncode == 0
    assert picture(root) == before


# --- --sysroot applies are kept apart ----------------------------------------------------------

def test_sysroot_applies_are_kept_apart_from_the_live_host(tmp_path):
    """They landed in the live host's history and made a plain `rollback` refuse."""
    root, state, before, journal = _applied(tmp_path)
    assert not (state / "applies").exists()  # the live host's journal directory
    plain = gpunode("rollback", "--state-dir", str(state), "--json")  # the live host: nothing of its own
    assert plain.returncode == 0 and json.loads(plain.stdout)["result"] == "nothing-to-roll-back", plain.stderr
    assert json.loads(_history(state, "--json").stdout)["applies"] == []
    listed = json.loads(_history(state, "--sysroot", str(root), "--json").stdout)["applies"]
    assert [(a["id"], a["status"]) for a in listed] == [(journal.stem, "applied")]
    live_id = gpunode("rollback", "--state-dir", str(state), "--id", journal.stem)
    one_error_line(live_id, f"apply {journal.stem} was made under another root; pass --sysroot {root}")
    assert _rollback(root, state).returncode == 0 and picture(root) == before


# --- the gate's cache uses the same guard ------------------------------------------------------

def test_a_cache_entry_others_can_write_is_a_miss(tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cache = ParsedCache(state)
    key = cache.key("a: 1\n", ())
    cache.put(key, {"a": 1})
    assert cache.get(key) == (True, {"a": 1})
    os.chmod(os.path.join(cache.directory, f"{key}.json"), 0o666)
    assert cache.get(key) == (False, None)


def test_a_restore_that_raises_is_one_error_and_the_rollback_still_ends(tmp_path, monkeypatch):
    """Whatever a journal entry the loader let through does to a restore, that change is an
    error and the others are restored; the rollback is closed, never left `rollback-interrupted`."""
    from gpunode.tune import actions

    a, b, before_a, before_b, state, apply_id = _in_process(tmp_path)
    real_undo = actions.undo
    calls = []

    def undo(env, ch, result=None):
        calls.append(ch.target)
        if len(calls) == 1:
            raise TypeError("a value of the wrong type")
        return real_undo(env, ch, result)

    monkeypatch.setattr(actions, "undo", undo)
    env = ApplyEnv(host=sysroot_host(a), gpu=NoGpuControl("none"))
    record, results = rollback(env, state, force=True)
    assert [r.status for r in results].count("error") == 1 and len(calls) == len(results) > 1
    assert "TypeError: a value of the wrong type" in next(r.detail for r in results if r.status == "error")
    assert state.load(apply_id).status == "partly-rolled-back"


def test_the_audit_s_counter_readings_use_the_same_guard(tmp_path):
    """The audit kept its error-counter readings through ensure_dir, which chmod'ed the state dir."""
    from gpunode.audit.counters import FILE, SCHEMA, CounterStore

    NOW = testkit.NOW

    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o1777)
    doc = {"schema": SCHEMA, "host": "testhost", "boot_id": None, "readings": {"k": {"value": 1, "time": NOW}}}
    (state / FILE).write_text(json.dumps(doc))
    store = CounterStore.load(state, testkit.tree_host(tmp_path / "a", files={}))
    assert "writable by group and others" in store.problem and store.growth("k", 5, NOW).first  # not read
    assert "writable by group and others" in store.save()
    assert stat.S_IMODE(state.stat().st_mode) == 0o1777 and json.loads((state / FILE).read_text()) == doc


def test_a_quarantine_file_that_is_a_link_is_never_written_through(tmp_path):
    """The quarantine's journal writer followed a link: a bad line was appended to any file."""
    root, state, before, journal = _applied(tmp_path)
    with open(journal, "a") as fh:
        fh.write('{"type": "rollback", "ti')  # a torn line: moved to quarantine/<id>.jsonl
    victim = tmp_path / "victim"
    victim.write_text("keep\n")
    quarantine = journal.parent.parent / "quarantine"
    quarantine.mkdir(mode=0o700)
    (quarantine / journal.name).symlink_to(victim)
    proc = _rollback(root, state)  # a warning about the torn line comes first
    assert proc.returncode == USAGE_EXIT and "Traceback" not in proc.stderr, proc.stderr
    assert f"gpunode: error: {quarantine / journal.name}: a symlink" in proc.stderr
    assert victim.read_text() == "keep\n"


def test_a_history_file_others_can_write_is_refused(tmp_path):
    from gpunode.history import record

    state = tmp_path / "state"
    assert record("bench", {"metrics": []}, str(state)) is None
    (state / "history.sqlite").chmod(0o666)
    one_error_line(_history(state), f"{state / 'history.sqlite'}: writable by group and others")
    assert "writable by group and others" in record("bench", {"metrics": []}, str(state))


def test_a_journal_over_the_size_bound_is_refused_unread(tmp_path, monkeypatch):
    from gpunode.tune import journal as journal_module
    from gpunode.tune.journal import JournalError

    state = StateDir(tmp_path / "state").ensure()
    path = state.applies / "20250101T000000Z-1.jsonl"
    _write(path, [{"type": "begin", "seq": 1, "root": "/"}, {"type": "end", "result": "applied"}])
    monkeypatch.setattr(journal_module, "MAX_JOURNAL_BYTES", path.stat().st_size - 1)
    with pytest.raises(JournalError, match=f"{path}: too large"):
        state.records()
