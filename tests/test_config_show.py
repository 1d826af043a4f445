"""`gpunode config show`: the effective configuration and where each value came from; the
shipped example config (docs/examples/config.yaml) loads and names every key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

from gpunode.config import Config

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "config.yaml"
KEYS = [f.name for f in fields(Config) if f.name != "path"]


def show(*args, env=None):
    return subprocess.run([sys.executable, "-m", "gpunode", "config", "show", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_example_config_loads_and_documents_every_key():
    doc = json.loads(show("--config", str(EXAMPLE), "--json").stdout)
    assert doc["schema"] == "gpunode.config/1" and doc["file"] == str(EXAMPLE) and doc["file_chosen_by"] == "--config"
    by_key = {v["key"]: v for v in doc["values"]}
    assert list(by_key) == KEYS
    text = EXAMPLE.read_text()
    assert all(f"\n{k}:" in text or f"\n# {k}:" in text for k in KEYS)  # every key explained in the example
    assert by_key["expected_gpus"] == {"key": "expected_gpus", "value": 8, "from": str(EXAMPLE)}
    assert by_key["snapshot"]["from"] == "default"  # commented out in the example


def test_env_file_and_defaults_are_told_apart(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("min_free_gib: 5\n")
    doc = json.loads(show("--json", env={"GPUNODE_CONFIG": str(cfg)}).stdout)
    assert doc["file_chosen_by"] == "$GPUNODE_CONFIG"
    by_key = {v["key"]: v for v in doc["values"]}
    assert by_key["min_free_gib"] == {"key": "min_free_gib", "value": 5, "from": str(cfg)}
    assert by_key["profile"] == {"key": "profile", "value": "training", "from": "default"}
    text = show(env={"GPUNODE_CONFIG": str(cfg)}).stdout
    assert any(line.split()[:3] == ["min_free_gib", "5", str(cfg)] for line in text.splitlines())


def test_bad_config_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("expected_gpu: 8\n")
    out = show("--config", str(cfg))
    assert out.returncode == 3 and out.stderr.startswith("gpunode: error:") and "unknown key 'expected_gpu'" in out.stderr
    assert out.stderr.count("\n") == 1
