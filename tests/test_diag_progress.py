"""What `gpunode diag` says while it runs: each phase is named as it starts, the gate checks and
DCGM before the GPU tests (an operator watching a node's burn-in sees where it is)."""

from __future__ import annotations

from test_diag_run import Recording, ctx_of

from gpunode.diag.results import TestResult
from gpunode.diag.run import run_diag


def test_the_gate_checks_and_dcgm_are_named_before_the_gpu_tests():
    seen: list[tuple[str, float | None]] = []
    ctx = ctx_of(Recording(), 1)
    ctx.progress = lambda text, left: seen.append((text, left))
    ctx.gate = lambda: TestResult("gate", None, "PASS", "all gate checks passed")
    ctx.dcgm = lambda: ([], {})
    run_diag(ctx)
    assert [text for text, _ in seen[:2]] == ["gate checks", "dcgmi diag"]
    assert seen[0][1] is None  # level 1 has no time budget to count down
