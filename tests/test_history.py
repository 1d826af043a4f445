"""The node's history: SQLite store (modes, schema version, migration, retention, a corrupt or
foreign file refused in one line), record() never raising, judging against the node's own
median, robust drift, and `gpunode history` / `bench` through the CLI. Figures come from the
real recorded H200 runs (tests/fixtures/bench)."""

from __future__ import annotations

import copy
import io
import json
import os
import sqlite3
import stat

import pytest
from typer.testing import CliRunner

from gpunode.bench.results import metric_status
from gpunode.cli import app
from gpunode.exits import USAGE_EXIT
from gpunode.history import record
from gpunode.history.record import figures_of
from gpunode.history.store import SCHEMA_VERSION, HistoryError, Store, history_path
from gpunode.history.trend import PASS, SKIP, WARN, drift, judge_against_history, theil_sen
from testkit import FIXTURES

H200 = json.loads((FIXTURES / "bench" / "h200-quick.json").read_text())
DAY = 86400.0
T0 = 1_796_000_000.0  # 2026-11: record() prunes by age against the clock


def run_at(t: float, scale: float = 1.0, foreign: bool = False) -> dict:
    """The real H200 run, moved to time t with every rate scaled."""
    doc = copy.deepcopy(H200)
    doc["time_epoch"], doc["time"] = T0 + t, f"t{t:.0f}"
    for m in doc["metrics"]:
        if m["status"] == "ok":
            m["value"] = round(m["value"] * scale, 3)
            if foreign:
                m["telemetry"] = {"foreign_processes": [{"pid": 7, "name": "burn"}]}
    return doc


def bf16(doc: dict) -> float:
    return next(m["value"] for m in doc["metrics"] if m["name"] == "gemm.bf16")


def test_record_creates_a_private_store_and_keeps_the_figures(tmp_path):
    state = tmp_path / "state"
    assert record("bench", run_at(1000.0), str(state)) is None
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE(history_path(state).stat().st_mode) == 0o600
    with Store.open(history_path(state), readonly=True) as store:
        [entry] = store.entries()
        assert (entry.kind, entry.host, entry.time_epoch) == ("bench", H200["host"], T0 + 1000.0)
        assert store.document(entry.id)["metrics"] == H200["metrics"]
        figs = [f for _, f in store.figures("bench")]
    assert {f.name for f in figs} == {m["name"] for m in H200["metrics"] if metric_status(m["status"]) == "PASS"}
    assert all(f.trusted for f in figs)
    assert all("iters_per_batch" not in f.conditions for f in figs)  # timing details do not split runs


def test_untrusted_figures_are_marked(tmp_path):
    assert not any(f.trusted for f in figures_of(run_at(0, foreign=True)))


def test_retention_keeps_the_newest(tmp_path):
    for i in range(5):
        assert record("bench", run_at(1000.0 + i), str(tmp_path), now=T0 + 2000.0, keep=3) is None
    with Store.open(history_path(tmp_path), readonly=True) as store:
        assert [e.time_epoch - T0 for e in store.entries()] == [1004.0, 1003.0, 1002.0]
    with Store.open(history_path(tmp_path)) as store:  # and by age
        assert store.prune(now=T0 + 1003.5 + 400 * DAY) == 2


def test_corrupt_and_foreign_files_are_refused_not_rewritten(tmp_path):
    path = history_path(tmp_path)
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(HistoryError, match="not a usable gpunode history"):
        Store.open(path)
    warning = record("bench", run_at(1.0), str(tmp_path))
    assert warning and "\n" not in warning and "not kept" in warning
    assert path.read_bytes().startswith(b"this is not sqlite")
    other = tmp_path / "other"
    other.mkdir()
    db = sqlite3.connect(history_path(other))
    db.execute("CREATE TABLE users (name TEXT)")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="another program's SQLite database"):
        Store.open(history_path(other))


def test_newer_schema_is_refused_and_older_is_migrated(tmp_path):
    record("bench", run_at(1.0), str(tmp_path))
    db = sqlite3.connect(history_path(tmp_path))
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(HistoryError, match="newer gpunode"):
        Store.open(history_path(tmp_path), readonly=True)
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    sqlite3.connect(history_path(fresh)).close()  # an empty file at version 0: migrated on open
    with Store.open(history_path(fresh)) as store:
        assert store.entries() == []
    assert sqlite3.connect(history_path(fresh)).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_read_only_open_of_a_missing_history_creates_nothing(tmp_path):
    with Store.open(history_path(tmp_path / "none"), readonly=True) as store:
        assert store.entries() == [] and store.figures() == []
    assert not (tmp_path / "none").exists()


def _earlier(tmp_path, docs):
    for d in docs:
        record("bench", d, str(tmp_path), now=d["time_epoch"] + 1)
    with Store.open(history_path(tmp_path), readonly=True) as store:
        return store.figures("bench")


def test_a_figure_below_the_nodes_recent_median_warns(tmp_path):
    earlier = _earlier(tmp_path, [run_at(i * DAY, 1.0 + 0.002 * (i % 3)) for i in range(12)])
    today = run_at(20 * DAY, 0.94)
    rows = {(r.metric, r.subject): r for r in judge_against_history(today, earlier, last=10, warn=0.95)}
    row = rows[("gemm.bf16", "GPU0")]
    assert row.status == WARN and row.runs == 10
    assert row.message.startswith("6.") and "below this node's last 10 runs" in row.message
    fine = {(r.metric, r.subject): r for r in judge_against_history(run_at(20 * DAY, 0.97), earlier)}
    assert fine[("gemm.bf16", "GPU0")].status == PASS


