"""Crashes, failing writes, the lock and bad profiles: nothing may be left half-changed."""

from __future__ import annotations

import json
import signal

import pytest
from apply_fixtures import apply_json, gpunode, make_tree, picture

from gpunode.tune.journal import StateDir
from gpunode.tune.lock import StateLock

ONLY = "sysctl.vm.*,sysctl.kernel.*,sysfs.thp.*,limits.*"  # 5 runtime changes + limits file + persistence


def _apply(root, state, *extra, env=None):
    return gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", ONLY, *extra, env=env)


@pytest.mark.parametrize("point", ["journal:1", "write:1", "journal:4", "write:5", "journal:8", "write:8"])
def test_sigkill_mid_apply_then_rollback_restores_everything(tmp_path, point):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    proc = _apply(root, state, env={"GPUNODE_TEST_CRASH_AFTER": point})
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    hist = json.loads(gpunode("history", "--state-dir", str(state), "--sysroot", str(root), "--json").stdout)
    assert hist["applies"][0]["status"] == "interrupted"
    stage, n = point.split(":")
    if stage == "write":  # the value was written and the process died before marking it done
        assert picture(root) != before
    # a new apply refuses until the interrupted one is dealt with (the lock died with the process)
    refused = _apply(root, state)
    assert refused.returncode == 3 and "was interrupted" in refused.stderr
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    restores = json.loads(rb.stdout)["restores"]
    assert len(restores) == int(n)  # every journaled change was looked at, the last one first
    assert restores[0]["status"] == ("restored" if stage == "write" else "not-written")
    assert picture(root) == before
    # afterwards a normal apply works again
    assert _apply(root, state).returncode == 0


def test_failing_write_rolls_back_the_batch(tmp_path):
    # /etc/sysctl.d is a file, not a directory: writing the persistence file fails for real
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    (root / "etc/sysctl.d/99-site.conf").unlink()
    (root / "etc/sysctl.d").rmdir()
    (root / "etc/sysctl.d").write_text("not a directory\n")
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", ONLY)
    assert rc == 3 and doc["result"] == "failed"
    assert "/etc/sysctl.d/90-gpunode.conf" in doc["reason"] and "persist.sysctl" in doc["reason"]
    statuses = [c["status"] for c in doc["changes"]]
    assert statuses == ["rolled-back"] * 5 + ["failed"] + ["not-run"] * (len(statuses) - 6)
    assert [r["status"] for r in doc["rolled_back"]] == ["not-written"] + ["restored"] * 5
    assert picture(root) == before
    hist = json.loads(gpunode("history", "--state-dir", str(state), "--sysroot", str(root), "--json").stdout)
    assert hist["applies"][0]["status"] == "failed"
    # plain output: the reason on stderr, one line
    rc2 = _apply(root, state)
    assert rc2.returncode == 3 and rc2.stderr.startswith("gpunode: error: apply failed and was rolled back:")


def test_verify_catches_a_value_that_does_not_stick(tmp_path):
    # a knob that takes the write without error but keeps its old value
    from gpunode.host.gpu.control import NoGpuControl
    from gpunode.host.seam import sysroot_host
    from gpunode.host.sysroot import SysRoot
    from gpunode.tune.actions import ApplyEnv
    from gpunode.tune.plan import select_settings
    from gpunode.tune.profiles import load_profile
    from gpunode.tune.session import apply_profile

    class Stubborn(SysRoot):
        def write(self, path, data):
            super().write(path, "60\n" if path == "/proc/sys/vm/swappiness" else data)

    root = make_tree(tmp_path / "root")
    before = picture(root)
    host = sysroot_host(root)
    host.sys = Stubborn(root)
    profile = load_profile("training")
    env = ApplyEnv(host=host, gpu=NoGpuControl("none"))
    outcome = apply_profile(env, profile, select_settings(profile, ["sysfs.thp.*", "sysctl.vm.swappiness"]),
                            StateDir(tmp_path / "state"), persist=False)
    assert outcome.result == "failed"
    assert outcome.reason == "sysctl.vm.swappiness /proc/sys/vm/swappiness: reads 60 after writing 10"
    assert [r.status for r in outcome.restored] == ["not-written", "restored"]
    assert picture(root) == before


