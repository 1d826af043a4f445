"""diag's recorded outputs from the lent H200 (tests/fixtures/diag, telemetry traces), the DCGM
parser, the baseline floors and compare: all pure, no torch needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpunode.baselines.compare import catalogue_for
from gpunode.baselines.schema import BaselineError, load_baseline
from gpunode.diag import dcgm
from gpunode.diag.compare import floors_for, judge_document
from gpunode.diag.metrics import metrics_of
from gpunode.diag.results import DiagDocument, TestResult
from gpunode.diag.run import load_result, run_telemetry_result
from gpunode.diag.verdicts import Floors
from gpunode.host.gpu.telemetry import Trace
from gpunode.host.runner import CommandResult

FIX = Path(__file__).parent / "fixtures"
H200_FLOORS = Floors(sm_clock_min_mhz=1200, power_min_ratio=0.90, source="h200 baseline")


def doc(name: str) -> dict:
    return json.loads((FIX / "diag" / name).read_text())


def trace(name: str) -> Trace:
    return Trace.from_json(json.loads((FIX / "telemetry" / name).read_text()))


@pytest.mark.parametrize("name,status", [("h200-l1.json", "OK"), ("h200-l2.json", "OK"),
                                         ("h200-l2-hog.json", "WARN"), ("h200-l3.json", "OK"),
                                         ("h200-l3-default.json", "OK")])
def test_recorded_documents_round_trip_with_their_verdicts(name, status):
    data = doc(name)
    parsed = DiagDocument.from_json(data)
    assert parsed.status == data["status"] == status
    again = parsed.to_json()
    assert again["results"] == data["results"] and again["status"] == status


def test_recorded_h100_thermal_slowdown_fails_level2_and_clocks_phase_defers():
    """The lent H100 ran hot under the sustained GEMM (87 C, sw_thermal_slowdown): every product
    was right, yet the node is not fit; the clocks phase names what held the clock."""
    data = doc("h100-l2-thermal.json")
    parsed = DiagDocument.from_json(data)
    assert parsed.status == data["status"] == "FAIL" and data["exit_code"] == 2
    results = {r["name"]: r for r in data["results"]}
    assert results["gemm.sustained"]["status"] == "PASS" and results["hbm.memtest"]["status"] == "PASS"
    assert results["load.gemm"]["status"] == "FAIL" and "sw_thermal_slowdown" in results["load.gemm"]["message"]
    clocks = results["clocks.load"]
    assert clocks["status"] == "PASS" and clocks["figures"]["ratio"] < 0.9
    assert "sw_thermal_slowdown" in clocks["message"] and "judged by load" in clocks["message"]
    assert parsed.to_json()["results"] == data["results"]
    # the verdict follows from the recorded telemetry, judged again now
    tel = results["load.gemm"]["telemetry"]
    again = load_result("load.gemm", 0, tel, Floors(sm_clock_min_mhz=None, power_min_ratio=None), [])
    assert again.status == "FAIL" and "sw_thermal_slowdown" in again.message
    cooled = {**tel, "throttle_events": [], "clock_events": ["sw_power_cap"]}
    assert load_result("load.gemm", 0, cooled, Floors(sm_clock_min_mhz=None, power_min_ratio=None), []).status == "PASS"


def test_recorded_h200_level3_at_its_default_duration():
    """`gpunode diag --level 3 --compare` as run (CLI) on the H200: 540 s planned, PASS throughout."""
    data = doc("h200-l3-default.json")
    assert data["level"] == 3 and data["planned_s"] == 540 and 500 < data["duration_s"] <= 545
    results = {r["name"]: r for r in data["results"]}
    assert {"gate", "gemm.correctness", "hbm.memtest", "stress.gemm", "load.stress", "pcie.copy",
            "telemetry"} <= set(results)
    assert all(r["status"] == "PASS" for r in results.values())
    assert results["stress.gemm"]["figures"]["tflops_checked"] > 600


def test_recorded_h200_level2_figures():
    results = {r["name"]: r for r in doc("h200-l2.json")["results"]}
    mem = results["hbm.memtest"]["figures"]
    assert mem["share_of_free"] >= 0.90 and mem["errors"] == 0 and mem["gbps"] > 3000
    gemm = results["gemm.sustained"]["figures"]
    assert gemm["verification_overhead_pct"] <= 5 and gemm["tflops_checked"] > 600


def _load_window(t: Trace, share: float = 0.5) -> dict:
    """The last part of the recording: the GPU under full load."""
    end = max(s.t for s in t.samples)
    start = end - share * (end - min(s.t for s in t.samples))
    return t.between(since=start).summary(gpus=[0])


@pytest.mark.parametrize("name", ["h200-diag-l2.json", "h200-diag-l3.json"])
def test_recorded_load_passes_the_h200_floors(name):
    tel = _load_window(trace(name))
    assert tel["power_w"]["max"] >= 0.9 * tel["power_limit_w"]
    assert load_result("load.gemm", 0, tel, H200_FLOORS, []).status == "PASS"
    assert run_telemetry_result(0, trace(name).summary(gpus=[0]), []).status == "PASS"


def test_recorded_load_with_a_hw_slowdown_fails():
    t = trace("h200-diag-l3.json")
    for s in t.samples[-5:]:
        s.clock_events = (*s.clock_events, "hw_slowdown")
    result = load_result("load.stress", 0, _load_window(t), H200_FLOORS, [])
    assert result.status == "FAIL" and "hw_slowdown" in result.message
    assert run_telemetry_result(0, t.summary(gpus=[0]), []).status == "FAIL"


def test_recorded_load_with_sagging_clocks_fails_and_low_power_warns():
    t = trace("h200-diag-l2.json")
    tel = _load_window(t)
    high = Floors(sm_clock_min_mhz=tel["sm_clock_mhz"]["median"] + 1, power_min_ratio=None)
    assert load_result("load.gemm", 0, tel, high, []).status == "FAIL"
    at = Floors(sm_clock_min_mhz=tel["sm_clock_mhz"]["median"], power_min_ratio=None)
    assert load_result("load.gemm", 0, tel, at, []).status == "PASS"  # the floor itself is not below it
    for s in t.samples:
        s.power_w = s.power_w and min(s.power_w, 500.0)
    weak = load_result("load.gemm", 0, _load_window(t), H200_FLOORS, [])
    assert weak.status == "WARN" and "never reaching 90%" in weak.message


def test_recorded_hog_run_names_the_foreign_process():
    tel = next(r for r in doc("h200-l2-hog.json")["results"] if r["name"] == "telemetry")
    assert tel["status"] == "WARN" and "pid" in tel["message"] and tel["telemetry"]["foreign_processes"]


def test_compare_with_the_shipped_h200_baseline():
    selection = catalogue_for(FIX.parent.parent / "baselines").resolve("h200-141gb-1gpu")
    assert floors_for(selection) == Floors(1200, 0.9, selection.baseline.diag["source"])
    healthy = doc("h200-l2.json")
    verdicts = judge_document(healthy, selection)
    row = next(r for r in verdicts.rows if r.metric == "gemm.bf16")
    assert row.status == "PASS" and verdicts.exit_code == 0
    hog = judge_document(doc("h200-l2-hog.json"), selection)
    row = next(r for r in hog.rows if r.metric == "gemm.bf16")
    assert row.status == "FAIL" and "foreign process" in row.message and hog.exit_code == 2


def test_metrics_of_leaves_short_bursts_out():
    results = [TestResult("gemm.correctness", 0, "PASS", "", {"tflops_checked": 790.0, "dtype": "bf16"}),
               TestResult("gemm.sustained", 0, "ERROR", "", {"tflops_checked": 1.0}),
               TestResult("stress.gemm", 0, "PASS", "", {"tflops_checked": 690.0, "dtype": "bf16", "m": 8192})]
    assert [(m["name"], m["value"]) for m in metrics_of(results)] == [("gemm.bf16", 690.0)]


def test_baseline_diag_section_is_validated(tmp_path):
    base = (FIX.parent.parent / "baselines" / "h200-141gb-1gpu.yaml").read_text()
    for bad, word in (("  sm_clock_min_mhz: fast\n", "sm_clock_min_mhz"), ("  power_min_ratio: 1.5\n", "power_min_ratio"),
                      ("  clocks: 3\n", "unknown")):
        text = base.replace("  sm_clock_min_mhz: 1200\n", bad)
        path = tmp_path / "b.yaml"
        path.write_text(text)
        with pytest.raises(BaselineError, match=word):
            load_baseline(path)
    path = tmp_path / "c.yaml"
    path.write_text(base.replace("  source: >-\n    measured 2026-12-01 with gpunode diag", "  note: >-\n    x", 1))
    with pytest.raises(BaselineError):
        load_baseline(path)


# --- dcgmi diag -j ------------------------------------------------------------------------------

def parse(name: str):
    return dcgm.parse((FIX / "dcgm" / name).read_text())


def test_dcgm4_pass_per_gpu_with_meta():
    results, meta = parse("dcgm4-r1-pass.json")
    assert meta == {"version": "4.2.3", "driver": "580.159.04"}
    assert [(r.name, r.gpu, r.status) for r in results] == [
        ("dcgm.software", 0, "PASS"), ("dcgm.software", 1, "PASS"), ("dcgm.pcie", 0, "PASS"), ("dcgm.pcie", 1, "SKIP")]


def test_dcgm4_failure_names_the_gpu_and_the_warning():
    results, _ = parse("dcgm4-r3-memory-fail.json")
    fail = [r for r in results if r.status == "FAIL"]
    assert [(r.name, r.gpu) for r in fail] == [("dcgm.memory", 3)] and "DBE" in fail[0].message
    assert any(r.status == "WARN" and r.name == "dcgm.targeted_power" for r in results)


def test_dcgm3_shape():
    results, meta = parse("dcgm3-r1-pass.json")
    assert meta["version"] == "3.3.1"
    assert [(r.name, r.gpu, r.status) for r in results] == [("dcgm.denylist", 0, "PASS"),
                                                            ("dcgm.persistence_mode", 0, "FAIL")]


@pytest.mark.parametrize("name", ["dcgm4-runtime-error.json", "dcgm4-truncated.json"])
def test_dcgm_broken_outputs_are_errors_never_pass(name):
    results, _ = parse(name)
    assert results and all(r.status == "ERROR" for r in results)


def test_dcgm_not_installed_skips_and_argv():
    class NotFound:
        def run(self, argv, timeout=10.0, **kw):
            return CommandResult(list(argv), 127, error="dcgmi: command not found")

    results, _ = dcgm.run(NotFound(), 2)
    assert results[0].status == "SKIP" and "DCGM" in results[0].message
    assert dcgm.argv(3, [0, 2]) == ["dcgmi", "diag", "-r", "3", "-j", "-i", "0,2"]
    with pytest.raises(ValueError):
        dcgm.argv(5)
