"""Branches of the fleet report, its terminal and HTML views, trends and inventory checks that
no other test reaches: a run that skipped every task, a sample that cannot be a ratio, exports
with broken runs, every series drifting, verbose check details and watcher events, and the
shape checks of the inventory vars in one go (their order is the order of the message)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console
from test_fleet_report import bench_doc, make_run

from gpunode.fleet.html import time_svg
from gpunode.fleet.render import render_fleet
from gpunode.fleet.report import fleet_document
from gpunode.fleet.specs import PLAYBOOKS
from gpunode.fleet.trends import collect
from gpunode.fleet.validate import FleetError, FleetInventory, check_vars

DAY = 86400.0


@pytest.mark.parametrize(("check", "message"), [(False, "every task skipped"),
                                                (True, "every task skipped (check mode)")])
def test_a_host_whose_every_task_was_skipped_says_so(tmp_path, check, message):
    doc = fleet_document(make_run(tmp_path, "bench", {"a": {"state": "skipped"}}, check=check))
    (host,) = doc["hosts"]
    assert (host["status"], host["message"]) == ("SKIPPED", message)


def test_a_zero_figure_has_no_ratio_and_is_never_an_outlier(tmp_path):
    """A figure of 0 cannot be compared with the median: no ratio, listed after the others."""
    hosts = {n: {"doc": bench_doc(n, [796.0])} for n in "abc"}
    hosts["z"] = {"doc": bench_doc("z", [0.0])}
    doc = fleet_document(make_run(tmp_path, "bench", hosts))
    gemm = next(r for r in doc["metrics"] if r["metric"] == "gemm.bf16")
    assert [(e["host"], e["ratio"], e["outlier"]) for e in gemm["hosts"]][-1] == ("z", None, False)
    assert "z" not in {o["host"] for o in doc["outliers"]}


def _figure(value=700.0, **changes) -> dict:
    return {"name": "gemm.bf16", "unit": "TFLOP/s", "value": value, "gpu": 0, "trusted": True,
            "conditions": {"dtype": "bf16"}, **changes}


def test_trends_keep_only_the_usable_figures_of_a_broken_export():
    runs = [{"time_epoch": 1.0 * DAY, "figures": [_figure(701.0)]},
            {"time_epoch": True, "figures": [_figure()]},  # a bool is no time
            {"time_epoch": "2", "figures": [_figure()]},
            {"figures": [_figure()]},
            "not a run",
            {"time_epoch": 2.0 * DAY, "figures": "not a list"},
            {"time_epoch": 3.0 * DAY, "figures": [
                "not a figure", _figure(float("nan")), _figure(float("inf")), _figure(True), _figure("700"),
                _figure(trusted=False), _figure(gpu="0"), _figure(conditions=["x"]), _figure(702.0, gpu=None)]}]
    groups = collect([("h1", "h200", {"runs": runs})])
    assert groups == {("h200", "gemm.bf16", "TFLOP/s", '{"dtype": "bf16"}'): {
        "h1:GPU0": [(DAY, 701.0)], "h1": [(3 * DAY, 702.0)]}}


def _row(drifting: list[str], points: dict[str, list[list[float]]]) -> dict:
    return {"metric": "gemm.bf16", "points": points,
            "drifting": [{"series": s, "change": -0.08} for s in drifting]}


def test_time_plot_without_healthy_hosts_has_no_band():
    pts = {"a": [[0.0, 10.0], [DAY, 9.0]], "b": [[0.0, 11.0], [DAY, 9.5]]}
    svg = time_svg(_row(["a", "b"], pts))
    assert "<polygon" not in svg and svg.count('class="drift-line"') == 2
    assert '<text class="drift-label" x="586.0" y="192.9" font-size="11" fill="#c00">a -8.0%</text>' in svg


def test_time_plot_skips_a_drifting_series_without_points():
    pts = {"a": [[0.0, 10.0], [DAY, 9.0]], "b": [[0.0, 11.0], [DAY, 10.5]]}
    svg = time_svg(_row(["gone"], pts))
    assert svg.count("<polygon") == 1 and "drift-line" not in svg and "gone" not in svg


def _fleet_doc(**changes) -> dict:
    doc = {"kind": "audit", "summary": {"hosts": 1, "FAIL": 1}, "inventory": "inv.ini", "check_mode": False,
           "status": "FAIL", "exit_code": 2, "report_dir": "/r", "hostlists": {"FAIL": "n1"},
           "hosts": [{"host": "n1", "sku": "h100", "status": "FAIL", "message": "1 FAIL", "failing": ["gpu.ecc"],
                      "outliers": []}],
           "checks": [{"id": "gpu.ecc", "fail_hosts": ["n1"], "error_hosts": [], "warn_hosts": [],
                       "details": {"n1": [{"status": "FAIL", "subject": "GPU0", "message": "3 uncorrectable"},
                                          {"status": "FAIL", "subject": None, "message": "ECC off"}]}}],
           "metrics": [], "metric_failures": []}
    return {**doc, **changes}


def _lines(doc: dict, verbose: bool) -> list[str]:
    out = io.StringIO()
    render_fleet(doc, Console(file=out, width=200, color_system=None), verbose=verbose)
    return [line.rstrip() for line in out.getvalue().splitlines()]


def test_verbose_lists_each_finding_under_its_check():
    quiet, verbose = _lines(_fleet_doc(), False), _lines(_fleet_doc(), True)
    assert not any("n1 GPU0" in line for line in quiet)
    at = verbose.index("gpu.ecc  n1  -  -")  # piped: a table row is its cells, "-" for an empty one
    assert verbose[at:at + 3] == ["gpu.ecc  n1  -  -", "n1 GPU0  -  -  3 uncorrectable", "n1  -  -  ECC off"]


def test_watch_lines_name_actions_always_and_events_when_verbose():
    watch = {"fresh": "fresh (3 s)", "actions": [{"action": "would-drain", "reason": "Xid 79"}],
             "events": [{"kind": "xid", "code": 79, "gpu": 0}]}
    hosts = [{"host": "n1", "sku": "h100", "status": "FAIL", "message": "", "failing": [], "outliers": [],
              "watch": watch},
             {"host": "n2", "sku": "h100", "status": "UNKNOWN", "message": "", "failing": [], "outliers": []}]
    doc = _fleet_doc(kind="watch", hosts=hosts, checks=[])
    expected = ["n1: fresh (3 s)", "  action would-drain: Xid 79"]
    quiet = _lines(doc, False)
    assert quiet[quiet.index(expected[0]):][:3] == [*expected, "FAIL (exit 2): 1 FAIL"]
    verbose = _lines(doc, True)
    assert verbose[verbose.index(expected[0]):][:3] == [*expected, "  event xid 79 gpu=0"]
    assert _lines(_fleet_doc(hosts=hosts, checks=[]), True).count(expected[0]) == 0  # not a watch run


@pytest.mark.parametrize(("bad", "listed"), [
    ({"gpunode_expected_gpus": "-1", "gpunode_audit_timeout": " 7 ", "gpunode_slurm_drain": "maybe",
      "gpunode_venv": "venv", "gpunode_bench_mode": "fast", "gpunode_diag_level": 2, "gpunode_profile": ["a"]},
     ["gpunode_expected_gpus='-1' is not a whole number >= 0",  # " 7 " and 2 (for "2") are fine
      "gpunode_slurm_drain='maybe' is not true or false",
      "gpunode_venv='venv' is not an absolute path",
      "gpunode_bench_mode='fast' is not one of quick, full",
      "gpunode_profile must be a string, not list"]),
    ({"gpunode_audit_args": ["--skip", "a\nb"], "gpunode_pip_args": "x", "gpunode_sku": "h100\x1b[2J",
      "other_args": "x", "other": "a\nb"},
     ["gpunode_audit_args: a line break or control character in the value",
      'gpunode_pip_args must be a list of strings, e.g. ["--skip", "net.*"]',
      "gpunode_sku: a line break or control character in the value"]),
])
def test_every_shape_problem_of_a_host_in_kind_order(bad, listed):
    """A bad value of each kind: every problem named, in the order of the kinds, then the
    gpunode_* vars in the inventory's order (only those: others are not gpunode's)."""
    inventory = FleetInventory(path="inv.ini", limit=None, hosts=["n1"], hostvars={"n1": bad})
    with pytest.raises(FleetError) as err:
        check_vars(PLAYBOOKS["audit"], inventory, {})
    hint = " (set them in the inventory, e.g. [group:vars], or pass -e NAME=VALUE)"
    assert str(err.value) == "inventory inv.ini: " + "; ".join(f"n1: {p}" for p in listed) + hint
