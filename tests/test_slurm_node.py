"""agent/slurm.py: parsing real `scontrol` outputs (recorded from slurm-wlm 22.05.8 started
by these tests) and the drain/resume etiquette."""

from __future__ import annotations

import pytest
from gate_fixtures import slurm_text

from gpunode.host.runner import ReplayRunner
from gpunode.slurm.scontrol import (
    NodeInfo,
    Slurm,
    SlurmError,
    gres_gpu_count,
    parse_job_comment,
    parse_show_node,
    settle_node,
)


def test_idle_node():
    node = parse_show_node(slurm_text("show-node-idle.txt"))
    assert (node.name, node.state, node.reason, node.gres) == ("vm", "IDLE", None, "gpu:h100:2")
    assert not node.drained and node.gpu_count == 2


def test_drained_by_gpunode_reason_without_slurm_stamp():
    node = parse_show_node(slurm_text("show-node-drain-ours.txt"))
    assert node.state == "IDLE+DRAIN" and node.drained
    assert node.reason == "gpunode: test.fail GPU0: broken"  # [root@2026-...] removed
    assert node.reason_is_ours


def test_drained_by_operator_is_foreign():
    node = parse_show_node(slurm_text("show-node-drain-foreign.txt"))
    assert node.reason == "ops: cable check" and node.drained and not node.reason_is_ours


def test_draining_while_a_job_runs():
    node = parse_show_node(slurm_text("show-node-draining-ours.txt"))
    assert node.flags == {"ALLOCATED", "DRAIN"} and node.drained
    assert node.reason == "gpunode: gpu.memory.remap GPU0: row remap failure"


def test_gres_with_two_gpu_types_and_socket_binding():
    node = parse_show_node(slurm_text("show-node-two-types.txt"))
    assert node.gres == "gpu:h100:2(S:0),gpu:a100:1(S:0)" and node.gpu_count == 3


@pytest.mark.parametrize(
    ("gres", "count"),
    [
        ("gpu:8", 8),
        ("gpu:h100:8(S:0-1)", 8),
        ("gpu:h100:4(S:0),gpu:h100:4(S:1)", 8),
        ("gpu:a100:4(S:0,1),nic:2", 4),
        ("nic:2", None),
        ("gpu", 1),
        ("gpu:h100", 1),
        (None, None),
        ("", None),
    ],
)
def test_gres_gpu_count(gres, count):
    assert gres_gpu_count(gres) == count


@pytest.mark.parametrize("cut", [0, 3, 8])
def test_truncated_output_is_an_error_not_a_guess(cut):
    # Cut before the State= line: a decision on it could overwrite a reason never seen.
    text = "\n".join(slurm_text("show-node-drain-foreign.txt").splitlines()[:cut])
    with pytest.raises(SlurmError):
        parse_show_node(text)


def test_unknown_node_is_an_error():
    runner = ReplayRunner()
    runner.add(["scontrol", "show", "node", "nosuch"], rc=1, stderr=slurm_text("show-node-missing.txt"))
    with pytest.raises(SlurmError, match="Node nosuch not found"):
        Slurm(runner).show_node("nosuch")


def test_scontrol_not_installed_is_an_error():
    with pytest.raises(SlurmError, match="not recorded"):
        Slurm(ReplayRunner()).show_node("vm")


def test_job_comment():
    assert parse_job_comment(slurm_text("show-job-comment.txt")) == "gpunode=off x"
    assert parse_job_comment(slurm_text("show-job-plain.txt")) is None


def test_node_name_from_slurmd_env_else_hostname():
    runner = ReplayRunner()
    runner.add(["hostname", "-s"], stdout="gpu017\n")
    slurm = Slurm(runner)
    assert slurm.node_name({"SLURMD_NODENAME": "gpu001"}) == "gpu001" and runner.calls == []
    assert slurm.node_name({}) == "gpu017"


def _node(state, reason):
    return NodeInfo("vm", state, reason, "gpu:8")


def _updates(runner):
    return [c for c in runner.calls if c[:2] == ["scontrol", "update"]]


def _slurm():
    runner = ReplayRunner()
    for args in (["nodename=vm", "state=drain", "reason=gpunode: x: y"], ["nodename=vm", "state=resume"]):
        runner.add(["scontrol", "update", *args])
    return Slurm(runner), runner


def test_drain_an_idle_node():
    slurm, runner = _slurm()
    assert settle_node(slurm, _node("IDLE", None), "gpunode: x: y").action == "drained"
    assert _updates(runner) == [["scontrol", "update", "nodename=vm", "state=drain", "reason=gpunode: x: y"]]


