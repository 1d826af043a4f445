"""apply_profile, in-process (no typer): an apply killed before its end line stops the next
journaled apply with the rollback command to run, while the boot re-apply (not journaled) goes on
(issue 21 moved that check into its own helper; the 'it' wording had no test)."""

from __future__ import annotations

import pytest
from apply_fixtures import make_tree

from gpunode.host.gpu.control import NoGpuControl
from gpunode.host.seam import sysroot_host
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.session import Refused, apply_profile


def apply(root, state, journaled=True):
    profile = load_profile("training")
    env = ApplyEnv(host=sysroot_host(root), gpu=NoGpuControl("none"))
    return apply_profile(env, profile, select_settings(profile, ["sysctl.vm.*"]), StateDir(state),
                         persist=False, journaled=journaled)


def test_an_apply_killed_before_its_end_refuses_the_next_one(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    first = apply(root, state)
    assert first.result == "applied"
    journal = StateDir(state).applies / f"{first.apply_id}.jsonl"
    lines = journal.read_text().splitlines()
    assert '"type": "end"' in lines[-1]
    journal.write_text("\n".join(lines[:-1]) + "\n")  # killed before the end line
    with pytest.raises(Refused) as refused:
        apply(root, state)
    assert str(refused.value) == (
        f"apply {first.apply_id} was interrupted before it finished; run "
        f"`gpunode rollback --id {first.apply_id} --sysroot {root} --state-dir {state}` first")
    assert apply(root, state, journaled=False).result == "nothing-to-change"
