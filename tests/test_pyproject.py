"""pyproject.toml stays in a form the newest setuptools builds: CI (and `pip install .`) fetch the
latest setuptools from PyPI, and its deprecations become build errors on a dated release."""

from __future__ import annotations

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


def test_every_shipped_directory_is_a_listed_package():
    """setuptools warns "Package would be ignored" for a data directory that is not in `packages`
    (playbooks/tasks, playbooks/vars) and says it will stop shipping it."""
    dist = apply_configuration(Distribution(), PYPROJECT)
    root = PYPROJECT.parent
    found = {f"{package}.{'.'.join(sub.relative_to(root / folder).parts)}"
             for package, folder in dist.package_dir.items()
             for sub in (root / folder).rglob("*") if sub.is_dir() and sub.name != "__pycache__"}
    assert found - set(dist.packages) == set()
