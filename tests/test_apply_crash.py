"""SIGKILL apply and rollback at random instants (benchmarks/crash_harness.py, a few rounds in
CI; the full 500 + 200 run is `python benchmarks/crash_harness.py`): after the next rollback
every tree is byte-exact (content, modes, links) with no stray file or directory."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "benchmarks" / "crash_harness.py"


def _harness():
    spec = importlib.util.spec_from_file_location("crash_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_random_kills_of_apply_and_rollback_end_byte_exact(tmp_path):
    seed = int(os.environ.get("GPUNODE_CRASH_SEED", "20261201"))
    result = _harness().run(apply_rounds=10, rollback_rounds=5, seed=seed, workdir=tmp_path, aim="work")
    for verb in ("apply", "rollback"):
        tally = result[verb]
        assert tally["failures"] == [], (verb, seed, tally["failures"])
        assert tally["byte_exact"] == tally["rounds"]
    # the kills really landed while the commands ran, some in the middle of journaled work
    assert result["apply"]["killed_mid_run"] + result["rollback"]["killed_mid_run"] >= 1
    assert result["apply"]["journal_unfinished"] + result["rollback"]["journal_unfinished"] >= 1


def test_apply_undoes_itself_on_a_failing_journal_write_and_on_sigterm_sigint_sighup(tmp_path):
    # The journal fault rounds are deterministic (evenly spaced over the first to the last write
    # of an apply, ENOSPC/EIO/ENOSPC-once). A signal round may come after the batch finished
    # (then the apply finished): either way, nothing is left changed. SIGHUP rounds close the
    # apply's own terminal (a pseudo-terminal), as an ssh session that ends does.
    harness = _harness()
    assert harness.journal_fault_schedule(46, 6) == ["ENOSPC:1", "ENOSPC:28", "EIO:10", "EIO:37",
                                                     "ENOSPC:19:once", "ENOSPC:46:once"]
    seed = int(os.environ.get("GPUNODE_CRASH_SEED", "20261206"))
    result = harness.run(apply_rounds=0, rollback_rounds=0, seed=seed, workdir=tmp_path, aim="work",
                         enospc=6, sigterm=2, sigint=2, sighup=2, rollback_enospc=2)
    enospc = result["enospc"]
    assert enospc["failures"] == [], (seed, enospc["failures"])
    assert enospc["stopped_by_the_fault"] == enospc["restored_by_apply"] == enospc["byte_exact"] == 6
    assert enospc["journal_unrecorded"] >= 1  # the disk stayed full: the rollback went on unrecorded
    # gpunode rollback's own journal failing (first and last of its writes): it goes on restoring
    back = result["rollback_enospc"]
    assert back["failures"] == [], (seed, back["failures"])
    assert back["stopped_by_the_fault"] == back["restored_by_apply"] == back["byte_exact"] == 2
    for name in ("sigterm", "sigint", "sighup"):
        tally = result[name]
        assert tally["failures"] == [], (name, seed, tally["failures"])
        assert tally["restored_by_apply"] + tally["finished_before_the_signal"] == tally["rounds"] == 2
        assert tally["byte_exact"] == 2
