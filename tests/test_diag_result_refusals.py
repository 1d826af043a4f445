"""TestResult.from_json refuses each kind of broken stored result with its own message (pinned
when it was split into helpers, issue 21); the result is the recorded H200 level-1 GEMM one."""

import json

import pytest

from gpunode.diag.results import STATUSES, TestResult
from testkit import FIXTURES

GEMM = json.loads((FIXTURES / "diag" / "h200-l1.json").read_text())["results"][1]


def test_the_recorded_result_reads_back_as_written():
    assert TestResult.from_json(GEMM).to_json() == GEMM


@pytest.mark.parametrize("data, message", [
    (["gemm"], "diag result: expected an object, got list"),
    ({**GEMM, "name": "gemm\ncorrectness"}, "diag result name must be a one-line string, got 'gemm\\ncorrectness'"),
    ({**GEMM, "name": ""}, "diag result name must be a one-line string, got ''"),
    ({**GEMM, "gpu": False}, "diag result gemm.correctness: gpu must be an index or null, got False"),
    ({**GEMM, "status": "OK"}, f"diag result gemm.correctness: status 'OK' not in {STATUSES}"),
    ({**GEMM, "detail": []}, "diag result gemm.correctness: detail must be a mapping"),
    ({**GEMM, "telemetry": "hot"}, "diag result gemm.correctness: telemetry must be a mapping"),
    ({**GEMM, "figures": {**GEMM["figures"], "seconds": float("nan")}},
     "diag result gemm.correctness: figure seconds is not finite"),
])
def test_each_broken_part_is_refused_with_its_reason(data, message):
    with pytest.raises(ValueError) as err:
        TestResult.from_json(data)
    assert str(err.value) == message
