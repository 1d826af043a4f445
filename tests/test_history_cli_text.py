"""`gpunode history` in its text forms (cli/history_cmd): bad --kind and --limit are one usage
line, an empty history says so, and results and applies each come as their own table."""

from __future__ import annotations

from typer.testing import CliRunner

from gpunode.cli import app, history_cmd
from gpunode.exits import USAGE_EXIT

runner = CliRunner()
RESULT = {"id": 7, "kind": "bench", "time": "2026-11-23T00:00:00+00:00", "time_epoch": 0.0, "host": "h",
          "status": "WARN", "summary": "gemm.bf16 [low]"}
APPLY = {"id": "20261123-000000-ab12", "time": None, "profile": None, "changes": 3, "status": "applied",
         "reason": "a [b]"}


def history(tmp_path, *args):
    return runner.invoke(app, ["history", "--state-dir", str(tmp_path), *args])


def test_bad_kind_and_limit_are_one_usage_line(tmp_path):
    bad = history(tmp_path, "--kind", "bnech")
    assert bad.exit_code == USAGE_EXIT and bad.stderr == "gpunode: error: --kind bnech: choose bench, diag, audit, apply\n"
    zero = history(tmp_path, "--limit", "0")
    assert zero.exit_code == USAGE_EXIT and zero.stderr == "gpunode: error: --limit must be 1 or more\n"


def test_an_empty_history_says_so(tmp_path):
    out = history(tmp_path)
    assert out.exit_code == 0 and out.stdout == f"nothing recorded in {tmp_path}\n"


def test_results_and_applies_each_have_their_table(tmp_path, monkeypatch):
    rows = {"results": [RESULT], "applies": [APPLY]}
    monkeypatch.setattr(history_cmd, "history_rows", lambda root, kind, limit, sysroot: (rows["results"], rows["applies"]))
    out = history(tmp_path, "--format", "tsv")
    assert out.exit_code == 0
    assert out.stdout.splitlines() == [
        "Id\tTime\tKind\tStatus\tSummary",
        "7\t2026-11-23T00:00:00+00:00\tbench\tWARN\tgemm.bf16 [low]",
        "Id\tTime\tProfile\tChanges\tStatus\tReason",
        "20261123-000000-ab12\t\t\t3\tapplied\ta [b]",
    ]
    rows["results"] = []
    assert history(tmp_path, "--format", "tsv").stdout.splitlines()[0] == "Id\tTime\tProfile\tChanges\tStatus\tReason"
    rows["results"], rows["applies"] = [RESULT], []
    plain = history(tmp_path, "--format", "plain").stdout
    assert f"gpunode history · {tmp_path}" in plain and "applies ·" not in plain and "gemm.bf16 [low]" in plain
