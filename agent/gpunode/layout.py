"""Tables that degrade well: one layout decision for every report gpunode prints.

- table: a rich table, on a terminal of at least WIDE columns where it fits without cutting
  an id, a status or a verdict;
- folded: on a narrower terminal, one line per row with its key fields (ids, statuses), the
  other fields indented below it, wrapped at words; nothing is cut;
- plain: piped or redirected, a header line naming the columns, then one line per row, never
  wrapped, so `grep <check id>` finds the whole result;
- tsv: a header and tab-separated rows for scripts.
Cells of whole columns (ids, statuses, verdicts) are never truncated in any layout.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDE = 100


@dataclass(frozen=True)
class Col:
    header: str
    whole: bool = False  # an id, status or verdict: on the row's first line, never cut
    justify: str = "left"
    style: Callable[[str], str | None] | None = None  # rich style for a cell value (table only)
    group: bool = False  # a heading: blank when equal to the row above (table), a heading line (folded)
    inline: bool = False  # folded: on the row's first line too (short values: a GPU, a host)
    label: bool = True  # folded: "Header: value" below the first line (False: the value alone)


def pick_format(requested: str | None, console) -> str:
    """No explicit choice: a table on a terminal, plain lines when piped."""
    if requested:
        return requested
    return "table" if console.is_terminal else "plain"


def _one_line(value) -> str:
    return " ".join(str(value if value is not None else "").split())


def show(console, title: str, cols: Sequence[Col], rows: Sequence[Sequence], fmt: str | None = None,
         footer: Sequence[str] = ()) -> None:
    cells = [[_one_line(v) for v in row] for row in rows]
    RENDERERS[pick_format(fmt, console)](console, title, cols, cells, footer)


def _show_tsv(console, title: str, cols: Sequence[Col], cells: list[list[str]], footer: Sequence[str]) -> None:
    _print_lines(console, ["\t".join(c.header for c in cols)] + ["\t".join(row) for row in cells], tabs=True)


def _show_plain(console, title: str, cols: Sequence[Col], cells: list[list[str]], footer: Sequence[str]) -> None:
    lines = [title] if title else []
    if cells:  # the header names the columns: the rows are fields without box or labels
        lines.append("  ".join(c.header for c in cols))
    lines += ["  ".join(v or "-" for v in row) for row in cells]
    _print_lines(console, lines + list(footer))


def _show_table(console, title: str, cols: Sequence[Col], cells: list[list[str]], footer: Sequence[str]) -> None:
    _table_or_folded(console, _rich_table(title, cols, cells), title, cols, cells)
    _print_lines(console, fit(footer, console.width))


# The renderer registry: every command that prints results offers these (plus json, its document:
# cli/common.py's ResultFormat). A new layout is one function (console, title, cols, cells, footer)
# and one entry here; `--format NAME` then reaches it from every such command.
RENDERERS: dict[str, Callable[..., None]] = {"table": _show_table, "plain": _show_plain, "tsv": _show_tsv}


def _table_or_folded(console, table, title: str, cols: Sequence[Col], cells: list[list[str]]) -> None:
    if console.width >= WIDE and console.measure(table).minimum <= console.width:
        console.print(table)
    else:
        _print_lines(console, fit(_folded(title, cols, cells, console.width), console.width))


def fit(lines: Sequence[str], width: int) -> list[str]:
    """A terminal's lines: each wrapped at words to the terminal's width, continuation lines
    indented under it. A word wider than the terminal (an id, a path) stays whole: an id is never
    cut. Piped output does not come here: it is never wrapped."""
    from rich.cells import cell_len

    out: list[str] = []
    for line in lines:
        if cell_len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip(" ")) + 2)
        out += textwrap.wrap(line, max(width, 20), subsequent_indent=indent, break_long_words=False,
                             break_on_hyphens=False) or [line]
    return out


def show_table(console, table, fmt: str | None = None, footer: Sequence[str] = ()) -> None:
    """The same layouts for a rich Table built elsewhere: its no_wrap columns count as whole."""
    from rich.text import Text

    def plain(cell) -> str:
        if isinstance(cell, Text):
            return cell.plain
        if isinstance(cell, str):
            return Text.from_markup(cell).plain
        return str(cell)

    cols = [Col(plain(c.header), whole=bool(c.no_wrap), justify=c.justify) for c in table.columns]
    columns = [[plain(cell) for cell in c.cells] for c in table.columns]
    rows = [list(r) for r in zip(*columns, strict=False)] if columns else []
    title = plain(table.title) if table.title else ""
    if pick_format(fmt, console) != "table":
        show(console, title, cols, rows, fmt or pick_format(fmt, console), footer)
        return
    for column in table.columns:  # a word is never cut to "…": the minimum width holds the longest
        column.overflow = "fold"
    _table_or_folded(console, table, title, cols, [[_one_line(v) for v in row] for row in rows])
    _print_lines(console, fit(footer, console.width))


def _rich_table(title: str, cols: Sequence[Col], rows: list[list[str]]):
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=escape(title) if title else None, expand=False)
    for c in cols:
        table.add_column(c.header, no_wrap=c.whole, justify=c.justify, overflow="fold")  # type: ignore[arg-type]
    previous: list[str] = []
    for row in rows:
        shown = [_table_cell(c, v, previous[i] if previous else None) for i, (c, v) in enumerate(zip(cols, row, strict=True))]
        if _starts_section(cols, previous, row):
            table.add_section()
        table.add_row(*shown)
        previous = row
    return table


def _table_cell(c: Col, v: str, above: str | None) -> str:
    """One cell as rich markup: a group heading equal to the row above is left blank; styled by its Col."""
    from rich.markup import escape

    text = "" if c.group and above == v else escape(v)
    style = c.style(v) if c.style and text else None
    return f"[{style}]{text}[/]" if style else text


def _starts_section(cols: Sequence[Col], previous: list[str], row: list[str]) -> bool:
    """A row whose group heading differs from the row above starts a new section (a rule)."""
    return bool(previous) and any(c.group for c in cols) and any(
        c.group and previous[i] != row[i] for i, c in enumerate(cols))


def _folded(title: str, cols: Sequence[Col], rows: list[list[str]], width: int) -> list[str]:
    lines = [title] if title else []
    width = max(width, 40)
    heading: list[str] = []
    for row in rows:
        groups = [v for c, v in zip(cols, row, strict=True) if c.group]
        if groups and groups != heading:
            lines.append(" · ".join(v or "-" for v in groups))
            heading = groups
        lines += _folded_row(cols, row, "  " if groups else "", width)
    return lines


def _folded_row(cols: Sequence[Col], row: list[str], indent: str, width: int) -> list[str]:
    """One row folded: its whole and inline fields on one line, each other field below it, wrapped at words."""
    key = [v for c, v in zip(cols, row, strict=True) if (c.whole or c.inline) and v and not c.group]
    lines = [indent + ("  ".join(key) if key else "-")]
    for c, v in zip(cols, row, strict=True):
        if c.whole or c.inline or c.group or not v:
            continue
        text = f"{c.header}: {v}" if c.label else v
        lines += textwrap.wrap(text, width - 1, initial_indent=indent + "    ", subsequent_indent=indent + "      ",
                               break_long_words=False, break_on_hyphens=False)
    return lines


def _print_lines(console, lines, tabs: bool = False) -> None:
    """Verbatim: no markup, no wrapping. `tabs` (tsv): written as they are, past rich, which
    would expand them."""
    for line in lines:
        if tabs:
            console.file.write(line + "\n")
        else:
            console.out(line, highlight=False)
