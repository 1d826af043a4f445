"""The bench results contract: stats, metric validation, JSON round trip of real recordings."""

import json
import math

import pytest

from gpunode.bench import stats
from gpunode.bench.results import SCHEMA, BenchDocument, Metric, Spread, metric_status, overall
from testkit import FIXTURES

RECORDED = ["h100-quick.json", "h100-full.json", "h100-quick-cupy.json", "h200-quick.json", "h200-full.json"]


def test_median_and_cov():
    assert stats.median([3.0, 1.0, 2.0]) == 2.0
    assert stats.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert stats.cov([5.0]) == 0.0
    # sample stdev of 9, 10, 11 is 1.0; mean 10
    assert stats.cov([9.0, 10.0, 11.0]) == pytest.approx(0.1)
    assert stats.cov([0.0, 0.0]) == 0.0
    with pytest.raises(ValueError):
        stats.median([])


def test_spread_rounds_and_rejects_non_finite():
    s = stats.spread([700.0, 710.0, 690.0, 705.0, 695.0])
    assert (s.n, s.min, s.max, s.median) == (5, 690.0, 710.0, 700.0)
    assert s.cov == pytest.approx(0.01129, abs=1e-5)
    with pytest.raises(ValueError, match="non-finite"):
        stats.spread([1.0, math.inf])


def test_metric_validation():
    with pytest.raises(ValueError, match="status"):
        Metric("gemm.bf16", 0, 1.0, "TFLOP/s", "good")
    with pytest.raises(ValueError, match="unit"):
        Metric("gemm.bf16", 0, 1.0, "TFLOPS", "ok")
    with pytest.raises(ValueError, match="needs a value"):
        Metric("gemm.bf16", 0, None, "TFLOP/s", "ok")
    m = Metric("hbm.d2d", 0, 3000.0, "GB/s", "ok", conditions={"counting": "read+write"},
               spread=Spread(5, 2990.0, 3010.0, 3000.0, 0.002))
    data = m.to_json()
    assert "detail" not in data  # optional key, only written when present
    assert Metric.from_json(data) == m


def test_overall_and_exit_codes():
    ok = Metric("a", 0, 1.0, "GB/s", "ok")
    skip = Metric("b", 0, None, "GB/s", "skip")
    err = Metric("c", None, None, "GB/s", "error")
    fail = Metric("d", None, 1.0, "GB/s", "fail")
    assert overall([ok, skip]) == "OK"
    assert overall([ok, err]) == "UNKNOWN"
    assert overall([ok, err, fail]) == "FAIL"
    assert overall([skip]) == "UNKNOWN"  # nothing measured is not a clean bill of health
    assert overall([]) == "UNKNOWN"


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_documents_round_trip(name):
    data = json.loads((FIXTURES / "bench" / name).read_text())
    doc = BenchDocument.from_json(data)
    current = {**data, "metrics": [{**m, "status": metric_status(m["status"])} for m in data["metrics"]]}
    assert doc.to_json() == current  # recorded before the one vocabulary: ok -> PASS on reading
    assert data["schema"] == SCHEMA
    assert data["gpus"]["devices"][0]["name"] in ("NVIDIA H100 80GB HBM3", "NVIDIA H200")
    for m in doc.metrics:
        if m.status == "ok" and m.spread is not None:
            assert m.spread.min <= m.value <= m.spread.max
            assert m.spread.n == (5 if doc.mode == "quick" else 20)


@pytest.mark.parametrize("name,hbm_tb_s", [("h100-full.json", 3.35), ("h200-full.json", 4.8)])
def test_recorded_figures_are_plausible(name, hbm_tb_s):
    """Real figures: GEMM below the 989 TFLOP/s dense bf16 spec, D2D (read+write) below twice the
    HBM spec (a copy moves each byte twice) and above 80 % of it, H2D below PCIe Gen5 x16's 64 GB/s."""
    doc = BenchDocument.from_json(json.loads((FIXTURES / "bench" / name).read_text()))
    by = {m.name: m for m in doc.metrics}
    assert 500 < by["gemm.bf16"].value < 989
    assert by["gemm.fp8"].value > by["gemm.bf16"].value > by["gemm.tf32"].value
    assert 0.8 * hbm_tb_s * 1000 < by["hbm.d2d"].value < 2 * hbm_tb_s * 1000
    assert by["hbm.d2d"].conditions["counting"] == "read+write"
    assert 30 < by["h2d.pinned"].value < 64
    assert doc.tools["nccl-tests"] == "2.19.6"


def test_from_json_rejects_other_documents():
    with pytest.raises(ValueError, match="not a gpunode bench result"):
        BenchDocument.from_json({"schema": "gpunode.audit/1"})
    with pytest.raises(ValueError, match="mode"):
        BenchDocument.from_json({"schema": SCHEMA, "mode": "fast"})
    with pytest.raises(ValueError, match="lacks"):
        BenchDocument.from_json({"schema": SCHEMA, "mode": "quick", "metrics": [{"name": "x"}]})
