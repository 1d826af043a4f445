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
