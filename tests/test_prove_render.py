"""`apply --prove`'s before/after table: a figure measured only on one side (or without a
noise estimate) is shown as blank cells, never a crash after the host was changed."""

from __future__ import annotations

from types import SimpleNamespace

from rich.console import Console

from gpunode.tune.prove import SAME, UNCOMPARED, ProveRow, render_prove


def test_a_row_without_a_change_or_noise_shows_blank_cells():
    rows = [ProveRow("gemm.bf16", "GPU0", "TFLOP/s", 700.0, 702.0, 0.003, 0.01, SAME),
            ProveRow("hbm.copy", "GPU0", "GB/s", 2900.0, None, None, None, UNCOMPARED, "not measured after")]
    console = Console(record=True, width=160, force_terminal=False)
    render_prove(SimpleNamespace(rows=rows, kept=True, result="proven", reason="no figure worse"), console)
    text = console.export_text()
    gemm = next(line for line in text.splitlines() if "gemm.bf16" in line)
    hbm = next(line for line in text.splitlines() if "hbm.copy" in line)
    assert "+0.3%" in gemm and "±1.0%" in gemm
    assert "%" not in hbm and "not compared not measured after" in hbm
    assert "proven: no figure worse" in text
