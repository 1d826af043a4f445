"""A knob the kernel will not let root write here (0444 in a child network namespace, a
read-only /sys in a container) is blocked at plan time with that reason: apply writes nothing
there and says why (the real namespace: tests/test_apply_netns.py). Here the kernel's answer is
stood in for by tune.plan._read_only_here, the one place that asks it."""

from __future__ import annotations

from apply_fixtures import make_tree

from gpunode.host.seam import sysroot_host
from gpunode.tune import plan
from gpunode.tune.plan import make_plan, select_settings
from gpunode.tune.profiles import load_profile

READ_ONLY = "/proc/sys/vm/swappiness"


def _plan(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "_read_only_here", lambda host, path: path == READ_ONLY)
    profile = load_profile("training")
    settings = select_settings(profile, ["sysctl.vm.swappiness", "sysctl.kernel.numa_balancing"])
    return make_plan(sysroot_host(make_tree(tmp_path / "root")), profile, settings)


def test_a_knob_read_only_here_is_blocked_and_the_others_are_not(tmp_path, monkeypatch):
    changes = {c.target: c.blocked for c in _plan(tmp_path, monkeypatch).changes}
    assert changes[READ_ONLY].startswith("read-only here")
    assert changes["/proc/sys/kernel/numa_balancing"] == ""


def test_read_only_here_asks_only_as_root_on_the_live_host(tmp_path):
    # a writable knob is not read-only; off the live host or not as root nothing is asked
    # (a sysroot tree's modes say nothing of the kernel's)
    from types import SimpleNamespace

    knob = tmp_path / "swappiness"
    knob.write_text("60\n")

    def host(live: bool, root: bool):
        return SimpleNamespace(sys=SimpleNamespace(is_live=live, path=lambda _p: str(knob)),
                               facts=SimpleNamespace(is_root=root))

    assert plan._read_only_here(host(True, True), READ_ONLY) is False
    knob.chmod(0o444)
    assert plan._read_only_here(host(False, True), READ_ONLY) is False
    assert plan._read_only_here(host(True, False), READ_ONLY) is False


def test_a_blocked_subject_does_not_fail_the_others_of_its_setting(tmp_path, monkeypatch):
    # cpu.governor has a subject per CPU: cpu2's knob is read-only here, cpu0's is written and
    # verified; the apply goes through for cpu0 (only the subjects written are re-judged) and
    # says cpu2 is blocked
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.journal import StateDir
    from gpunode.tune.session import apply_profile

    cpu2 = "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor"
    monkeypatch.setattr(plan, "_read_only_here", lambda host, path: path == cpu2)
    root = make_tree(tmp_path / "root")
    profile = load_profile("training")
    env = ApplyEnv(host=sysroot_host(root), gpu=NoGpuControl("none"))
    outcome = apply_profile(env, profile, select_settings(profile, ["sysfs.cpu.governor"]), StateDir(tmp_path / "s"),
                            persist=False)
    assert outcome.result == "applied", outcome.reason
    assert {r["subject"]: r["status"] for r in outcome.rows} == {
        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "applied", cpu2: "blocked"}
    assert (root / cpu2.lstrip("/")).read_text() == "schedutil\n"
