import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory, monkeypatch):
    """Live audits and benches record into the node's history: never the real /var/lib/gpunode."""
    import os

    if "GPUNODE_STATE_DIR" not in os.environ:
        monkeypatch.setenv("GPUNODE_STATE_DIR", str(tmp_path_factory.mktemp("state")))
