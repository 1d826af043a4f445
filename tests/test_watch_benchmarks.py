"""The watcher's benchmarks (measured on the lent GPU by the lead) run here in their dry mode:
no GPU, a pipe for /dev/kmsg, a scripted NVML, a few runs; their JSON has the figures' fields."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(script: str, tmp_path: Path) -> dict:
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "agent"), GPUNODE_STATE_DIR=str(tmp_path / "state"))
    env.pop("GPUNODE_CONFIG", None)
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--dry", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


def test_watch_latency_dry(tmp_path):
    doc = run("watch_latency.py", tmp_path)
    x = doc["xid_to_drain"]
    assert x["source"].startswith("a pipe") and x["missed"] == 0 and x["n"] == 3 and x["p99_s"] >= x["p50_s"] > 0
    assert doc["foreign_process"]["in_state_s"] is not None


def test_watch_cost_dry(tmp_path):
    doc = run("watch_cost.py", tmp_path)
    assert doc["exit_code"] == 0 and doc["whole_run"]["rss_mb_max"] > 0 and "cpu_pct_own" in doc["whole_run"]
    assert doc["sources"] == {"kmsg": "ok"}


@pytest.mark.skipif(not os.path.exists("/bin/sh"), reason="no /bin/sh")
def test_gate_speed_dry_has_the_watcher_rows(tmp_path):
    doc = run("gate_speed.py", tmp_path)
    assert {"python3 -c pass", "gpunode gate, fresh watcher state", "prolog hook, watcher verdict"} <= set(doc["commands"])
    w = doc["verdict"]["watcher"]
    assert w["gate_said_source_watcher"] and w["hook_answered_from_verdict"], w
    assert doc["commands"]["prolog hook, watcher verdict"]["exit_codes"] == [0]


def test_watch_cost_splits_a_run_into_phases_with_each_threads_share():
    import importlib.util

    spec = importlib.util.spec_from_file_location("watch_cost", ROOT / "benchmarks" / "watch_cost.py")
    cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost)
    mine = cost.threads(os.getpid())
    assert next(iter(mine)) == str(os.getpid())  # the main thread first: threads in the order they started
    samples = [{"t": t, "own_s": t / 100, "children_s": 0.0, "rss_mb": 20.0 + t} for t in range(0, 21)]
    idle = cost.phase(samples, 0, 10, {"1": 0.0, "2": 0.0}, {"1": 0.05, "2": 0.02})
    loaded = cost.phase(samples, 10, 21, {"1": 0.05}, {"1": 0.25})
    assert idle["wall_s"] == 9 and idle["cpu_pct_own"] == 1.0 and idle["rss_mb_max"] == 29.0
    assert idle["threads_cpu_pct"] == {"1": round(100 * 0.05 / 9, 3), "2": round(100 * 0.02 / 9, 3)}
    assert loaded["wall_s"] == 10 and loaded["threads_cpu_pct"] == {"1": 2.0} and loaded["rss_mb_median"] == 35.0
    assert cost.phase(samples[:1], 0, 10, {}, {}) == {}  # one sample is no figure
