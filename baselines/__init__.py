"""Shipped hardware baselines (YAML). This directory is installed as the package
gpunode.shipped_baselines (see pyproject.toml) so that `pip install .` carries the files."""
