"""Trust in a bench figure: telemetry (foreign process, throttling, new errors) and spread turn a
passing ratio into WARN (or FAIL where the baseline says so); a low figure names its likely cause;
% of the datasheet peak. Recorded real results (tests/fixtures/bench, tests/fixtures/device)."""

from __future__ import annotations

import copy
import json
import os

import pytest

from gpunode.baselines.compare import FAIL, PASS, WARN, compare_document
from gpunode.baselines.schema import BaselineError, load_baseline
from gpunode.bench import trust
from gpunode.bench.results import BenchDocument
from testkit import FIXTURES

H200_QUICK = FIXTURES / "bench" / "h200-quick.json"
QUIET = {"samples": 30, "foreign_processes": [], "clock_events": ["sw_power_cap"], "pcie": {"gen": 5, "width": 16,
         "max_gen": 5, "max_width": 16}, "power_w": {"median": 690.0, "max": 700.0}, "power_limit_w": 700.0,
         "sm_clock_mhz": {"min": 1600, "median": 1700, "max": 1980}, "temp_c": {"max": 61}, "xid": []}
NEIGHBOUR = {"pid": 4242, "name": "python3", "used_bytes": 2 << 30}


def _doc(**telemetry_by_metric) -> dict:
    doc = json.loads(H200_QUICK.read_text())
    for m in doc["metrics"]:
        if m["status"] == "ok":
            m["telemetry"] = copy.deepcopy(telemetry_by_metric.get(m["name"].replace(".", "_"), QUIET))
    return doc


def _row(verdicts, metric):
    return next(r for r in verdicts.rows if r.metric == metric)


def test_quiet_telemetry_keeps_the_real_h200_run_passing_with_peak_share():
    v = compare_document(_doc())
    assert v.status == "OK", [(r.metric, r.status, r.message) for r in v.rows if r.status != PASS and r.status != "SKIP"]
    bf16 = _row(v, "gemm.bf16")
    assert bf16.status == PASS and bf16.concerns == ()
    assert bf16.peak_ratio == pytest.approx(bf16.measured / 989, abs=1e-4)  # 989 TFLOP/s dense bf16 datasheet


def test_a_foreign_process_makes_a_passing_figure_not_trustworthy():
    busy = {**QUIET, "foreign_processes": [NEIGHBOUR]}
    v = compare_document(_doc(gemm_bf16=busy))
    bf16 = _row(v, "gemm.bf16")
    assert bf16.ratio >= 0.9  # the ratio alone says PASS
    assert bf16.status == WARN and bf16.message.startswith("not trustworthy: foreign process on the GPU: pid 4242")
    assert v.status == "WARN" and v.exit_code == 1


def test_hw_slowdown_is_a_throttle_but_the_power_cap_is_not():
    assert trust.concerns({"clock_events": ["sw_power_cap", "gpu_idle"]}, 0.001) == []
    found = trust.concerns({"clock_events": ["sw_power_cap", "hw_slowdown"]}, 0.001)
    assert [c.kind for c in found] == ["throttle"] and "hw_slowdown" in found[0].text


def test_new_errors_during_a_metric_are_untrusted():
    found = trust.concerns({"ecc_uncorrected_delta": 1, "xid": [{"gpu": 0, "xid": 79}]}, None)
    assert [c.kind for c in found] == ["errors"] and "Xid 79" in found[0].text
    assert trust.concerns({"ecc_uncorrected_delta": 0, "xid": []}, None) == []


def test_spread_above_the_bound_is_unstable_and_at_the_bound_is_not():
    assert trust.concerns(None, 0.06, 0.06) == []
    found = trust.concerns(None, 0.0601, 0.06)
    assert [c.kind for c in found] == ["unstable"]


def test_unstable_spread_warns_through_compare():
    doc = _doc()
    bf16 = next(m for m in doc["metrics"] if m["name"] == "gemm.bf16")
    bf16["spread"]["cov"] = 0.10  # the 10 % beside a neighbour
    v = compare_document(doc)
    assert _row(v, "gemm.bf16").status == WARN and "unstable: CoV 10.0%" in _row(v, "gemm.bf16").message


def test_fp8_has_its_own_wider_spread_bound():
    doc = _doc()
    fp8 = next(m for m in doc["metrics"] if m["name"] == "gemm.fp8")
    assert fp8["spread"]["cov"] > 0.06  # the real recording: FP8 is noisy even alone
    assert _row(compare_document(doc), "gemm.fp8").status == PASS


def test_baseline_can_fail_untrusted_figures(tmp_path):
    path = tmp_path / "strict.yaml"
    path.write_text((FIXTURES.parent.parent / "baselines" / "h200-141gb-1gpu.yaml").read_text()
                    .replace("name: h200-141gb-1gpu", "name: strict")
                    .replace("max_cov: 0.06}", "max_cov: 0.06, untrusted: fail}"))
    v = compare_document(_doc(gemm_bf16={**QUIET, "foreign_processes": [NEIGHBOUR]}), baseline_file=str(path))
    assert _row(v, "gemm.bf16").status == FAIL


