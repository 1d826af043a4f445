"""--format table|plain|tsv|json (issue 21 item 4) on the commands that change or report on the
node: slurm drain, apply (its plan too), rollback, history, gate and watch --status. The same
option and renderers as the listings (cli/common.py ResultFormatOption, layout.RENDERERS); the
shapes are checked by test_listing_formats.shapes."""

from __future__ import annotations

import json

import pytest
from test_listing_formats import shapes
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.slurm import drain as drain_case

cli = CliRunner()


def xml_is_refused(args: list[str]) -> None:
    result = cli.invoke(app, [*args, "--format", "xml"])
    assert result.exit_code == 3, result.output
    lines = result.stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("gpunode: error:")] == lines and len(lines) == 1, result.stderr


def test_slurm_drain(monkeypatch):
    done = [drain_case.Drained("n1", "would-drain", "idle", ["scontrol", "update", "nodename=n1", "state=drain"]),
            drain_case.Drained("n2", "left-foreign", "reason 'maint' is not gpunode's")]
    monkeypatch.setattr(drain_case, "drain", lambda slurm, nodes, why, dry_run=False: done)
    args = ["slurm", "drain", "--check", "--reason", "gpunode: test", "n1", "n2"]
    out = shapes(args, ["Node", "Action", "Detail", "Command"], "gpunode.slurm-drain/1", code=1)
    assert "n1\twould-drain\tidle\tscontrol update nodename=n1 state=drain" in out["tsv"].splitlines()
    doc = json.loads(out["json"])
    assert doc["exit_code"] == 1 and doc["dry_run"] is True and [n["node"] for n in doc["nodes"]] == ["n1", "n2"]
    plain = cli.invoke(app, args)  # no --format: the lines scripts read, unchanged
    assert plain.stdout.splitlines() == ["scontrol update nodename=n1 state=drain",
                                         "n2: left-foreign: reason 'maint' is not gpunode's"]
    xml_is_refused(args)
