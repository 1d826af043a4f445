"""gpunode.layout's own decisions, in process: in a table a group heading is shown once and a
new heading starts a section, a style applies to a cell with text; folded, a row's key fields
lead ("-" when it has none), labelled fields say their header and unlabelled ones stand alone."""

from __future__ import annotations

import io

from rich.console import Console

from gpunode.layout import Col, show

COLS = [Col("Area", group=True), Col("Status", whole=True, style=lambda v: "red" if v == "FAIL" else None),
        Col("Check", whole=True), Col("Result", label=False), Col("Note")]
ROWS = [["gpu", "PASS", "gpu.a", "fine", "n1"], ["gpu", "FAIL", "gpu.b", "hot", ""], ["net", "", "", "r", "n3"]]


def shown(width: int, color: bool = False) -> list[str]:
    buf = io.StringIO()
    console = Console(file=buf, width=width, color_system="standard" if color else None, force_terminal=color)
    show(console, "T", COLS, ROWS, "table")
    return buf.getvalue().splitlines()


def test_a_table_shows_each_heading_once_and_a_new_one_starts_a_section():
    assert shown(120)[4:9] == [
        "│ gpu  │ PASS   │ gpu.a │ fine   │ n1   │",
        "│      │ FAIL   │ gpu.b │ hot    │      │",
        "├──────┼────────┼───────┼────────┼──────┤",
        "│ net  │        │       │ r      │ n3   │",
        "└──────┴────────┴───────┴────────┴──────┘",
    ]


def test_a_style_colours_the_cells_it_names_only():
    text = "\n".join(shown(120, color=True))
    assert "\x1b[31mFAIL\x1b[0m" in text and "\x1b[31mPASS" not in text


def test_folded_rows_lead_with_their_key_fields_then_the_others_below():
    assert shown(60) == ["T", "gpu", "  PASS  gpu.a", "      fine", "      Note: n1", "  FAIL  gpu.b", "      hot",
                         "net", "  -", "      r", "      Note: n3"]
