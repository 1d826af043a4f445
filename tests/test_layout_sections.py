"""A table on a terminal: rows of one group (a GPU, a host) sit together under their heading,
shown once, and a rule separates one group from the next; a table without groups has no rules."""

from __future__ import annotations

import io

from rich.console import Console

from gpunode.layout import Col, show

ROWS = [["GPU0", "gemm", "PASS"], ["GPU0", "hbm", "PASS"], ["GPU1", "gemm", "FAIL"]]


def _table(cols) -> list[str]:
    console = Console(record=True, width=160, force_terminal=True, color_system=None, file=io.StringIO())
    show(console, "diag", cols, ROWS, "table")
    return console.export_text().splitlines()


def test_each_group_starts_after_a_rule_with_its_heading_once():
    lines = _table([Col("GPU", group=True), Col("Test"), Col("Status")])
    assert lines[0].strip() == "diag"  # the title above the table
    body = [line for line in lines if "gemm" in line or "hbm" in line or line.startswith("├")]
    assert len(body) == 4 and "GPU0" in body[0]
    assert "hbm" in body[1] and "GPU0" not in body[1]  # the heading once per group
    assert body[2].startswith("├") and "GPU1" in body[3]  # a rule, then the next group


def test_a_table_without_groups_has_no_rules_between_rows():
    lines = _table([Col("GPU"), Col("Test"), Col("Status")])
    assert not any(line.startswith("├") for line in lines)
    assert sum("GPU0" in line for line in lines) == 2
