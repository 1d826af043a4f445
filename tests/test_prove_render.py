"""`apply --prove`'s before/after table: a figure measured only on one side (or without a
noise estimate) is shown as blank cells, never a crash after the host was changed."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
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


@pytest.mark.parametrize(("kept", "result", "style"), [
    (True, "proven", "\x1b[32m"), (False, "rolled-back", "\x1b[1;31m"), (False, "failed", "\x1b[33m")])
def test_the_result_word_is_green_kept_red_rolled_back_else_yellow(kept, result, style):
    out = io.StringIO()
    console = Console(file=out, width=160, force_terminal=True, color_system="standard")
    render_prove(SimpleNamespace(rows=[], kept=kept, result=result, reason="why"), console)
    assert f"{style}{result}\x1b[0m: why" in out.getvalue()
