"""`gpunode diag --slurm` (burn-in): drained while it runs, resumed only on OK, a FAIL leaves the
failing test as the reason, a reason someone else set is never touched. Pure cases with a
scripted scontrol; then the real Slurm the suite starts (munged, slurmctld, slurmd)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from gpunode.diag import burnin
from gpunode.diag.results import DiagDocument, TestResult
from gpunode.host.runner import CommandResult, Runner
from gpunode.slurm.scontrol import Slurm
from testkit import require


def document(*results: TestResult, interrupted: bool = False) -> DiagDocument:
    return DiagDocument("t", "node1", "", 0.0, 3, 1.0, 540.0, {}, {}, list(results), interrupted=interrupted)


OK = TestResult("gemm.correctness", 0, "PASS", "all correct")
BAD = TestResult("hbm.memtest", 1, "FAIL", "GPU1: 3 memory word(s) read back wrong")


class Scontrol(Runner):
    """A node that holds `reason` (None: idle); records the updates."""

    def __init__(self, reason: str | None, state: str = "IDLE"):
        self.reason, self.state, self.updates = reason, state, []

    def run(self, argv, timeout=10.0, **kw):
        argv = list(argv)
        if argv[:2] == ["hostname", "-s"]:
            return CommandResult(argv, 0, "node1\n")
        if argv[:3] == ["scontrol", "show", "node"]:
            reason = f"\n   Reason={self.reason} [root@2026-12-01T10:00:00]" if self.reason else ""
            return CommandResult(argv, 0, f"NodeName=node1 Arch=x86_64\n   State={self.state}{reason}\n")
        if argv[:2] == ["scontrol", "update"]:
            self.updates.append(argv[2:])
            fields = dict(a.split("=", 1) for a in argv[2:])
            if fields["state"] == "drain":
                self.reason, self.state = fields["reason"], "IDLE+DRAIN"
            else:
                self.reason, self.state = None, "IDLE"
            return CommandResult(argv, 0)
        raise AssertionError(argv)


def cycle(reason, doc, env=None):
    runner = Scontrol(reason, "IDLE+DRAIN" if reason else "IDLE")
    slurm = Slurm(runner)
    burn = burnin.begin(slurm, env or {"SLURM_JOB_ID": "42"}, 3)
    during = (runner.state, runner.reason)
    action = burnin.finish(slurm, burn, doc)
    return runner, during, action


def test_ok_run_resumes_a_node_it_drained():
    runner, during, action = cycle(None, document(OK))
    assert during == ("IDLE+DRAIN", "gpunode: diag level 3 running (job 42)")
    assert action.action == "resumed" and runner.state == "IDLE" and runner.reason is None


def test_ok_run_resumes_an_earlier_gpunode_drain():
    runner, _, action = cycle("gpunode: gpu.remap GPU0: row remapping failed", document(OK))
    assert action.action == "resumed" and runner.reason is None


def test_fail_stays_drained_naming_the_failing_test():
    runner, _, action = cycle(None, document(OK, BAD))
    assert action.action == "drained" and runner.state == "IDLE+DRAIN"
    assert runner.reason == "gpunode: hbm.memtest GPU1: GPU1: 3 memory word(s) read back wrong"


@pytest.mark.parametrize("doc,why", [
    (document(OK, TestResult("telemetry", 0, "WARN", "another process")), "telemetry GPU0"),
    (document(OK, interrupted=True), "interrupted"),
    (document(TestResult("gpu.kernels", None, "ERROR", "no backend")), "gpu.kernels"),
])
def test_warn_or_unknown_is_not_resumed(doc, why):
    runner, _, action = cycle(None, doc)
    assert runner.state == "IDLE+DRAIN" and runner.reason.startswith("gpunode: diag ")
    assert "not resumed" in runner.reason and why in runner.reason and action.action == "drained"


@pytest.mark.parametrize("doc", [document(OK), document(BAD)])
def test_a_reason_set_by_someone_else_is_never_touched(doc):
    runner, during, action = cycle("RMA: waiting for the vendor (alice)", doc)
    assert runner.updates == [] and during[1] == "RMA: waiting for the vendor (alice)"
    assert action.action == "left-foreign"


@pytest.mark.parametrize("doc", [document(OK), document(BAD)])
def test_a_drain_someone_asked_for_through_gpunode_is_never_touched(doc):
    """`gpunode slurm drain` / `fleet locate --drain` (a network fault): a GPU burn-in proves
    nothing about it; it overwrote the reason before the run and resumed the node on OK."""
    reason = "gpunode: drain: fleet locate tcp: node fault, failed 2 of 2 tests"
    runner, during, action = cycle(reason, doc)
    assert runner.updates == [] and during == ("IDLE+DRAIN", reason)
    assert action.action == "unchanged" and runner.reason == reason


def test_without_scontrol_nothing_breaks():
    class Missing(Runner):
        def run(self, argv, timeout=10.0, **kw):
            return CommandResult(list(argv), 127, error=f"{argv[0]}: command not found")

    slurm = Slurm(Missing())
    burn = burnin.begin(slurm, {"SLURMD_NODENAME": "node1"}, 2)
    assert burn.node is None and "not found" in burn.problem
    assert burnin.finish(slurm, burn, document(OK)).action == "none"


# --- the real Slurm ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    from test_gate_slurm import BINARIES, LocalSlurm

    require(os.geteuid() == 0, "needs root to run munged/slurmctld/slurmd")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    require(not missing, f"needs Debian packages slurm-wlm and munge (missing {', '.join(missing)})")
    root = tmp_path_factory.mktemp("slurm-burnin")
    root.chmod(0o755)
    hooks = root / "hooks"
    hooks.mkdir()
    for name in ("gpunode-prolog", "gpunode-epilog", "gpunode-healthcheck"):
        (hooks / name).write_text("#!/bin/sh\nexit 0\n")
        (hooks / name).chmod(0o755)
    cluster = LocalSlurm(root)
    try:
        cluster.start_munge()
        cluster.write_conf(hooks)
        cluster.start_slurm()
        if cluster.sinfo_state() != "idle":
            cluster.resume()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.root
def test_real_slurm_burn_in(slurm, monkeypatch, tmp_path):
    env = {**slurm.env, "SLURMD_NODENAME": slurm.node, "GPUNODE_STATE_DIR": str(tmp_path)}
    # This machine has no GPU: diag is UNKNOWN, so the node it drained stays drained, with our reason.
    run = subprocess.run([sys.executable, "-m", "gpunode", "diag", "--slurm", "--json", "-"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 3, run.stderr
    assert "DRAIN" in slurm.state() and slurm.reason().startswith("gpunode: diag UNKNOWN: not resumed")
    # The same node, judged OK: our drain is cleared.
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    scontrol = Slurm(Runner())
    burn = burnin.begin(scontrol, {"SLURMD_NODENAME": slurm.node, "SLURM_JOB_ID": "7"}, 1)
    assert slurm.reason() == "gpunode: diag level 1 running (job 7)"
    assert burnin.finish(scontrol, burn, document(OK)).action == "resumed"
    assert slurm.reason() is None and "DRAIN" not in slurm.state()
    # An operator's reason survives a FAIL and an OK alike.
    slurm.drain("RMA ticket 123")
    for doc in (document(BAD), document(OK)):
        burn = burnin.begin(scontrol, {"SLURMD_NODENAME": slurm.node}, 3)
        assert burnin.finish(scontrol, burn, doc).action == "left-foreign"
        assert slurm.reason() == "RMA ticket 123"
    slurm.resume()
