"""Shipped Ansible playbooks. This directory is installed as the package
gpunode.shipped_playbooks (see pyproject.toml) so that a controller installed from a wheel
finds them without a source checkout."""
