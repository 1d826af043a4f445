"""Which measurements count: a bench figure is doubtful from its first new uncorrectable ECC
error (and not without one), and the node's history keeps PASS figures only, so a failed run
never moves the medians later runs are judged against."""

from __future__ import annotations

import pytest

from gpunode.bench.trust import concerns
from gpunode.history.record import figures_of


@pytest.mark.parametrize(("telemetry", "doubtful"), [
    ({"ecc_uncorrected_delta": 1}, True), ({"ecc_uncorrected_delta": 0}, False),
    ({"ecc_uncorrected_delta": None}, False), ({}, False),
])
def test_one_new_uncorrectable_ecc_error_makes_a_figure_doubtful(telemetry, doubtful):
    found = [c.text for c in concerns(telemetry, None) if c.kind == "errors"]
    assert found == (["1 new uncorrectable ECC error(s)"] if doubtful else [])


def test_history_keeps_pass_figures_only():
    base = {"name": "gemm.bf16", "gpu": 0, "unit": "TFLOP/s", "conditions": {}}
    doc = {"metrics": [{**base, "status": "FAIL", "value": 300.0}, {**base, "status": "WARN", "value": 600.0},
                       {**base, "status": "PASS", "value": 680.0}, "not a metric"]}
    assert [f.value for f in figures_of(doc)] == [680.0]
