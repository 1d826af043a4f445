"""gpunode watch's policy (pure): the Xid catalog's classes on the recorded kernel logs, acting by
class, hysteresis, the circuit breaker over a simulated partition, escalation memory, shadow."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gpunode.config import Config, ConfigError, load_config
from gpunode.host.facts.kernlog import parse
from gpunode.slurm import scontrol
from gpunode.watch import memory, policy
from gpunode.watch import xid_catalog as catalog
from gpunode.watch.events import Event, PolicyState
from gpunode.watch.policy import PartitionView, WatchConfig, classify, decide
from gpunode.watch.sources import kernel_events

KERNLOG = Path(__file__).parent / "fixtures" / "kernlog"
NOW = 1_800_000_000.0


def xid(code: int, gpu: str = "GPU-a", text: str = "", t: float = NOW) -> Event:
    return Event("kmsg", "xid", t, gpu, code, text=text or f"Xid {code}")


def check(status: str, t: float, check_id: str = "gpu.memory.remap", gpu: str | None = "GPU0") -> Event:
    return Event("poll", "check", t, gpu, check_id=check_id, status=status)


def kinds(actions) -> list[str]:
    return [a.kind for a in actions]


# --- the catalog --------------------------------------------------------------------------

def _fixture_events() -> list[Event]:
    events = []
    for path in sorted(KERNLOG.glob("*.txt")):
        events += kernel_events(parse(path.read_text(), journal=path.name.startswith("journal")))
    return events


def test_every_xid_in_the_recorded_kernel_logs_has_its_class():
    expected = {13: catalog.RESTART_APP, 31: catalog.RESTART_APP, 38: catalog.IGNORE, 48: catalog.RESET,
                63: catalog.IGNORE, 74: catalog.RESET, 79: catalog.REBOOT, 119: catalog.RESET}
    by_recovery = {"0x1": catalog.RESET, "0x2": catalog.REBOOT, "0x0": catalog.IGNORE}
    events = _fixture_events()
    seen = {e.code for e in events if e.kind == "xid"}
    assert seen >= {13, 31, 38, 48, 63, 74, 79, 119, 154}, seen
    for e in events:
        if e.kind == "fallen_off_bus":
            assert classify(e) == catalog.REBOOT
        elif e.kind == "xid" and e.code == 154:
            target = e.text.split(" to ")[1].split()[0]
            assert classify(e) == by_recovery[target], e.text
        elif e.kind == "xid":
            assert classify(e) == expected[e.code], e


def test_catalog_classes_named_by_the_issue_and_nvidia():
    assert catalog.xid_class(94) == catalog.RESTART_APP
    for code in (46, 62, 64, 95, 109, 119, 120, 140, 143, 158):
        assert catalog.xid_class(code) == catalog.RESET, code
    assert catalog.xid_class(79) == catalog.REBOOT
    assert catalog.xid_class(54) == catalog.CONTACT_SUPPORT  # CHECK_MECHANICALS
    assert catalog.xid_class(58) == catalog.CONTACT_SUPPORT  # "Unused" on Ampere+: NVIDIA says contact support
    assert catalog.xid_class(154) == catalog.CONTACT_SUPPORT  # recovery action unreadable
    assert catalog.xid_class(999) == catalog.IGNORE  # not in the catalog: recorded, the gate judges
    assert set(catalog.BUCKET_CLASS.values()) <= set(catalog.CLASSES)
    assert {catalog.bucket(c) for c in catalog.IMMEDIATE} <= set(catalog.BUCKET_CLASS) | {"XID_154"}
    assert not set(catalog.IMMEDIATE) & catalog.UNUSED


def test_watch_reason_prefix_is_the_one_scontrol_knows():
    assert policy.WATCH_REASON == scontrol.WATCH_PREFIX


# --- acting by class ----------------------------------------------------------------------

def test_restart_app_and_ignore_are_recorded_only():
    state = PolicyState()
    for code in (94, 13, 63):
        actions = decide(state, xid(code), WatchConfig(), NOW)
        assert kinds(actions) == ["record"]
    assert not state.drained_by_us and not state.remediations


def test_reset_class_drains_and_resets_only_where_the_site_allows():
    state = PolicyState()
    actions = decide(state, xid(95), WatchConfig(), NOW)
    assert kinds(actions) == ["drain"] and actions[0].reason.startswith("gpunode: watch: Xid 95 ")
    assert decide(state, xid(95, t=NOW + 1), WatchConfig(), NOW + 1) == []  # drained already: nothing new
    actions = decide(PolicyState(), xid(95), WatchConfig(remediate="reset"), NOW)
    assert kinds(actions) == ["drain", "reset", "resume"] and {a.gpu for a in actions} == {"GPU-a"}


def test_reboot_class_and_contact_support():
    assert kinds(decide(PolicyState(), xid(79), WatchConfig(), NOW)) == ["reboot"]
    assert kinds(decide(PolicyState(), Event("kmsg", "fallen_off_bus", NOW, "GPU-a", 79), WatchConfig(), NOW)) == ["reboot"]
    assert kinds(decide(PolicyState(), xid(54), WatchConfig(), NOW)) == ["drain", "evidence"]
    text = "Xid 154 GPU recovery action changed from 0x0 (None) to 0x2 (Node Reboot Required)"
    assert kinds(decide(PolicyState(), xid(154, text=text), WatchConfig(), NOW)) == ["reboot"]
    assert kinds(decide(PolicyState(), Event("nvml", "recovery_action", NOW, "GPU-a", 1), WatchConfig(), NOW)) == ["drain"]


def test_slurms_word_on_the_watchers_drain_wins_over_the_remembered_one():
    stale = PolicyState(drained_by_us=True)  # the operator resumed the node, or it rebooted
    assert kinds(decide(stale, xid(95), WatchConfig(own_drain=lambda: False), NOW)) == ["drain"]
    assert decide(PolicyState(), xid(95), WatchConfig(own_drain=lambda: True), NOW) == []

    def broken():
        raise RuntimeError("scontrol: timed out")

    assert decide(PolicyState(drained_by_us=True), xid(95), WatchConfig(own_drain=broken), NOW) == []
    assert kinds(decide(PolicyState(), xid(95), WatchConfig(own_drain=lambda: None), NOW)) == ["drain"]


def test_shadow_marks_every_action_and_changes_no_kind():
    live = decide(PolicyState(), xid(95), WatchConfig(remediate="reset"), NOW)
    shadow = decide(PolicyState(), xid(95), WatchConfig(remediate="reset", shadow=True), NOW)
    assert kinds(shadow) == kinds(live) and all(a.shadow for a in shadow) and not any(a.shadow for a in live)


# --- hysteresis ---------------------------------------------------------------------------

def test_a_polled_check_drains_after_k_consecutive_failures_once():
    state, config = PolicyState(), WatchConfig(hysteresis_k=3)
    got = [kinds(decide(state, check("FAIL", NOW + i), config, NOW + i)) for i in range(5)]
    assert got == [[], [], ["drain"], [], []]


def test_a_check_failing_every_other_poll_never_drains():
    state, config = PolicyState(), WatchConfig()
    for i in range(40):
        assert decide(state, check("FAIL" if i % 2 else "PASS", NOW + i), config, NOW + i) == []
    assert not state.drained_by_us


def test_gpunodes_own_error_neither_counts_nor_clears_a_streak():
    state, config = PolicyState(), WatchConfig(hysteresis_k=3)
    statuses = ["FAIL", "ERROR", "FAIL", "ERROR", "FAIL"]
    got = [kinds(decide(state, check(s, NOW + i), config, NOW + i)) for i, s in enumerate(statuses)]
    assert got == [[], [], [], [], ["drain"]]


def test_streaks_are_per_check_and_gpu():
    state, config = PolicyState(), WatchConfig(hysteresis_k=2)
    assert decide(state, check("FAIL", NOW, gpu="GPU0"), config, NOW) == []
    assert decide(state, check("FAIL", NOW, gpu="GPU1"), config, NOW) == []
    assert kinds(decide(state, check("FAIL", NOW + 1, gpu="GPU1"), config, NOW + 1)) == ["drain"]


# --- the circuit breaker ------------------------------------------------------------------

class Partition:
    """A simulated partition: nodes drained by gpunode (time of the drain)."""

    def __init__(self, size: int):
        self.size = size
        self.drained: dict[str, float] = {}

    def view(self, now: float, window: float = 300.0) -> PartitionView:
        return PartitionView(self.size, sum(1 for t in self.drained.values() if now - t <= window))


@pytest.mark.parametrize("size", [10, 20, 50])
def test_30_percent_failing_at_once_drains_no_more_than_the_breaker_allows(size):
    part = Partition(size)
    failing = [f"node{i}" for i in range(int(size * 0.3))]
    drained, held = 0, 0
    for node in failing:
        state = PolicyState()
        config = WatchConfig(partition=part.view)
        actions = decide(state, xid(95, gpu=f"{node}-GPU0"), config, NOW)
        if "drain" in kinds(actions):
            part.drained[node] = NOW
            drained += 1
        else:
            assert kinds(actions) == ["none"] and "breaker held" in actions[0].reason
            held += 1
    assert drained == int(size * 0.20) and held == len(failing) - drained
    # Once the window has passed, the breaker lets the next one through.
    later = NOW + 301
    assert kinds(decide(PolicyState(), xid(95, t=later), WatchConfig(partition=part.view), later)) == ["drain"]


def test_breaker_holds_reboots_and_polled_drains_and_an_unreadable_partition():
    full = WatchConfig(partition=lambda now: PartitionView(10, 2), hysteresis_k=1)
    assert kinds(decide(PolicyState(), xid(79), full, NOW)) == ["none"]
    assert kinds(decide(PolicyState(), check("FAIL", NOW), full, NOW)) == ["none"]

    def broken(now):
        raise RuntimeError("sinfo: timed out")

    assert kinds(decide(PolicyState(), xid(95), WatchConfig(partition=broken), NOW)) == ["none"]
    assert kinds(decide(PolicyState(), xid(95), WatchConfig(partition=lambda now: None), NOW)) == ["none"]
    assert kinds(decide(PolicyState(), xid(95), WatchConfig(partition=lambda now: PartitionView(10, 1)), NOW)) == ["drain"]


def test_a_polled_drain_the_breaker_held_is_asked_again_on_the_next_failed_poll():
    part = {"drained": 2}
    config = WatchConfig(hysteresis_k=2, partition=lambda now: PartitionView(10, part["drained"]))
    state = PolicyState()
    got = [kinds(decide(state, check("FAIL", NOW + i), config, NOW + i)) for i in range(4)]
    assert got == [[], ["none"], ["none"], ["none"]]
    part["drained"] = 1  # one drain of the partition came back: room again
    assert kinds(decide(state, check("FAIL", NOW + 5), config, NOW + 5)) == ["drain"]
    assert decide(state, check("FAIL", NOW + 6), config, NOW + 6) == []


def test_the_breaker_fraction_is_exact_at_its_limit():
    """7 of 100 is 7 %: held (0.07 * 100 in floating point is 7.000000000000001, above 7)."""
    config = WatchConfig(breaker_fraction=0.07, partition=lambda now: PartitionView(100, 7))
    assert kinds(decide(PolicyState(), xid(95), config, NOW)) == ["none"]
    config = WatchConfig(breaker_fraction=0.07, partition=lambda now: PartitionView(100, 6))
    assert kinds(decide(PolicyState(), xid(95), config, NOW)) == ["drain"]


def test_a_held_fault_is_no_remediation():
    state = PolicyState()
    decide(state, xid(95), WatchConfig(partition=lambda now: PartitionView(10, 5)), NOW)
    assert state.remediations == [] and not state.drained_by_us


# --- escalation ---------------------------------------------------------------------------

def test_a_gpu_remediated_n_times_in_d_days_is_a_lemon():
    config = WatchConfig(remediate="reset", escalate_n=3, escalate_days=7, serials={"GPU-a": "1650922001234"})
    state = PolicyState()
    for i in range(3):
        t = NOW + i * 86400
        assert kinds(decide(state, xid(95, t=t), config, t)) == ["drain", "reset", "resume"]
    t = NOW + 3 * 86400
    actions = decide(state, xid(95, t=t), config, t)
    assert kinds(actions) == ["drain", "evidence"] and "3 remediations in 7 d" in actions[0].reason
    assert [s for s, _, _ in state.remediations] == ["1650922001234"] * 3
    # Another GPU of the node is judged on its own record.
    assert kinds(decide(PolicyState(remediations=list(state.remediations)), xid(95, gpu="GPU-b", t=t), config, t)) \
        == ["drain", "reset", "resume"]
    # Remediations older than the window no longer count.
    t = NOW + 9 * 86400
    assert kinds(decide(PolicyState(remediations=list(state.remediations)), xid(95, t=t), config, t))[-1] == "resume"


def test_reboots_count_towards_escalation_too():
    config = WatchConfig(escalate_n=2)
    state = PolicyState()
    assert kinds(decide(state, xid(79), config, NOW)) == ["reboot"]
    state.drained_by_us = False  # the node came back after the reboot
    assert kinds(decide(state, xid(79, t=NOW + 60), config, NOW + 60)) == ["reboot"]
    state.drained_by_us = False
    assert kinds(decide(state, xid(79, t=NOW + 120), config, NOW + 120)) == ["drain", "evidence"]


# --- the memory ---------------------------------------------------------------------------

def test_memory_round_trip_0600_and_refuses_what_it_cannot_trust(tmp_path):
    state_dir = tmp_path / "state"
    assert memory.load(state_dir) == PolicyState()
    kept = PolicyState(drained_by_us=True, remediations=[("S1", NOW - 100 * 86400, "reset"), ("S1", NOW, "reset")])
    memory.save(state_dir, kept, NOW)
    path = memory.memory_path(state_dir)
    assert os.stat(path).st_mode & 0o777 == 0o600 and os.stat(state_dir).st_mode & 0o777 == 0o700
    back = memory.load(state_dir)
    assert back.drained_by_us and back.remediations == [("S1", NOW, "reset")]  # the 100-day-old one dropped
    path.write_text(json.dumps({"schema": memory.SCHEMA, "remediations": [["S1", "yesterday", "reset"]]}))
    with pytest.raises(memory.WatchMemoryError, match="is not \\[serial, time, action\\]"):
        memory.load(state_dir)
    path.unlink()
    path.symlink_to("/etc/passwd")
    with pytest.raises(memory.WatchMemoryError, match="watch-memory.json"):
        memory.load(state_dir)
    path.unlink()
    state_dir.chmod(0o777)  # writable by anyone: refused, never chmod'ed back
    with pytest.raises(memory.WatchMemoryError, match="cannot keep the watcher's memory"):
        memory.save(state_dir, kept, NOW)
    assert os.stat(state_dir).st_mode & 0o777 == 0o777 and not path.exists()


# --- the site config ----------------------------------------------------------------------

def test_watch_settings_are_validated_and_reach_watchconfig(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("watch:\n  hysteresis_k: 5\n  remediate: reset\n  breaker_fraction: 0.5\n")
    config = WatchConfig.from_site(load_config(str(cfg)).watch)
    assert (config.hysteresis_k, config.remediate, config.breaker_fraction, config.poll_s) == (5, "reset", 0.5, 10.0)
    assert WatchConfig.from_site(Config().watch) == WatchConfig()
    cfg.write_text("watch:\n  clock_events: true\n")  # the NVML source's (test_watch_core), not the policy's
    assert WatchConfig.from_site(load_config(str(cfg)).watch) == WatchConfig()
    for bad, said in (("hysteresis_k: 0", "watch.hysteresis_k must be"), ("breaker_fraction: 1.5", "fraction"),
                      ("breaker_fraction: .nan", "fraction"), ("remediate: reboot", 'or "reset"'),
                      ("shadow: 1", "true or false"), ("prove_level: 4", "diag level"),
                      ("clock_events: 'yes'", "watch.clock_events must be true or false"),
                      ("poll: 5", "unknown key watch.'poll'"), ("poll_s: .inf", "seconds")):
        cfg.write_text(f"watch:\n  {bad}\n")
        with pytest.raises(ConfigError, match=said.replace(".", r"\.").replace("(", r"\(")):
            load_config(str(cfg))


# --- the actor's record of a restart-app fault (no Slurm daemons: a replayed squeue) -------

def test_a_restart_app_fault_is_attributed_to_the_running_job(tmp_path):
    from gpunode.host.runner import ReplayRunner
    from gpunode.slurm.scontrol import Slurm
    from gpunode.slurm.watch_actions import WatchActor

    runner = ReplayRunner()
    runner.add(["squeue", "-h", "-w", "gpu07", "-t", "RUNNING,COMPLETING", "-o", "%A"], 0, "81234\n")
    site = Config(audit_log="off")
    actor = WatchActor(Slurm(runner), runner, str(tmp_path), WatchConfig(), node="gpu07", site_config=site,
                       env={}, background=False)
    for action in decide(PolicyState(), xid(94), WatchConfig(), NOW) + decide(PolicyState(), xid(63), WatchConfig(), NOW):
        actor(action)
    assert actor.done == [("record", "class restart-app, job 81234"), ("record", "class ignore")]
    assert runner.calls == [["squeue", "-h", "-w", "gpu07", "-t", "RUNNING,COMPLETING", "-o", "%A"]]


SLURM_FIXTURES = Path(__file__).parent / "fixtures" / "slurm"


class Sequenced:
    """A runner answering `scontrol show node` from a list of recorded outputs, in turn."""

    def __init__(self, outputs: list[str]):
        self.outputs, self.calls = outputs, []

    def run(self, argv, timeout=10.0, **kw):
        from gpunode.host.runner import CommandResult

        self.calls.append(list(argv))
        text = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
        return CommandResult(list(argv), 0, text)


def _watch_drained(state: str) -> str:
    """show-node-draining-ours.txt (a real recording) with the watcher's reason and this state."""
    text = (SLURM_FIXTURES / "show-node-draining-ours.txt").read_text()
    text = text.replace("gpunode: gpu.memory.remap GPU0: row remap failure", "gpunode: watch: Xid 95 GPU-a: reset")
    return text.replace("State=ALLOCATED+DRAIN", f"State={state}")


