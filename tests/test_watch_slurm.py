"""gpunode watch's actions on a REAL Slurm (the gate tests' LocalSlurm: munged, slurmctld and
slurmd from Debian's packages), with nine more nodes in the partition that no slurmd serves
(the circuit breaker counts them) and RebootProgram=/bin/true (nothing reboots):

- Xid 79 -> `scontrol reboot ASAP nextstate=RESUME reason="gpunode: watch: ..."`, accepted;
- Xid 95 -> drain, reset (a fake GPU reset: never a real one here), the fix proven, then only
  the watcher's own drain resumed; a failed proof leaves the node drained;
- a reason someone else set is never touched (drain, reboot, resume);
- the breaker holds while 20 % of the partition carries a recent gpunode: drain;
- the gate's health check does not lift a watcher drain (only a proof does).
"""

from __future__ import annotations

import json
import os
import socket
import time

import pytest
from test_gate_slurm import LocalSlurm, _free_ports, idle_cluster

from gpunode.config import Config
from gpunode.host.runner import CommandResult, Runner
from gpunode.slurm.scontrol import Slurm, settle_node
from gpunode.slurm.watch_actions import Proof, WatchActor
from gpunode.watch.events import Event, PolicyState
from gpunode.watch.policy import WatchConfig, decide

pytestmark = [pytest.mark.slow, pytest.mark.root]

FAKES = 9  # partition nodes without a slurmd: 10 nodes in all


class WatchSlurm(LocalSlurm):
    """LocalSlurm, plus FAKES nodes nobody serves and a RebootProgram that does nothing."""

    def write_conf(self, hooks, interval: int = 0) -> None:
        if not hasattr(self, "fake_port"):  # three distinct ports, taken together
            *self.ports, self.fake_port = _free_ports(3)
        super().write_conf(hooks, interval)
        text = self.conf.read_text().replace("MailProg=/bin/true\n", "MailProg=/bin/true\nRebootProgram=/bin/true\n")
        node_line = next(line for line in text.splitlines() if line.startswith("NodeName="))
        fakes = f"NodeName=wfake[1-{FAKES}] NodeAddr=127.0.0.1 Port={self.fake_port} CPUs=1 State=UNKNOWN"
        self.conf.write_text(text.replace(node_line, f"{node_line}\n{fakes}"))

    def show(self, node: str | None = None) -> str:
        return self.cmd("scontrol", "show", "node", node or self.node).stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with idle_cluster(tmp_path_factory, "watch-slurm", WatchSlurm) as slurm:
        yield slurm


