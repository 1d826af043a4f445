"""tune.apply_case, the use case behind `gpunode apply`, called without typer (issue 21 item 2):
bad input is an exits.UsageError before anything is locked, a refusal is a Stopped (exit 3),
a dry run plans, an apply changes the tree and journals it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from apply_fixtures import make_tree, picture

from gpunode.exits import USAGE_EXIT, UsageError
from gpunode.tune import apply_case
from gpunode.tune.journal import StateDir

ENV = {"PATH": "/usr/bin:/bin"}


def _request(tmp_path, **kw):
    (tmp_path / "config.yaml").write_text("{}\n")  # a site config that sets nothing
    base = {"profile": "training", "only": ["sysctl.vm.swappiness"], "sysroot": tmp_path / "root",
            "state_dir": str(tmp_path / "state"), "config": str(tmp_path / "config.yaml")}
    return apply_case.ApplyRequest(**{**base, **kw})


@pytest.mark.parametrize("fields,message", [
    ({"boot": True}, "--boot re-applies the recorded settings"),
    ({"sysroot": "MISSING"}, "not a directory"),
    ({"profile": "no-such-profile"}, "no-such-profile"),
    ({"only": ["nosuchkind.*"]}, "nosuchkind"),
])
def test_bad_request_is_a_usage_error_before_anything_is_written(tmp_path, fields, message):
    make_tree(tmp_path / "root")
    if fields.get("sysroot") == "MISSING":
        fields = {**fields, "sysroot": tmp_path / "missing"}
    with pytest.raises(UsageError) as caught:
        apply_case.prepare(_request(tmp_path, **fields), environ=ENV)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == USAGE_EXIT == 3
    assert not (tmp_path / "state").exists()


def test_dry_run_plans_and_changes_nothing(tmp_path):
    before = picture(make_tree(tmp_path / "root"))
    job = apply_case.prepare(_request(tmp_path, dry_run=True), environ=ENV)
    outcome, proof = apply_case.run(job)
    assert proof is None and outcome.result == "planned" and outcome.exit_code == 0
    assert [r["subject"] for r in outcome.rows if r["status"] == "planned"][0] == "/proc/sys/vm/swappiness"
    assert picture(tmp_path / "root") == before


def test_apply_changes_the_tree_and_journals_it(tmp_path):
    make_tree(tmp_path / "root")
    job = apply_case.prepare(_request(tmp_path, no_persist=True), environ=ENV)
    assert not job.live_change and not job.needs_confirm  # a --sysroot tree is never asked about
    outcome, _ = apply_case.run(job)
    assert outcome.result == "applied", outcome.reason
    assert (tmp_path / "root/proc/sys/vm/swappiness").read_text().strip() != "60"
    assert StateDir(tmp_path / "state", sysroot=tmp_path / "root").ids() == [outcome.apply_id]


def test_a_held_lock_is_stopped_with_exit_3(tmp_path):
    from gpunode.tune.lock import RootLock

    make_tree(tmp_path / "root")
    job = apply_case.prepare(_request(tmp_path, no_persist=True), environ=ENV)
    with RootLock(tmp_path / "root", "test"), pytest.raises(apply_case.Stopped) as caught:
        apply_case.run(job)
    assert caught.value.exit_code == 3 and "test" in str(caught.value)


def test_the_use_case_does_not_import_typer():
    code = "import sys; from gpunode.tune import apply_case; print(sorted(m for m in sys.modules if m in ('typer', 'click', 'rich')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_rollback_undoes_the_apply_and_nothing_left_is_not_an_error(tmp_path):
    before = picture(make_tree(tmp_path / "root"))
    job = apply_case.prepare(_request(tmp_path, no_persist=True), environ=ENV)
    applied, _ = apply_case.run(job)
    assert applied.result == "applied" and picture(tmp_path / "root") != before
    undo = apply_case.prepare_rollback(None, str(tmp_path / "state"), tmp_path / "root", environ=ENV)
    outcome = apply_case.run_rollback(undo)
    assert outcome.record.id == applied.apply_id and outcome.exit_code == 0
    assert picture(tmp_path / "root") == before
    again = apply_case.run_rollback(undo)
    assert again.record is None and "nothing to roll back" in again.nothing and again.exit_code == 0


def test_rollback_of_an_unknown_id_is_stopped(tmp_path):
    make_tree(tmp_path / "root")
    apply_case.run(apply_case.prepare(_request(tmp_path, no_persist=True), environ=ENV))
    undo = apply_case.prepare_rollback("20990101T000000Z-999", str(tmp_path / "state"), tmp_path / "root", environ=ENV)
    with pytest.raises(apply_case.Stopped) as caught:
        apply_case.run_rollback(undo)
    assert caught.value.exit_code == 3