class Resets:
    def __init__(self):
        self.calls = []

    def reset(self, gpu):
        self.calls.append(gpu)
        return True, "reset"


def _actor(outputs, clock, **kw):
    from gpunode.slurm.scontrol import Slurm
    from gpunode.slurm.watch_actions import WatchActor

    runner = Sequenced(outputs)
    return WatchActor(Slurm(runner), runner, "/nonexistent", WatchConfig(remediate="reset"), node="vm",
                      site_config=Config(audit_log="off"), env={}, background=False, clock=clock,
                      sleep=lambda s: clock.advance(s), **kw)


class Clock:
    def __init__(self):
        self.now = NOW

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def test_a_reset_waits_for_the_running_job_and_gives_up_at_its_limit():
    from gpunode.watch.events import Action

    reset = Resets()
    clock = Clock()
    busy = _watch_drained("ALLOCATED+DRAIN")
    actor = _actor([busy], clock, reset=reset, idle_wait_s=60)
    actor(Action("reset", "gpunode: watch: Xid 95 GPU-a: reset", "GPU-a", xid(95)))
    assert actor.done == [("reset-skipped", "jobs still run after 60 s: left drained")] and reset.calls == []
    assert clock.now >= NOW + 60
    # The job ends after two polls: the reset runs then.
    actor = _actor([busy, busy, _watch_drained("IDLE+DRAIN")], Clock(), reset=reset, idle_wait_s=3600)
    actor(Action("reset", "gpunode: watch: Xid 95 GPU-a: reset", "GPU-a", xid(95)))
    assert actor.done == [("reset", "reset")] and reset.calls == ["GPU-a"]


