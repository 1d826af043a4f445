"""pyproject.toml stays in a form the newest setuptools builds: CI (and `pip install .`) fetch the
latest setuptools from PyPI, and its deprecations become build errors on a dated release."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution
from setuptools.warnings import SetuptoolsDeprecationWarning

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_setuptools_reads_pyproject_without_deprecations():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    deprecated = [str(w.message).split("\n")[0] for w in caught if issubclass(w.category, SetuptoolsDeprecationWarning)]
    assert deprecated == []
    assert dist.get_name() == "gpunode" and dist.entry_points["console_scripts"] == ["gpunode = gpunode.cli:main"]


def test_every_shipped_directory_is_a_found_package():
    """setuptools warns "Package would be ignored" for a data directory that is not a package
    (playbooks/tasks, playbooks/vars) and says it will stop shipping it; the package is found under
    agent/ through the checks/baselines/playbooks symlinks."""
    dist = apply_configuration(Distribution(), PYPROJECT)
    top = PYPROJECT.parent / "agent" / "gpunode"
    found = {".".join(("gpunode",) + Path(folder).relative_to(top).parts)
             for folder, _, _ in os.walk(top, followlinks=True) if "__pycache__" not in folder and folder != str(top)}
    assert {"gpunode.checks", "gpunode.shipped_baselines", "gpunode.shipped_playbooks.tasks"} <= found
    assert found - set(dist.packages) == set()


def test_every_gpunode_import_is_a_path_on_disk():
    """`from gpunode.X import ...`: X is a file or folder under agent/gpunode/ (grep, editors, mypy)."""
    import re

    root = PYPROJECT.parent
    top = root / "agent" / "gpunode"
    missing = set()
    for source in [*root.glob("agent/gpunode/**/*.py"), *root.glob("checks/*.py"), *root.glob("tests/*.py")]:
        for module in re.findall(r"^\s*(?:from|import) (gpunode(?:\.\w+)*)", source.read_text(), re.M):
            path = top.joinpath(*module.split(".")[1:])
            if not (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()):
                missing.add(f"{source.name}: {module}")
    assert missing == set()


def test_no_test_hook_is_read_by_the_shipped_package():
    """Test-only switches (crash points, replayed benches, injected faults) live in tests/ or
    benchmarks/: the package itself never reads a GPUNODE_TEST_* variable."""
    root = PYPROJECT.parent
    hits = [f"{p.relative_to(root)}:{n}" for p in [*root.glob("agent/**/*.py"), *root.glob("checks/*.py")]
            for n, line in enumerate(p.read_text().splitlines(), 1) if "GPUNODE_TEST" in line]
    assert hits == []
