"""Every `from gpunode.X import` resolves for static tools: mypy (configured in pyproject.toml,
mypy_path = "agent") finds each gpunode module as a file or folder under agent/gpunode/.
Type errors may remain; an unresolved gpunode import may not."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNRESOLVED = re.compile(r'(Cannot find implementation or library stub for module named|'
                        r'Skipping analyzing|Library stubs not installed for) "(?P<module>[\w.]+)"')


def _mypy(*args: str, cwd: Path = ROOT) -> str:
    pytest.importorskip("mypy", reason="mypy is in the dev extra")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "--no-error-summary",
                           "--show-error-codes", *args], capture_output=True, text=True, cwd=cwd, timeout=600)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr  # 2: mypy itself failed (config, crash)
    return proc.stdout


def unresolved_gpunode_imports(output: str) -> list[str]:
    return [line for line in output.splitlines()
            if (m := UNRESOLVED.search(line)) and m.group("module").split(".")[0] == "gpunode"]


def test_every_gpunode_import_resolves():
    output = _mypy("-p", "gpunode")
    assert "Can't find package" not in output, output
    assert unresolved_gpunode_imports(output) == []


def test_an_unresolved_gpunode_import_would_be_caught(tmp_path):
    """The guard above is not vacuous: a planted import of a module that does not exist is found."""
    probe = tmp_path / "probe.py"
    probe.write_text("from gpunode.no_such_module import anything  # noqa\n")
    output = _mypy("--config-file", str(ROOT / "pyproject.toml"), str(probe))
    assert unresolved_gpunode_imports(output), output
