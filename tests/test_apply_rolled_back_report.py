"""What a failed apply says on stderr about its rollback (cli/apply_cmd._report_rolled_back), in
process: a change that could not be put back is named with why and the rollback to run restores
it; with everything back but the journal unwritten, the rollback only settles the journal."""

from __future__ import annotations

import signal
from types import SimpleNamespace

from gpunode.cli.apply_cmd import _report_rolled_back
from gpunode.tune.journal import StateDir
from testkit import tree_host


def restore(status: str, setting: str = "sysctl.vm.swappiness", detail: str = ""):
    return SimpleNamespace(status=status, detail=detail, change=SimpleNamespace(setting_id=setting, subject="vm"))


def outcome(restored, unrecorded=(), apply_id="a1", sig=None):
    return SimpleNamespace(signal=sig, reason="boom", restored=list(restored), unrecorded=list(unrecorded),
                           unrecorded_why="disk full", apply_id=apply_id)


def report(tmp_path, capsys, out) -> list[str]:
    host = tree_host(tmp_path / "root")
    _report_rolled_back(out, host, StateDir(tmp_path / "state"))
    return capsys.readouterr().err.replace(str(tmp_path), "T").splitlines()


def test_a_change_left_unrestored_is_named_and_the_rollback_restores_it(tmp_path, capsys):
    out = outcome([restore("restored"), restore("not-written"), restore("changed-since", "sysctl.x", "someone wrote 5")])
    assert report(tmp_path, capsys, out) == [
        "gpunode: error: apply failed and was NOT fully rolled back: boom",
        "gpunode: 1 change(s) restored, 1 found unchanged, 1 NOT restored under T/root (state dir T/state)",
        "gpunode: error: NOT restored: sysctl.x vm: someone wrote 5",
        "gpunode: run `gpunode rollback --id a1 --sysroot T/root --state-dir T/state` once the state dir can be "
        "written again: it restores what is listed above",
    ]


def test_an_unrecorded_journal_after_a_full_rollback_is_settled_by_the_rollback(tmp_path, capsys):
    out = outcome([restore("restored")], unrecorded=["end of the apply"], sig=signal.SIGTERM)
    assert report(tmp_path, capsys, out) == [
        "gpunode: error: apply interrupted by SIGTERM and was rolled back: boom",
        "gpunode: 1 change(s) restored, 0 found unchanged, 0 NOT restored under T/root (state dir T/state)",
        "gpunode: warning: the journal could not record 1 record(s) after the failure (disk full): end of the apply",
        "gpunode: run `gpunode rollback --id a1 --sysroot T/root --state-dir T/state` once the state dir can be "
        "written again: the host is already restored; it settles the journal (until then the next apply refuses)",
    ]


def test_no_rollback_advice_without_an_apply_id_or_anything_to_do(tmp_path, capsys):
    assert len(report(tmp_path, capsys, outcome([restore("changed-since")], apply_id=None))) == 3
    assert len(report(tmp_path, capsys, outcome([], unrecorded=["end of the apply"]))) == 3  # nothing was changed
    assert len(report(tmp_path, capsys, outcome([restore("restored")]))) == 2
