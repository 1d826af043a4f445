"""`gpunode fleet watch status` for real: ansible-runner runs playbooks/watch.yml over inventory
hosts that are this machine, each with its own watcher state directory; one report names each
host's verdict, freshness and recent actions (a host without a watcher: UNKNOWN, not dropped)."""

from __future__ import annotations

import time

import fleetkit
import pytest

from gpunode.audit.engine import Result, Status
from gpunode.watch.events import Action, Event
from gpunode.watch.loop import Watcher
from gpunode.watch.state import read_boot_id


@pytest.fixture(autouse=True)
def _ansible():
    fleetkit.require_ansible()


class Poll:
    def __init__(self, status):
        self.status = status

    def run_checks_now(self):
        return [Result("gpu.ecc.uncorrectable", "t", "gpu", "critical", self.status, "DBE count", subject="GPU0")]

    def events(self, results, now):
        return []


def watcher_state(directory, status, with_event=False):
    """A live watcher's state (this test process is its writer), fresh for 2 x 600 s."""
    w = Watcher(str(directory), Poll(status), 600.0, notify=lambda m: True, boot_id=read_boot_id(),
                decide=lambda s, e, c, n: [Action("drain", "gpunode: watch: Xid 79", e.gpu, e, shadow=True)])
    now = time.time()
    w.tick(now)
    if with_event:
        w.handle(Event("kmsg", "xid", now, "GPU-a", 79, text="Xid 79 GPU has fallen off the bus."), now)
        w.write(now)


def test_fleet_watch_status_collects_states_and_actions(tmp_path):
    watcher_state(tmp_path / "ok", Status.PASS)
    watcher_state(tmp_path / "bad", Status.FAIL, with_event=True)
    (tmp_path / "none").mkdir()
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"gpu": [
        f"n-ok gpunode_watch_state_dir={tmp_path / 'ok'}", f"n-bad gpunode_watch_state_dir={tmp_path / 'bad'}",
        f"n-none gpunode_watch_state_dir={tmp_path / 'none'}"]}, fleetkit.local_vars())
    result, doc = fleetkit.fleet_json(["watch", "status", "-i", str(inv), "--state-dir", str(tmp_path / "state")])
    assert doc["kind"] == "watch", result.stderr[-3000:]
    hosts = fleetkit.by_host(doc)
    assert {h: r["status"] for h, r in hosts.items()} == {"n-ok": "OK", "n-bad": "FAIL", "n-none": "UNKNOWN"}
    assert hosts["n-bad"]["failing"] == ["gpu.ecc.uncorrectable"]
    bad = hosts["n-bad"]["watch"]
    assert bad["fresh"].startswith("fresh") and bad["actions"][-1]["action"] == "would-drain"
    assert bad["events"][-1]["code"] == 79
    assert hosts["n-none"]["watch"]["fresh"].startswith("no state")
    assert "n-bad" in fleetkit.check_row(doc, "gpu.ecc.uncorrectable")["fail_hosts"]
    assert result.rc == 2
    text = fleetkit.fleet(["watch", "status", "-i", str(inv), "--state-dir", str(tmp_path / "state"), "--quiet"])
    assert "action would-drain: gpunode: watch: Xid 79" in text.stdout, text.stdout