def test_a_reset_names_its_gpu_or_is_not_made():
    from gpunode.watch.events import Action

    reset = Resets()
    actor = _actor([_watch_drained("IDLE+DRAIN")], Clock(), reset=reset)
    actor(Action("reset", "gpunode: watch: recovery_action 1: reset", None, None))
    assert actor.done == [("reset-skipped", "no GPU named: left drained")] and reset.calls == []


def test_the_proof_is_diag_at_the_configured_level(tmp_path):
    import sys

    from gpunode.host.runner import ReplayRunner
    from gpunode.slurm.watch_actions import diag_prover

    argv = [sys.executable, "-m", "gpunode", "diag", "--level", "2", "--json", "--state-dir", str(tmp_path)]
    for rc, out, ok, said in ((0, '{"schema": "gpunode.diag/1", "status": "OK"}', True, "diag level 2: OK (exit 0)"),
                              (2, '{"schema": "gpunode.diag/1", "status": "FAIL"}', False, "FAIL (exit 2)"),
                              (1, '{"schema": "gpunode.diag/1", "status": "WARN"}', False, "WARN (exit 1)"),
                              (0, '{"schema": "gpunode.diag/1", "status": "FAIL"}', False, "FAIL (exit 0)"),
                              (2, '{"schema": "gpunode.diag/1", "status": "OK"}', False, "OK (exit 2)"),
                              (0, '{"schema": "gpunode.diag/1"', False, "gave no result"),
                              (3, "", False, "gave no result")):
        runner = ReplayRunner()
        runner.add(argv, rc, out)
        proof = diag_prover(runner, 2, str(tmp_path))()
        assert proof.ok is ok and said in proof.detail, (rc, out, proof)