def test_untrusted_runs_do_not_move_the_median_and_few_runs_give_no_verdict(tmp_path):
    docs = [run_at(i, 1.0) for i in range(3)] + [run_at(10 + i, 0.5, foreign=True) for i in range(5)]
    earlier = _earlier(tmp_path, docs)
    rows = {r.metric: r for r in judge_against_history(run_at(100, 1.0), earlier) if r.subject == "GPU0"}
    assert rows["gemm.bf16"].status == PASS and rows["gemm.bf16"].runs == 3
    rows = {r.metric: r for r in judge_against_history(run_at(100, 1.0), earlier[:1]) if r.subject == "GPU0"}
    assert rows["gemm.bf16"].status == SKIP


def test_theil_sen_ignores_one_wild_point_and_drift_is_relative():
    pts = [(float(i), 100.0 - i) for i in range(10)]
    pts[4] = (4.0, 1000.0)
    assert theil_sen(pts) == pytest.approx(-1.0)
    d = drift([(i * DAY, 700.0 - 7.0 * i) for i in range(10)])
    assert d is not None and d.change == pytest.approx((644 - 693) / 668.5, abs=1e-4) and d.slope_per_day == pytest.approx(-7.0 / d.median, rel=1e-3)
    assert drift([(0.0, 1.0)] * 5) is None


runner = CliRunner()


def test_history_cli_lists_and_shows_results_and_applies(tmp_path):
    record("bench", run_at(1000.0), str(tmp_path))
    res = runner.invoke(app, ["history", "--state-dir", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["results"][0]["kind"] == "bench" and doc["applies"] == []
    rid = str(doc["results"][0]["id"])
    shown = runner.invoke(app, ["history", "show", rid, "--state-dir", str(tmp_path)])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["host"] == H200["host"]
    table = runner.invoke(app, ["history", "--state-dir", str(tmp_path)])
    assert "bench" in table.stdout and "ok" in table.stdout
    missing = runner.invoke(app, ["history", "show", "999", "--state-dir", str(tmp_path)])
    assert missing.exit_code == USAGE_EXIT and "no result 999" in missing.stderr


def test_history_cli_on_a_corrupt_file_is_one_line(tmp_path):
    history_path(tmp_path).write_text("garbage")
    res = runner.invoke(app, ["history", "--state-dir", str(tmp_path)])
    assert res.exit_code == 3
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("gpunode: error:")
    assert "Traceback" not in res.output


def test_history_export_carries_figures_and_gpu_identity(tmp_path):
    for i in range(3):
        record("bench", run_at(i * DAY), str(tmp_path))
    out = tmp_path / "export.json"
    res = runner.invoke(app, ["history", "export", "-o", str(out), "--state-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == "gpunode.history-export/1" and len(doc["runs"]) == 3
    assert doc["gpus"]["devices"][0]["name"].startswith("NVIDIA H200")
    assert {f["name"] for f in doc["runs"][0]["figures"]} >= {"gemm.bf16", "hbm.d2d"}


def test_audit_of_a_snapshot_does_not_write_the_live_history(tmp_path, monkeypatch):
    snap = FIXTURES / "hosts"
    snapshots = [p for p in snap.iterdir() if p.is_dir()]
    if not snapshots:
        pytest.skip("no recorded snapshot")
    monkeypatch.setenv("GPUNODE_STATE_DIR", str(tmp_path / "state"))
    res = runner.invoke(app, ["audit", "--snapshot", str(snapshots[0]), "--json"])
    assert res.exit_code in (0, 1, 2, 3) and json.loads(res.stdout)["schema"] == "gpunode.audit/1"
    assert not (tmp_path / "state").exists()


def test_bench_compare_against_history_warns_and_says_why(tmp_path, capsys):
    from rich.console import Console

    from gpunode.cli.bench_cmd import _compare_history

    out = io.StringIO()
    console = Console(file=out, width=200, color_system=None)
    assert _compare_history(run_at(0.0), str(tmp_path), 10, 0.95, console) == 0
    assert "no earlier runs" in out.getvalue()
    for i in range(10):
        record("bench", run_at(i * DAY), str(tmp_path))
    assert _compare_history(run_at(20 * DAY, 0.94), str(tmp_path), 10, 0.95, console) == 1
    text = out.getvalue()
    assert "gemm.bf16" in text and "below this node's last 10 runs" in text
    assert _compare_history(run_at(20 * DAY, 1.0), str(tmp_path), 10, 0.95, console) == 0
    history_path(tmp_path).write_bytes(b"x" * 200)
    assert _compare_history(run_at(20 * DAY, 0.5), str(tmp_path), 10, 0.95, console) == 0
    assert "not compared with this node's history" in capsys.readouterr().err


def test_a_damaged_table_or_document_is_one_line_not_a_traceback(tmp_path):
    record("bench", run_at(0.0), str(tmp_path))
    db = sqlite3.connect(history_path(tmp_path))
    db.execute("UPDATE results SET doc = x'00ff00'")
    db.execute("DROP TABLE figures")
    db.commit()
    db.close()
    for args in (["history", "show", "1"], ["history", "export"], ["history"]):
        res = runner.invoke(app, [*args, "--state-dir", str(tmp_path)])
        if args == ["history"]:
            assert res.exit_code == 0  # the list reads no document and no figure
            continue
        assert res.exit_code == 3, (args, res.output)
        assert res.stderr.startswith("gpunode: error: ") and res.stderr.count("\n") == 1
    assert "not kept" in record("bench", run_at(1.0), str(tmp_path))


def test_an_unreadable_state_dir_is_one_line(tmp_path, monkeypatch):
    real_open = os.open

    def refuse(path, *a, **k):  # what a user who is not root meets on root's 0700 state dir
        if os.fspath(path) == str(tmp_path):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(HistoryError, match=f"{tmp_path}: cannot open: Permission denied"):
        Store.open(history_path(tmp_path), readonly=True)
