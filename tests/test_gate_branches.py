"""Branches of run_gate no other in-process test reaches: results judged already (a fresh
`gpunode watch` state) stand for the checks except in the epilog, and a drain scontrol refuses
is a problem of the verdict, not a crash."""

from __future__ import annotations

from gate_fixtures import h100_inventory
from test_gate import FakeScontrol, broken, failing

from gpunode.audit.engine import Result, Status
from gpunode.config import Config
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.runner import CommandResult
from gpunode.slurm.gate import EPILOG_CHECK_ID, GateOptions, GateRun, run_gate
from gpunode.slurm.scontrol import Slurm
from gpunode.tune.profiles import load_profile
from testkit import tree_host

WATCHED = [Result(id="gpu.count", title="", area="gpu", severity="critical", status=Status.PASS, message="2 GPUs")]


def _run(tmp_path, mode, checks, scontrol=None, results=None):
    host = tree_host(tmp_path / "root", inventory=GpuInventory.from_json(h100_inventory(2)))
    return run_gate(GateRun(host=host, source="watcher", profile=load_profile("training"), config=Config(),
                            checks=checks, options=GateOptions(mode), slurm=Slurm(scontrol) if scontrol else None,
                            results=results))


def test_results_judged_already_stand_for_the_checks(tmp_path):
    verdict = _run(tmp_path, "check", [broken, failing], results=WATCHED)
    assert verdict.results is WATCHED and verdict.status == "OK" and verdict.exit_code == 0


def test_the_epilog_polls_for_leftovers_even_with_results_judged_already(tmp_path):
    verdict = _run(tmp_path, "epilog", [broken], FakeScontrol(), results=WATCHED)
    assert [r.id for r in verdict.results] == [EPILOG_CHECK_ID] * 2 and verdict.status == "OK"


class RefusingScontrol(FakeScontrol):
    """Reads answer; every `scontrol update` is refused (a slurmctld that denies the drain)."""

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        if [str(a) for a in argv[:2]] == ["scontrol", "update"]:
            self.calls.append([str(a) for a in argv])
            return CommandResult([str(a) for a in argv], 1, "", "slurm_update error: Access/permission denied\n")
        return super().run(argv, timeout, env, cwd, input_text)


def test_a_refused_drain_is_a_problem_of_the_verdict(tmp_path):
    scontrol = RefusingScontrol()
    verdict = _run(tmp_path, "prolog", [failing], scontrol)
    assert len(scontrol.updates) == 1 and verdict.slurm is None and verdict.blocked
    assert verdict.problems == [
        f"scontrol update {' '.join(scontrol.updates[0][2:])}: slurm_update error: Access/permission denied"]
    assert verdict.exit_code == 2  # the job is still blocked: Slurm drains the node for the failed prolog
