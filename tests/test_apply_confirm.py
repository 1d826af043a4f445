"""A live apply is confirmed: a named profile, the plan shown, a question on a terminal, --yes for
scripts, a refusal without either; and the undo hint names the root and state dir it is for."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from apply_fixtures import ROOT, gpunode, make_tree, picture

from gpunode.cli.apply_cmd import NotConfirmed, _confirmer
from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.seam import sysroot_host
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.lock import LockBusy, RootLock
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import apply_profile


def test_a_bare_live_apply_needs_a_profile(tmp_path):
    if Path("/etc/gpunode/config.yaml").exists():
        pytest.skip("a site config on this machine names a profile")
    proc = gpunode("apply", "--state-dir", str(tmp_path / "s"))
    assert proc.returncode == 3 and "name the profile with --profile" in proc.stderr
    assert not (tmp_path / "s").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a live apply needs root to get as far as the question")
def test_a_live_apply_without_a_terminal_refuses_unless_yes(tmp_path):
    knob = Path("/proc/sys/vm/swappiness")
    before = knob.read_text()
    env = {k: v for k, v in os.environ.items() if k != "GPUNODE_STATE_DIR"}
    proc = subprocess.run(
        [sys.executable, "-m", "gpunode", "apply", "--profile", "training", "--only", "sysctl.vm.swappiness",
         "--no-persist", "--state-dir", str(tmp_path / "s"), "--set", "sysctl.vm.swappiness=" +
         ("11" if before.strip() != "11" else "12")],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert knob.read_text() == before
    assert proc.returncode == 3, proc.stderr
    assert "Pass --yes" in proc.stderr and "/proc/sys/vm/swappiness" in proc.stdout  # the plan was shown
    assert not list((tmp_path / "s" / "applies").glob("*.jsonl"))


def _apply(tmp_path, confirm):
    root = make_tree(tmp_path / "root")
    host = sysroot_host(root)
    profile = load_profile("training")
    env = ApplyEnv(host=host, gpu=NoGpuControl("none"))
    state = StateDir(tmp_path / "state")
    return root, state, apply_profile(env, profile, select_settings(profile, ["sysctl.vm.*"]), state,
                                      persist=False, confirm=confirm)


def test_confirmation_sees_the_plan_under_the_lock_and_can_stop_it(tmp_path):
    seen = []

    def refuse(rows):
        seen.append([(r["subject"], r["status"]) for r in rows])
        with pytest.raises(LockBusy):  # asked while the root is locked: the plan cannot go stale
            with RootLock(tmp_path / "root", "test"):
                pass
        raise NotConfirmed("no")

    before = picture(make_tree(tmp_path / "root"))
    with pytest.raises(NotConfirmed):
        _apply(tmp_path, refuse)
    assert seen == [[("/proc/sys/vm/swappiness", "planned")]]
    assert picture(tmp_path / "root") == before and StateDir(tmp_path / "state").ids() == []
    root, state, out = _apply(tmp_path, lambda rows: None)
    assert out.result == "applied" and (root / "proc/sys/vm/swappiness").read_text() == "10\n"


class _Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize(("stdin", "outcome"), [
    (io.StringIO("y\n"), "no terminal to ask on"),
    (_Tty("n\n"), "not confirmed"),
    (_Tty("\n"), "not confirmed"),
    (_Tty("y\n"), None),
    (_Tty("yes\n"), None),
])
def test_the_question(monkeypatch, capsys, stdin, outcome):
    from types import SimpleNamespace

    host = SimpleNamespace(facts=SimpleNamespace(hostname="node7"))
    monkeypatch.setattr(sys, "stdin", stdin)
    rows = [{"setting": "sysctl.vm.swappiness", "subject": "/proc/sys/vm/swappiness", "current": "60",
             "target": "10", "needs_root": True, "reboot_required": False, "gpu_reset_required": False,
             "status": "planned", "note": ""}]
    confirm = _confirmer(host, "training", as_json=False)
    if outcome is None:
        confirm(rows)
    else:
        with pytest.raises(NotConfirmed, match=outcome):
            confirm(rows)
    out, err = capsys.readouterr()
    assert "/proc/sys/vm/swappiness" in out
    assert ("Apply these 1 change(s) to node7? [y/N]" in err) == isinstance(stdin, _Tty)


def test_the_undo_hint_names_the_sysroot_and_state_dir(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state dir"
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*")
    assert proc.returncode == 0, proc.stderr
    hint = proc.stdout[proc.stdout.index("undo with `") + len("undo with `"):].split("`")[0]
    hint = " ".join(hint.split())
    assert hint.startswith("gpunode rollback --id ")
    assert f"--sysroot {root} --state-dir '{state}'" in hint


def test_a_dry_run_lists_what_is_not_applicable_and_says_when_nothing_can_change(tmp_path):
    root = make_tree(tmp_path / "root")
    (root / "proc/sys/vm/swappiness").unlink()  # an absent knob: not applicable here
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / "s"), "--dry-run",
                   "--only", "sysctl.vm.swappiness,cmdline.*")
    assert proc.returncode in (0, 1), proc.stderr
    rows = [" ".join(line.split()) for line in proc.stdout.splitlines()]
    assert any("sysctl.vm.swappiness" in r and "n/a" in r for r in rows), proc.stdout
    assert "nothing can be changed here: 1 blocked, 1 not applicable" in " ".join(rows)
