"""Every report on an operator's terminal and through a pipe: on an 80-column terminal no line
is wider than 80 columns (titles, footers and paths included); piped, nothing is hard-wrapped
(a path stays on its line for grep) and nothing is drawn in boxes, and the rows come under a
header line that names the columns."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len
from rich.console import Console

from testkit import FIXTURES, HOSTS

ROOT = Path(__file__).resolve().parent.parent

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX = re.compile("[\u2500-\u257f]")  # box drawing
SNAP = HOSTS / "h100-sxm-1gpu"
REPORTS = [
    ("audit", "--snapshot", str(SNAP)),
    ("audit", "--snapshot", str(SNAP), "--verbose", "--problems"),
    ("apply", "--check", "--sysroot", str(SNAP / "files"), "--profile", "training"),
    ("fleet", "report", str(FIXTURES / "fleet" / "audit-run")),
    ("checks",),
    ("profiles",),
    ("profiles", "training"),
    ("config", "show", "--config", str(ROOT / "docs" / "examples" / "config.yaml")),
    ("compare", str(FIXTURES / "bench" / "h100-quick.json")),
    ("baseline", "list"),
]


def gpunode(*args: str, tty: bool, tmp_path) -> str:
    env = {**os.environ, "COLUMNS": "80", "NO_COLOR": "1", "GPUNODE_STATE_DIR": str(tmp_path / "state")}
    env.pop("TTY_COMPATIBLE", None)
    if tty:
        env["TTY_COMPATIBLE"] = "1"  # rich takes stdout for a terminal
    proc = subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode in (0, 1, 2), proc.stderr
    return ANSI.sub("", proc.stdout)


@pytest.mark.parametrize("args", REPORTS, ids=lambda a: " ".join(a[:2]))
def test_every_line_fits_an_80_column_terminal(args, tmp_path):
    text = gpunode(*args, tty=True, tmp_path=tmp_path)
    wide = [line for line in text.splitlines() if cell_len(line) > 80]
    assert text.strip() and not wide, "\n".join(wide)


@pytest.mark.parametrize("args", REPORTS, ids=lambda a: " ".join(a[:2]))
def test_piped_reports_have_no_boxes(args, tmp_path):
    text = gpunode(*args, tty=False, tmp_path=tmp_path)
    assert text.strip() and not BOX.search(text), text


def test_piped_fleet_report_keeps_a_long_path_on_one_line(tmp_path):
    """rich's 80-column default no longer splits the reports path (or any line) when piped."""
    deep = tmp_path / ("a-long-directory-name-" * 4) / "audit-run"
    shutil.copytree(FIXTURES / "fleet" / "audit-run", deep)
    text = gpunode("fleet", "report", str(deep), tty=False, tmp_path=tmp_path)
    assert f"reports: {deep / 'reports'}" in text.splitlines(), text
    lines = text.splitlines()
    assert lines[1] == "Host  SKU  Status  Result  Failing checks  Outliers"
    assert any(line.startswith("node-c  h100  UNREACHABLE  ") and line.endswith("  -  -") for line in lines), text


def test_diag_report_piped_is_plain_lines_under_a_header():
    from gpunode.cli.diag_cmd import render

    data = {"level": 1, "host": "gpu-07", "status": "FAIL", "duration_s": 61.0, "notes": ["one note"],
            "results": [{"name": "gemm.checked", "gpu": 0, "status": "PASS", "message": "ABFT checksums agree " * 5},
                        {"name": "memory", "gpu": 1, "status": "FAIL", "message": "2 bad words at 0x7f00"}]}
    for tty in (False, True):
        out = io.StringIO()
        render(data, Console(file=out, width=80, force_terminal=tty, color_system=None))
        lines = out.getvalue().splitlines()
        if tty:
            assert all(cell_len(line) <= 80 for line in lines), out.getvalue()
        else:
            assert not BOX.search(out.getvalue())
            assert lines[1] == "Test  GPU  Status  Result"
            assert "memory  1  FAIL  2 bad words at 0x7f00" in lines


def test_consoles_wrap_only_on_a_terminal(monkeypatch):
    """stdout and stderr (progress lines in a CI log) are never hard-wrapped when redirected."""
    from gpunode.cli.common import stderr_console, stdout_console

    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    for make in (stdout_console, stderr_console):
        assert make().soft_wrap is True
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    for make in (stdout_console, stderr_console):
        assert make().soft_wrap is False
