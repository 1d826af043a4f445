"""vulture at its default confidence over agent/gpunode and checks finds nothing unused
(issue 21 item 5). tests/ is scanned as a user of the package (a name only the tests use is
used), its own findings are not judged here; tests/vulture_whitelist.py lists the names used
in ways vulture cannot see, each with why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DECORATORS = "@check,@*.command,@*.callback"  # registered by their decorator: the checks, typer's commands


def test_vulture_finds_no_dead_code_in_the_product():
    pytest.importorskip("vulture")
    r = subprocess.run([sys.executable, "-m", "vulture", "agent/gpunode", "checks", "tests",
                        "tests/vulture_whitelist.py", "--exclude", "agent/gpunode/checks",
                        "--ignore-decorators", DECORATORS],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 3), r.stderr  # 3: dead code found
    found = [line for line in r.stdout.splitlines() if line.startswith(("agent/", "checks/"))]
    assert found == []