def test_second_concurrent_apply_refuses(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    StateDir(state).ensure()
    before = picture(root)
    with StateLock(state, "test holder"):
        proc = _apply(root, state)
        assert proc.returncode == 3
        assert "another gpunode apply/rollback is running" in proc.stderr and "test holder" in proc.stderr
        rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
        assert rb.returncode == 3
    assert picture(root) == before
    assert _apply(root, state).returncode == 0  # the lock is free again


def test_one_lock_per_root_whatever_the_state_dir(tmp_path):
    # Two applies on one root with different --state-dir (and the root named through a symlink)
    # must exclude each other; another root is free.
    import os

    from gpunode.tune.lock import RootLock

    root, other = make_tree(tmp_path / "root"), make_tree(tmp_path / "other")
    alias = tmp_path / "alias"
    alias.symlink_to(root)
    before = picture(root)
    with RootLock(root, "test holder"):
        proc = _apply(alias, tmp_path / "state-b")
        assert proc.returncode == 3, proc.stderr
        assert f"another gpunode apply/rollback is changing {root}" in proc.stderr  # the CLI resolves it
        assert f"(pid {os.getpid()})" in proc.stderr
        assert picture(root) == before
        assert _apply(other, tmp_path / "state-c").returncode == 0
    assert _apply(root, tmp_path / "state-b").returncode == 0


def test_flock_holder_reads_proc_locks():
    from gpunode.tune.lock import flock_holder

    locks = ("1: POSIX  ADVISORY  WRITE 99 fd:01:77 0 EOF\n"
             "2: FLOCK  ADVISORY  WRITE 4242 fd:01:77 0 EOF\n"
             "3: FLOCK  ADVISORY  WRITE 55 00:2e:77 0 EOF\n")
    assert flock_holder(os_makedev(0xfd, 1), 77, locks) == 4242
    assert flock_holder(os_makedev(0, 0x2e), 77, locks) == 55
    assert flock_holder(os_makedev(0xfd, 1), 78, locks) is None


def os_makedev(major, minor):
    import os

    return os.makedev(major, minor)


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ("settings:\n  - {kind: sysctll, key: vm.swappiness, target: 1}\n", "unknown kind 'sysctll'"),
        ("settings:\n  - {kind: gpu, key: persistence_mode, target: 'yes please'}\n", "target must be true or false"),
        ("settings:\n  - {kind: sysctl, key: vm.swappiness}\n", "missing 'target'"),
        ("settings:\n  - {kind: sysctl, target: 5}\n", "missing or empty 'key'"),
        ("settings:\n  - {kind: sysctl, key: vm.swappiness, target: [1, 2]}\n", "target must be a string, number or boolean"),
        ("settings: [\n", "not valid YAML"),
        ("settings:\n  - {kind: gpu, key: mig_layout, target: '4g.40gb:2'}\n", "needs 8 compute slices"),
        ("settings:\n  - {kind: limits, key: memlock, target: lots}\n", "memlock"),
        ("settings:\n  - {kind: gpu, key: power_limit, target: -300}\n", "power_limit"),
    ],
)
def test_bad_profile_yaml_exits_2_and_changes_nothing(tmp_path, overlay, message):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    bad = tmp_path / "host.yaml"
    bad.write_text(overlay)
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--overlay", str(bad))
    assert proc.returncode == 3
    assert proc.stderr.startswith("gpunode: error: ") and proc.stderr.count("\n") == 1
    assert message in proc.stderr
    assert picture(root) == before and not state.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "sysctl.nope.*"], "no setting of profile training matches 'sysctl.nope.*'"),
        (["--set", "sysctl.vm.swappiness"], "expected KIND.KEY=VALUE"),
        (["--set", "sysctl.vm.nope=1"], "the profile has no such setting"),
        (["--profile", "no-such-profile"], "unknown profile 'no-such-profile'"),
        (["--boot", "--profile", "training"], "--boot re-applies the recorded settings"),
    ],
)
def test_bad_options_exit_2(tmp_path, args, message):
    root = make_tree(tmp_path / "root")
    before = picture(root)
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / "s"), *args)
    assert proc.returncode == 3 and message in proc.stderr, proc.stderr
    assert picture(root) == before


def test_rollback_of_unknown_id_and_wrong_root(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    other = make_tree(tmp_path / "other")
    _, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.swappiness")
    unknown = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--id", "nope")
    assert unknown.returncode == 3 and "no apply with id nope" in unknown.stderr
    wrong = gpunode("rollback", "--sysroot", str(other), "--state-dir", str(state), "--id", doc["id"])
    assert wrong.returncode == 3 and f"--sysroot {root}" in wrong.stderr


@pytest.mark.parametrize("edit", [
    lambda spec: spec["settings"][0].update(target="always\nnever"),  # a control character
    lambda spec: spec["settings"][0].update(kind="sysctll"),
    lambda spec: spec["settings"][0].update(path="/sys/../etc/shadow"),  # a sysfs path out of /sys
    lambda spec: spec.update(settings="all"),
])
def test_boot_reapply_validates_the_saved_spec_again(tmp_path, edit):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    rc, _ = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysfs.thp.*")
    assert rc == 0
    spec_file = root / "etc/gpunode/apply-boot.json"
    spec = json.loads(spec_file.read_text())
    edit(spec)
    spec_file.write_text(json.dumps(spec))
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("always [madvise] never\n")
    before = picture(root)
    proc = gpunode("apply", "--boot", "--sysroot", str(root), "--state-dir", str(state))
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("gpunode: error: /etc/gpunode/apply-boot.json") and proc.stderr.count("\n") == 1
    assert picture(root) == before