def test_the_gpu_reset_seam_runs_nvidia_smi_for_that_gpu_only():
    from gpunode.host.gpu.control import GpuReset
    from gpunode.host.runner import ReplayRunner

    runner = ReplayRunner()
    argv = ["nvidia-smi", "--gpu-reset", "-i", "GPU-7a0e5c1d"]
    runner.add(argv, 0, "GPU 00000000:18:00.0 was successfully reset.\n")
    assert GpuReset(runner).reset("GPU-7a0e5c1d") == (True, "GPU 00000000:18:00.0 was successfully reset.")
    runner = ReplayRunner()
    runner.add(argv, 255, "", "The following GPUs could not be reset:\n  GPU 00000000:18:00.0: In use by another client\n")
    ok, said = GpuReset(runner).reset("GPU-7a0e5c1d")
    assert not ok and said == "GPU 00000000:18:00.0: In use by another client"
    assert runner.calls == [argv]


def test_the_breakers_partition_view_from_a_recorded_sinfo():
    """`sinfo -h -N -p debug -o '%N|%T|%H|%E'` recorded from slurm-wlm 22.05 (the test cluster of
    test_watch_slurm.py): a reboot issued (reboot^) and requested (reboot), a gpunode drain, a
    gpunode reason on a down node, an operator's drain, nodes never seen (Unknown)."""
    import time as _time

    from gpunode.slurm.watch_actions import parse_partition

    text = (SLURM_FIXTURES / "sinfo-watch-partition.txt").read_text()
    at = _time.mktime(_time.strptime("2026-12-06T14:53:00", "%Y-%m-%dT%H:%M:%S"))
    assert parse_partition(text, at, 300) == PartitionView(total=10, ours_recent=4)
    assert parse_partition(text, at + 3600, 300) == PartitionView(total=10, ours_recent=0)
    assert parse_partition(text + text, at, 300) == PartitionView(total=10, ours_recent=4)  # two partitions
    assert parse_partition(text.splitlines()[0][:20] + "\n", at, 300) == PartitionView(total=0, ours_recent=0)


def test_a_host_without_slurm_has_no_breaker_to_hold_and_shadow_shows_the_drain(tmp_path, monkeypatch):
    from gpunode.host.runner import ReplayRunner
    from gpunode.slurm.scontrol import Slurm
    from gpunode.slurm.watch_actions import WatchActor

    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo, no scontrol
    runner = ReplayRunner()
    actor = WatchActor(Slurm(runner), runner, str(tmp_path), WatchConfig(), node="gpu07",
                       site_config=Config(audit_log="off"), env={}, background=False)
    config = actor.policy_config(WatchConfig(shadow=True))
    assert config.partition is None and config.own_drain is None and actor.config is config
    actions = decide(PolicyState(), xid(95), config, NOW)
    for action in actions:
        actor(action)
    assert actor.done == [("would-drain", "shadow mode: nothing done")] and runner.calls == []
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sinfo", "scontrol"):
        (bin_dir / tool).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    config = actor.policy_config(WatchConfig())
    assert config.partition == actor.partition_view and config.own_drain == actor.own_drain
