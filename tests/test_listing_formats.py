"""--format table|plain|tsv|json (issue 21 item 4) on the commands that list or report without
running anything on a GPU: profiles, baseline list/show, config show and the fleet report (the
same option and renderers as bench, audit and topo: cli/common.py ResultFormatOption, layout.RENDERERS).
Each format has its shape: json parses, tsv is a header naming the columns and tab-separated rows
only, plain names the columns in a header line and draws no box; table draws one."""

from __future__ import annotations

import json
import re

import pytest
from test_fleet_report import bench_doc, make_run
from typer.testing import CliRunner

from gpunode.cli import app

cli = CliRunner()
BOX = re.compile("[\u2500-\u257f]")  # rich's box drawing


def shapes(args: list[str], header: list[str], schema: str, code: int = 0) -> dict[str, str]:
    """Run `gpunode ARGS --format F` for each format; assert each one's shape; -> the outputs."""
    out = {}
    for fmt in ("tsv", "plain", "json", "table"):
        result = cli.invoke(app, [*args, "--format", fmt], env={"COLUMNS": "250"})
        assert result.exit_code == code, (fmt, result.output)
        out[fmt] = result.stdout
    tsv = out["tsv"].splitlines()
    assert tsv[0].split("\t") == header and len(tsv) > 1
    assert all("\t" in line for line in tsv), "tsv: rows only, no title or footer line"
    assert not BOX.search(out["plain"]) and "  ".join(header) in out["plain"].splitlines()
    assert json.loads(out["json"])["schema"] == schema
    assert BOX.search(out["table"])
    return out


def test_profiles_list_and_one_profile():
    out = shapes(["profiles"], ["Profile", "Description"], "gpunode.profiles/1")
    assert any(line.startswith("training\t") for line in out["tsv"].splitlines())
    out = shapes(["profiles", "training"], ["Setting", "Target", "When", "Why"], "gpunode.profile/1")
    assert any(line.startswith("sysctl.vm.swappiness\t") for line in out["tsv"].splitlines())


def test_baseline_list_and_show():
    out = shapes(["baseline", "list"], ["Name", "Origin", "Matches", "Metrics", "File"], "gpunode.baselines/1")
    assert any(line.startswith("h100-sxm5-80gb-1gpu\tshipped\t") for line in out["tsv"].splitlines())
    out = shapes(["baseline", "show", "h100-sxm5-80gb-1gpu"],
                 ["Metric", "Expected", "Better", "Warn/Fail", "Conditions", "Basis", "Source"],
                 "gpunode.baseline-resolved/1")
    assert any(line.startswith("gemm.bf16\t710 TFLOP/s\thigher\t") for line in out["tsv"].splitlines())


def test_config_show(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("expected_gpus: 8\n")
    out = shapes(["config", "show", "--config", str(config)], ["Key", "Value", "From"], "gpunode.config/1")
    assert f"expected_gpus\t8\t{config}" in out["tsv"].splitlines()


def test_fleet_report(tmp_path):
    hosts = {n: {"doc": bench_doc(n, [v])} for n, v in (("a", 796.0), ("b", 790.0), ("c", 700.0))}
    run = make_run(tmp_path, "bench", hosts)
    (run.artifact_dir / "run.json").write_text(json.dumps(run.to_json()))
    out = shapes(["fleet", "report", str(run.artifact_dir)],
                 ["Host", "SKU", "Status", "Result", "Failing checks", "Outliers"], "gpunode.fleet/1", code=1)
    tsv = out["tsv"].splitlines()
    assert "Metric\tSKU\tHosts\tMedian\tUnit\tLowest host\tRatio\tOutliers" in tsv  # the bench table's header
    assert any(line.startswith("gemm.bf16\th100\t3\t790\tTFLOP/s\tc\t") for line in tsv)
    assert "WARN (exit 1)" in out["plain"] and "WARN (exit 1)" not in out["tsv"]  # the verdict line: not a row
    assert json.loads(cli.invoke(app, ["fleet", "report", str(run.artifact_dir), "--json"]).stdout) == json.loads(out["json"])


@pytest.mark.parametrize("args", [["profiles"], ["baseline", "list"], ["config", "show"], ["fleet", "report", "."],
                                  ["fleet", "audit", "-i", "x"]])
def test_a_format_that_is_not_offered_is_a_usage_error(args):
    result = cli.invoke(app, [*args, "--format", "xml"])
    assert result.exit_code == 3 and "'xml' is not one of 'table', 'plain', 'tsv', 'json'" in result.stderr