@pytest.mark.parametrize("state", ["IDLE+DRAIN", "DOWN", "IDLE"])
def test_never_overwrite_a_foreign_reason(state):
    slurm, runner = _slurm()
    action = settle_node(slurm, _node(state, "ops: cable check"), "gpunode: x: y")
    assert action.action == "left-foreign" and _updates(runner) == []


def test_replace_our_own_older_reason():
    slurm, runner = _slurm()
    assert settle_node(slurm, _node("IDLE+DRAIN", "gpunode: old: z"), "gpunode: x: y").action == "drained"
    assert len(_updates(runner)) == 1


def test_same_reason_twice_changes_nothing():
    slurm, runner = _slurm()
    assert settle_node(slurm, _node("IDLE+DRAIN", "gpunode: x: y"), "gpunode: x: y").action == "unchanged"
    assert _updates(runner) == []


def test_resume_only_our_own_drain():
    slurm, runner = _slurm()
    assert settle_node(slurm, _node("IDLE+DRAIN", "gpunode: x: y"), None).action == "resumed"
    assert _updates(runner) == [["scontrol", "update", "nodename=vm", "state=resume"]]
    slurm, runner = _slurm()
    assert settle_node(slurm, _node("IDLE+DRAIN", "ops: cable check"), None).action == "left-foreign"
    assert settle_node(slurm, _node("IDLE", None), None).action == "none"
    assert _updates(runner) == []


@pytest.mark.parametrize("state", ["IDLE+DRAIN", "ALLOCATED+DRAIN", "DOWN+DRAIN"])
def test_a_drain_someone_asked_for_is_never_resumed_nor_overwritten(state):
    """`gpunode slurm drain` and `fleet locate --drain` set `gpunode: drain: ...` (a network fault
    the GPU checks cannot see): a passing health check resumed it, a gate's FAIL or a burn-in's
    drain overwrote it. gpunode leaves it; a person resumes the node."""
    slurm, runner = _slurm()
    for reason in ("gpunode: drain: fleet locate tcp: node fault, failed 2 of 2 tests", "gpunode: drain: cable"):
        node = _node(state, reason)
        assert not node.reason_is_ours  # burn-in and the watcher's reboot leave it too
        healthy = settle_node(slurm, node, None)
        assert healthy.action == "unchanged" and "until a person resumes it" in healthy.detail
        assert settle_node(slurm, node, "gpunode: x: y").action == "unchanged"
        assert settle_node(slurm, node, reason) == ("unchanged", f"already drained: {reason}")
    assert _updates(runner) == []


def test_the_gates_own_reason_is_not_held_by_a_lookalike_of_the_drain_prefix():
    slurm, runner = _slurm()
    for reason in ("gpunode: drainage.check GPU0: x", "gpunode: x: drain: y"):
        assert _node("IDLE+DRAIN", reason).reason_is_ours
        assert settle_node(slurm, _node("IDLE+DRAIN", reason), None).action == "resumed"


def test_failed_update_raises():
    runner = ReplayRunner()
    # Someone resumed the node between our read and our update: Slurm refuses, we report it.
    runner.add(["scontrol", "update", "nodename=vm", "state=resume"], rc=1,
               stderr=slurm_text("update-resume-not-drained.stderr"))
    with pytest.raises(SlurmError, match="Invalid node state specified"):
        settle_node(Slurm(runner), _node("IDLE+DRAIN", "gpunode: x: y"), None)


# A reason is ours only when it starts with `gpunode:`: these merely mention gpunode.
LOOKALIKES = ["ops: gpunode: said FAIL, replacing HBM", "see gpunode report", "ngpunode: x", "gpunode x: y",
              " gpunode: leading space", "GPUNODE: shouting"]


@pytest.mark.parametrize("reason", LOOKALIKES)
def test_a_reason_that_merely_mentions_gpunode_is_foreign(reason):
    assert not _node("IDLE+DRAIN", reason).reason_is_ours


@pytest.mark.parametrize("reason", LOOKALIKES)
def test_a_lookalike_drain_is_never_resumed_nor_overwritten(reason):
    slurm, runner = _slurm()
    assert settle_node(slurm, _node("IDLE+DRAIN", reason), None).action == "left-foreign"
    assert settle_node(slurm, _node("IDLE+DRAIN", reason), "gpunode: x: y").action == "left-foreign"
    assert _updates(runner) == []


def test_a_recorded_lookalike_reason_is_foreign():
    """The real `scontrol show node` text with an operator's reason that quotes gpunode."""
    text = slurm_text("show-node-drain-foreign.txt").replace("ops: cable check", "ops: gpunode: said so")
    node = parse_show_node(text)
    assert node.reason == "ops: gpunode: said so" and not node.reason_is_ours