@pytest.fixture
def slurm(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))  # scontrol/sinfo through the Runner find it
    for var in ("SLURM_SCRIPT_CONTEXT", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    yield cluster
    cluster.cmd("scontrol", "cancel_reboot", cluster.node)
    for node in [cluster.node, *(f"wfake{i}" for i in range(1, FAKES + 1))]:
        cluster.cmd("scontrol", "update", f"nodename={node}", "state=resume")
    cluster._wait(lambda: "DRAIN" not in cluster.state() and "REBOOT" not in cluster.state(), 20, "the node back")


class CallLog(Runner):
    """A real Runner that keeps every argv it ran."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def run(self, argv, *args, **kwargs):
        self.calls.append(list(argv))
        if list(argv[1:4]) == ["-m", "gpunode", "snapshot"]:  # a live snapshot reads the whole host: stand in
            os.makedirs(argv[-1])
            return CommandResult(list(argv), 0, "snapshot written\n")
        return super().run(argv, *args, **kwargs)


class FakeReset:
    def __init__(self, cluster):
        self.cluster, self.calls = cluster, []

    def reset(self, gpu):
        self.calls.append((gpu, cluster_state(self.cluster)))
        return True, "GPU reset (fake)"


def cluster_state(cluster) -> str:
    return cluster.state()


def make_actor(cluster, tmp_path, config, prove=True, **kw):
    seen = []

    def prover():
        seen.append((cluster.state(), cluster.reason()))
        return Proof(prove, f"diag level 1: {'OK' if prove else 'FAIL'} (fake)")

    state = kw.pop("state", PolicyState())
    kw.setdefault("site_config", Config(audit_log="off"))
    runner = CallLog()
    actor = WatchActor(Slurm(runner), runner, str(tmp_path / "state"), config, node=cluster.node,
                       prover=prover, state=state, env={}, background=False, idle_wait_s=5, **kw)
    actor.proofs = seen
    return actor, state


def act(actor, state, event, config):
    actions = decide(state, event, config, time.time())
    for action in actions:
        actor(action)
    return actions


def xid(code, gpu="GPU-7a0e5c1d"):
    return Event("kmsg", "xid", time.time(), gpu, code, text=f"Xid {code}")


def test_xid79_requests_a_reboot_asap_with_nextstate_resume(slurm, tmp_path):
    config = WatchConfig()
    actor, state = make_actor(slurm, tmp_path, config)
    act(actor, state, xid(79), config)
    assert actor.done[-1][0] == "reboot-requested", actor.done
    reboot = next(argv for argv in actor.runner.calls if argv[:2] == ["scontrol", "reboot"])
    assert reboot[2:4] == ["ASAP", "nextstate=RESUME"] and reboot[-1] == slurm.node
    assert reboot[4].startswith("reason=gpunode: watch: Xid 79 (GPU has fallen off the bus) GPU-7a0e5c1d")
    shown = slurm.show()
    node_state = slurm.state()
    assert "REBOOT_REQUESTED" in node_state or "REBOOT_ISSUED" in node_state, shown
    assert "NextState=RESUME" in shown, shown
    assert (slurm.reason() or "").startswith("gpunode: watch: Xid 79 "), shown
    # A node waiting for the watcher's reboot counts for the circuit breaker, as a drain does.
    assert actor.partition_view(time.time()).ours_recent == 1, slurm.cmd("sinfo", "-N", "-o", "%N|%T|%H|%E").stdout
    assert actor.partition_view(time.time() + 301).ours_recent == 0  # out of the window


def test_xid95_drains_resets_proves_and_resumes_its_own_drain(slurm, tmp_path):
    config = WatchConfig(remediate="reset")
    reset = FakeReset(slurm)
    log = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(log))
    sock.settimeout(0)
    actor, state = make_actor(slurm, tmp_path, config, reset=reset, site_config=Config(audit_log=str(log)))
    try:
        actions = act(actor, state, xid(95), config)
        lines = [sock.recv(4096).decode() for _ in range(3)]
    finally:
        sock.close()
    # Every action in the audit trail (syslog), the drain and the reset as warnings.
    assert [line.split(": ", 1)[1].split()[:2] for line in lines] == [
        ["watch", "action=drained"], ["watch", "action=reset"], ["watch", "action=resumed"]], lines
    assert lines[0].startswith("<84>gpunode[") and f"node={slurm.node}" in lines[0] and "code=95" in lines[0]
    assert [a.kind for a in actions] == ["drain", "reset", "resume"]
    # The reset ran on the drained node, the proof ran before the resume, while still drained.
    assert reset.calls and reset.calls[0][0] == "GPU-7a0e5c1d" and "DRAIN" in reset.calls[0][1]
    assert actor.proofs and "DRAIN" in actor.proofs[0][0] and actor.proofs[0][1].startswith("gpunode: watch: Xid 95")
    assert [d[0] for d in actor.done] == ["drained", "reset", "resumed"], actor.done
    assert slurm.reason() is None and "DRAIN" not in slurm.state()
    assert (tmp_path / "state" / "watch-memory.json").exists()  # the remediation is remembered


def test_a_failed_proof_leaves_the_node_drained(slurm, tmp_path):
    config = WatchConfig(remediate="reset")
    actor, state = make_actor(slurm, tmp_path, config, prove=False, reset=FakeReset(slurm))
    act(actor, state, xid(95), config)
    assert actor.done[-1][0] == "proof-failed"
    assert "DRAIN" in slurm.state() and slurm.reason().startswith("gpunode: watch: Xid 95")


def test_shadow_takes_no_action(slurm, tmp_path):
    config = WatchConfig(remediate="reset", shadow=True)
    reset = FakeReset(slurm)
    actor, state = make_actor(slurm, tmp_path, config, reset=reset)
    act(actor, state, xid(95), config)
    act(actor, PolicyState(), xid(79), config)
    assert [d[0] for d in actor.done] == ["would-drain", "would-reset", "would-resume", "would-reboot"]
    assert not reset.calls and not actor.proofs
    assert slurm.reason() is None and "DRAIN" not in slurm.state() and "REBOOT" not in slurm.state()


def test_a_foreign_reason_is_never_touched(slurm, tmp_path):
    slurm.drain("ops: reseat GPU cable")
    config = WatchConfig(remediate="reset")
    reset = FakeReset(slurm)
    actor, state = make_actor(slurm, tmp_path, config, reset=reset)
    act(actor, state, xid(95), config)
    act(actor, PolicyState(), xid(79), config)
    assert [d[0] for d in actor.done] == ["left-foreign", "reset-skipped", "left", "left-foreign"], actor.done
    assert not reset.calls and not actor.proofs
    assert slurm.reason() == "ops: reseat GPU cable" and "DRAIN" in slurm.state() and "REBOOT" not in slurm.state()


def test_the_breaker_holds_at_20_percent_of_the_partition(slurm, tmp_path):
    actor, _ = make_actor(slurm, tmp_path, WatchConfig())
    config = actor.policy_config(WatchConfig())
    view = actor.partition_view(time.time())
    assert (view.total, view.ours_recent) == (FAKES + 1, 0)
    # A foreign drain does not count; one gpunode drain (10 %) leaves room.
    slurm.cmd("scontrol", "update", "nodename=wfake1", "state=drain", "reason=ops: PSU swap")
    slurm.cmd("scontrol", "update", "nodename=wfake2", "state=drain", "reason=gpunode: watch: Xid 95 GPU-x: reset")
    assert actor.partition_view(time.time()).ours_recent == 1
    slurm.cmd("scontrol", "update", "nodename=wfake3", "state=drain", "reason=gpunode: gpu.xid GPU0: critical Xid 79")
    assert actor.partition_view(time.time()).ours_recent == 2
    state = PolicyState()
    actions = act(actor, state, xid(95), config)
    assert [a.kind for a in actions] == ["none"] and "2 of 10 nodes" in actions[0].reason
    assert actor.done[-1][0] == "held" and slurm.reason() is None and "DRAIN" not in slurm.state()
    slurm.cmd("scontrol", "update", "nodename=wfake3", "state=resume")
    actions = act(actor, state, xid(95), config)
    assert [a.kind for a in actions] == ["drain"] and "DRAIN" in slurm.state()


def test_a_watcher_drain_is_left_by_the_gates_health_check(slurm, tmp_path):
    config = WatchConfig()
    actor, state = make_actor(slurm, tmp_path, config)
    act(actor, state, xid(64), config)
    gate = Slurm(Runner())
    done = settle_node(gate, gate.show_node(slurm.node), None)  # a healthy gate would resume a gpunode drain
    assert done.action == "unchanged" and "DRAIN" in slurm.state()
    done = settle_node(gate, gate.show_node(slurm.node), "gpunode: gpu.xid GPU0: critical Xid 64")
    assert done.action == "unchanged" and slurm.reason().startswith("gpunode: watch: Xid 64")


def test_nothing_is_done_inside_a_prolog(slurm, tmp_path):
    config = WatchConfig()
    actor = WatchActor(Slurm(Runner()), Runner(), str(tmp_path), config, node=slurm.node,
                       env={"SLURM_SCRIPT_CONTEXT": "prolog_slurmd", "SLURM_JOB_ID": "42"}, background=False)
    act(actor, PolicyState(), xid(79), config)
    act(actor, PolicyState(), xid(95), config)
    assert [d[0] for d in actor.done] == ["refused", "refused"]
    assert slurm.reason() is None and "REBOOT" not in slurm.state()


def test_contact_support_stays_drained_with_an_evidence_bundle(slurm, tmp_path):
    config = WatchConfig()
    actor, state = make_actor(slurm, tmp_path, config)
    actions = act(actor, state, xid(54), config)  # CHECK_MECHANICALS: auxiliary power not connected
    assert [a.kind for a in actions] == ["drain", "evidence"]
    assert [d[0] for d in actor.done] == ["drained", "evidence"], actor.done
    assert "DRAIN" in slurm.state() and slurm.reason().startswith("gpunode: watch: Xid 54 ")
    bundle = next((tmp_path / "state" / "evidence").iterdir())
    assert os.stat(bundle).st_mode & 0o777 == 0o700
    event = json.loads((bundle / "event.json").read_text())
    assert event["event"]["code"] == 54 and event["node"] == slurm.node
    assert os.stat(bundle / "event.json").st_mode & 0o777 == 0o600
    history = json.loads((bundle / "history.json").read_text())  # `gpunode history --json`, run for real
    assert history["schema"] == "gpunode.history/1"
    assert (bundle / "snapshot").is_dir()
    assert "snapshot ok; history ok; " in actor.done[-1][1]
    assert not actor.proofs  # nothing resumes a contact-support drain


def test_a_drain_the_operator_lifted_is_no_longer_the_watchers(slurm, tmp_path):
    """The policy asks Slurm whether its drain stands: after a resume by hand, the next fault drains."""
    actor, state = make_actor(slurm, tmp_path, WatchConfig())
    config = actor.policy_config(WatchConfig())
    assert [a.kind for a in act(actor, state, xid(64), config)] == ["drain"] and state.drained_by_us
    assert act(actor, state, xid(64), config) == []  # drained already: nothing new
    slurm.resume()
    assert [a.kind for a in act(actor, state, xid(64), config)] == ["drain"] and "DRAIN" in slurm.state()
