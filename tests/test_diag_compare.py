"""`diag --compare` compares only what a diag level measures: on the recorded H200 runs, level 1
(no figure) has nothing to compare and stays OK (it exited 3, "7 not compared", every time);
levels 2 and 3 compare the checked GEMM and say "nothing to compare" for hbm.memtest, which
the shipped baselines hold no figure for; the baseline's H2D/HBM-copy figures, which diag never
measures, are not listed as missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpunode.baselines.compare import NO_FIGURE, catalogue_for, compare_document
from gpunode.diag.compare import exit_with_compare, judge_document, nothing_to_compare

FIX = Path(__file__).parent / "fixtures"
ROOT = Path(__file__).parent.parent


def doc(name: str) -> dict:
    return json.loads((FIX / "diag" / name).read_text())


@pytest.fixture(scope="module")
def h200():
    return catalogue_for(ROOT / "baselines").resolve("h200-141gb-1gpu")


def test_level_1_has_nothing_to_compare_and_stays_ok(h200):
    recorded = doc("h200-l1.json")
    assert recorded["level"] == 1 and recorded["exit_code"] == 0
    verdicts = judge_document(recorded, h200)
    assert verdicts.rows == [] and not verdicts.compared
    assert exit_with_compare(recorded["exit_code"], verdicts) == 0
    assert nothing_to_compare(verdicts, 1).startswith("nothing to compare: diag level 1 records no figure")
    for code in (1, 2, 3):  # the run's own verdict is kept as it is
        assert exit_with_compare(code, verdicts) == code


@pytest.mark.parametrize("name", ["h200-l2.json", "h200-l3.json", "h200-l3-default.json"])
def test_levels_2_and_3_compare_the_gemm_and_only_what_diag_measured(h200, name):
    recorded = doc(name)
    verdicts = judge_document(recorded, h200)
    rows = {r.metric: r for r in verdicts.rows}
    assert set(rows) == {"gemm.bf16", "hbm.memtest"}, rows  # no hbm.d2d/h2d/d2h "not measured" rows
    assert rows["gemm.bf16"].status == "PASS"
    assert rows["hbm.memtest"].status == "SKIP" and rows["hbm.memtest"].message == NO_FIGURE
    assert verdicts.compared and verdicts.status == "OK"
    assert exit_with_compare(recorded["exit_code"], verdicts) == 0


def test_a_real_comparison_still_decides(h200):
    hog = judge_document(doc("h200-l2-hog.json"), h200)  # gemm.bf16 at 0.45 of the baseline
    assert hog.compared and exit_with_compare(1, hog) == 2


def test_only_figures_without_baseline_numbers_is_nothing_to_compare(h200):
    recorded = doc("h200-l2.json")
    recorded["metrics"] = [m for m in recorded["metrics"] if m["name"] == "hbm.memtest"]
    verdicts = judge_document(recorded, h200)
    assert not verdicts.compared and exit_with_compare(0, verdicts) == 0
    assert nothing_to_compare(verdicts, 2) == "nothing to compare: baseline h200-141gb-1gpu has no figure for hbm.memtest"


def test_bench_compare_still_lists_what_the_run_did_not_measure():
    """bench asks for every figure: a baseline figure it did not measure is still a row, and a
    bench that compared nothing is still UNKNOWN."""
    bench = json.loads((FIX / "bench" / "h200-quick.json").read_text())
    bench["metrics"] = [m for m in bench["metrics"] if m["name"] != "hbm.d2d"]
    verdicts = compare_document(bench, baselines_dir=None)
    assert any(r.metric == "hbm.d2d" and r.message == "not measured in this run" for r in verdicts.rows)
    bench["metrics"] = []
    assert compare_document(bench).status == "UNKNOWN"


def _h200_topology() -> list[dict]:
    from gpunode.bench.run import topology_expectations
    from testkit import fixture_host

    host = fixture_host("h200-1gpu")
    return topology_expectations(host, host.gpu.inventory())


def test_no_baseline_judges_the_checked_gemm_against_the_links():
    verdicts = judge_document(doc("h200-l2.json"), None, _h200_topology())
    rows = {r.metric: r for r in verdicts.rows}
    assert verdicts.origin == "topology" and verdicts.compared
    assert rows["gemm.bf16"].status == "PASS" and rows["gemm.bf16"].expected == pytest.approx(685.1, abs=0.1)
    assert rows["hbm.memtest"].status == "SKIP"  # no expectation: a memory test is not a copy
    hog = judge_document(doc("h200-l2-hog.json"), None, _h200_topology())
    assert exit_with_compare(1, hog) == 2
