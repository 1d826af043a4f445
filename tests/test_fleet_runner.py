"""The controller side of a fleet run without Ansible: where runs are kept, and the live
per-host progress lines."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest
from rich.console import Console

from gpunode.fleet.progress import Tracker
from gpunode.fleet.runner import private_dir
from gpunode.fleet.specs import PLAYBOOKS


def test_state_dir_that_exists_keeps_its_mode(tmp_path):
    # `--state-dir /tmp` as root must not turn /tmp into a 0700 directory.
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    pdd = private_dir(shared, PLAYBOOKS["audit"])
    assert stat.S_IMODE(shared.stat().st_mode) == 0o1777
    assert stat.S_IMODE((shared / "fleet").stat().st_mode) == 0o700
    assert stat.S_IMODE(pdd.stat().st_mode) == 0o700

    fresh = tmp_path / "new" / "state"
    private_dir(fresh, PLAYBOOKS["audit"])
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700  # one gpunode makes is private


def test_progress_line_gives_the_verdict_of_reports_without_status(tmp_path):
    # gpunode apply/rollback JSON carries no status: the line reads it from the exit code.
    out = io.StringIO()
    tracker = Tracker(hosts=["n1", "n2"], report_dir=tmp_path, kind="apply", from_stdout=True,
                      console=Console(file=out, width=200, color_system=None))
    doc = {"schema": "gpunode.apply/1", "result": "applied", "changes": [{"status": "applied"}]}
    for host, rc in (("n1", 0), ("n2", 1)):
        tracker({"event": "runner_on_ok", "event_data": {"host": host, "task": "Run gpunode apply",
                                                          "res": {"rc": rc, "stdout": json.dumps(doc)}}})
    lines = out.getvalue().splitlines()
    assert lines == ["[1/2] n1 OK  applied", "[2/2] n2 WARN  applied"], lines


def test_progress_line_says_what_a_host_would_change(tmp_path):
    """fleet apply --check: each host's line names its planned changes, from -> to."""
    out = io.StringIO()
    tracker = Tracker(hosts=["n1"], report_dir=tmp_path, kind="apply", from_stdout=True,
                      console=Console(file=out, width=200, color_system=None))
    rows = [{"setting": f"sysctl.s{i}", "current": str(i), "target": "10", "status": "planned"} for i in range(5)]
    doc = {"schema": "gpunode.apply/1", "result": "planned", "changes": [*rows, {"setting": "x", "status": "blocked"}]}
    tracker({"event": "runner_on_ok", "event_data": {"host": "n1", "task": "Run gpunode apply",
                                                      "res": {"rc": 0, "stdout": json.dumps(doc)}}})
    assert out.getvalue().splitlines() == [
        "[1/1] n1 OK  planned: sysctl.s0 0 -> 10, sysctl.s1 1 -> 10, sysctl.s2 2 -> 10 +2 more"]


def test_a_fleet_dir_someone_else_made_in_a_shared_state_dir_is_refused(tmp_path):
    """`--state-dir /tmp`: a fleet/ made there by another user was chmod'ed and written into."""
    from gpunode.fleet.validate import FleetError

    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    (shared / "fleet").mkdir()
    (shared / "fleet").chmod(0o777)  # as a user could leave it (root cannot chown in every test run)
    with pytest.raises(FleetError, match="writable by group and others"):
        private_dir(shared, PLAYBOOKS["audit"])
    assert stat.S_IMODE((shared / "fleet").stat().st_mode) == 0o777 and os.listdir(shared / "fleet") == []