def test_a_low_figure_names_its_likely_cause():
    doc = _doc(h2d_pinned={**QUIET, "pcie": {"gen": 3, "width": 16, "max_gen": 5, "max_width": 16}})
    h2d = next(m for m in doc["metrics"] if m["name"] == "h2d.pinned")
    h2d["value"] = 12.0
    row = _row(compare_document(doc), "h2d.pinned")
    assert row.status == FAIL and "likely cause: PCIe link at Gen3 x16 during the copy (capable of Gen5 x16)" in row.message
    assert trust.likely_cause(QUIET) == "power-capped: 690 W of a 700 W limit"
    assert trust.likely_cause({"clock_events": []}) is None


@pytest.mark.parametrize("bad, why", [
    ("peak: {value: -1, source: x}", "peak.value"),
    ("peak: {value: 10}", "peak.source"),
    ("max_cov: 2", "max_cov"),
    ("untrusted: maybe", "untrusted"),
])
def test_bad_trust_keys_in_a_baseline_are_refused(tmp_path, bad, why):
    path = tmp_path / "b.yaml"
    path.write_text(f"name: b\nmatch: {{gpu_name: x}}\ndefaults: {{warn: 0.9, fail: 0.8}}\nmetrics:\n"
                    f"  gemm.bf16:\n    value: 1\n    unit: TFLOP/s\n    source: s\n    {bad}\n")
    with pytest.raises(BaselineError, match=why):
        load_baseline(path)


def test_telemetry_round_trips_through_the_results_contract():
    doc = _doc()
    again = BenchDocument.from_json(json.loads(json.dumps(BenchDocument.from_json(doc).to_json())))
    assert next(m for m in again.metrics if m.name == "gemm.bf16").telemetry == QUIET


def _sampler_with(neighbour: bool, interval_s: float = 0.01):
    from gpunode.host.gpu.sample import Sample
    from gpunode.host.gpu.telemetry import ReplayTelemetrySource, TelemetrySampler, Trace

    procs = ((os.getpid(), "gpunode", 1 << 30),) + (((4242, "burn", 2 << 30),) if neighbour else ())
    trace = Trace(samples=[Sample(t=0.0, gpu=0, sm_clock_mhz=1980, power_w=650, power_limit_w=700,
                                  clock_events=("sw_power_cap",), processes=procs)])
    return TelemetrySampler(ReplayTelemetrySource(trace), interval_s=interval_s, process_every=1,
                            ours=lambda pid: pid == os.getpid())


@pytest.mark.parametrize("neighbour", [False, True])
@pytest.mark.parametrize("interval_s", [0.01, 3600.0])  # 3600: steps shorter than a tick (the latest reading)
def test_every_measured_metric_carries_the_telemetry_of_its_step(tmp_path, neighbour, interval_s):
    from bench_fakes import FakeBackend
    from test_bench_run import fake_find, host_with_h100, opts

    from gpunode.bench import run as bench_run

    sampler = _sampler_with(neighbour, interval_s).start()
    try:
        doc = bench_run.run_steps(host_with_h100(tmp_path), opts(only=("gemm", "hbm")),
                                  find=fake_find(FakeBackend(per_op_s=0.0014)), sampler=sampler)
    finally:
        sampler.stop()
    measured = [m for m in doc.metrics if m.status == "PASS"]
    assert measured and all(m.telemetry and m.telemetry["gpus"] == [0] for m in measured)
    assert all(m.telemetry is None for m in doc.metrics if m.status == "SKIP")
    foreign = [p["pid"] for p in measured[0].telemetry["foreign_processes"]]
    assert foreign == ([4242] if neighbour else [])  # gpunode itself is never foreign
    saved = BenchDocument.from_json(json.loads(json.dumps(doc.to_json())))
    assert [bool(trust.untrusted(trust.concerns(m.telemetry, None))) for m in saved.metrics if m.status == "PASS"] \
        == [neighbour] * len(measured)


DEVICE = FIXTURES / "device"


def test_real_h200_idle_run_with_telemetry_passes():
    doc = json.loads((DEVICE / "interference-h200-idle.json").read_text())
    measured = [m for m in doc["metrics"] if m["status"] == "ok"]
    assert measured and all(m["telemetry"]["foreign_processes"] == [] for m in measured)
    assert all(m["telemetry"]["pcie"] == {"gen": 5, "width": 16, "max_gen": 5, "max_width": 16} for m in measured)
    v = compare_document(doc)
    assert v.status == "OK" and all(r.concerns == () for r in v.rows if r.status == PASS)


@pytest.mark.parametrize("name, slowdown", [("load5", 0.05), ("load10", 0.10)])
def test_real_h200_runs_beside_a_co_running_process_are_flagged_as_interference(name, slowdown):
    """Recorded by benchmarks/interference.py: a second process slowed a plain torch GEMM by ~5 %
    and ~10 %; by the ratio alone every figure PASSed (>= 90 %), the foreign process makes them WARN."""
    summary = json.loads((DEVICE / "interference-h200.json").read_text())[name]
    assert abs(summary["slowdown_before"] - slowdown) < 0.02 and abs(summary["slowdown_after"] - slowdown) < 0.02
    v = compare_document(json.loads((DEVICE / f"interference-h200-{name}.json").read_text()))
    compared = [r for r in v.rows if r.status != "SKIP"]
    assert v.status == "WARN" and compared
    for r in compared:
        assert r.status == WARN and r.ratio >= 0.87  # the figure alone would not have said so
        assert r.message.startswith("not trustworthy: foreign process on the GPU: pid ")
