"""A figure against this node's own history (history.trend.judge_against_history), the messages
the history tests leave open: lower-is-better and above-the-median wording, the runs still
needed, and metrics that are not judged at all (failed, no number, not a metric)."""

from __future__ import annotations

from gpunode.history.store import Figure
from gpunode.history.trend import judge_against_history


def earlier(name: str, unit: str, values, gpu=None, trusted=True):
    return [(None, Figure(name, gpu, v, unit, "{}", None, trusted)) for v in values]


def metric(name: str, value, unit: str, gpu=None, status: str = "ok") -> dict:
    return {"name": name, "gpu": gpu, "value": value, "unit": unit, "status": status, "conditions": {}}


def test_a_latency_above_its_median_is_worse_and_said_so():
    (row,) = judge_against_history({"metrics": [metric("fio.rand_read.p99_us", 125.0, "us")]},
                                   earlier("fio.rand_read.p99_us", "us", [100.0, 90.0, 110.0]))
    assert (row.status, row.ratio, row.median, row.subject) == ("WARN", 0.8, 100.0, "")
    assert row.message == ("20.0% below this node's last 3 runs (median 100.0 us) (lower is better); "
                           "warn below 95%")


def test_a_rate_above_its_median_passes():
    (row,) = judge_against_history({"metrics": [metric("gemm.bf16", 1100.0, "TFLOP/s", gpu=1)]},
                                   earlier("gemm.bf16", "TFLOP/s", [1000.0] * 4, gpu=1), last=3)
    assert (row.status, row.runs, row.subject) == ("PASS", 3, "GPU1")
    assert row.message == "10.0% above this node's last 3 runs (median 1,000.0 TFLOP/s); warn below 95%"


def test_too_few_trusted_runs_say_how_many_are_needed():
    history = earlier("gemm.bf16", "TFLOP/s", [1000.0] * 2) + earlier("gemm.bf16", "TFLOP/s", [1.0] * 3, trusted=False)
    (row,) = judge_against_history({"metrics": [metric("gemm.bf16", 1000.0, "TFLOP/s")]}, history)
    assert (row.status, row.median, row.ratio) == ("SKIP", None, None)
    assert row.message == "2 earlier comparable run(s) on this node; 3 needed"


def test_failed_unmeasured_and_malformed_metrics_are_not_judged():
    doc = {"metrics": [metric("gemm.bf16", 1.0, "TFLOP/s", status="failed"), metric("gemm.bf16", None, "TFLOP/s"),
                       metric("gemm.bf16", "1", "TFLOP/s"), "gemm.bf16"]}
    assert judge_against_history(doc, earlier("gemm.bf16", "TFLOP/s", [1.0] * 5)) == []
    assert judge_against_history({"metrics": None}, []) == []
