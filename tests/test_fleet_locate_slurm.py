"""`gpunode fleet locate --slurm / --job` (issue 25): the allocation's nodes from the environment
or a recorded `scontrol show job` (running, pending, unknown; a comment cannot choose the nodes),
the srun argv of each pair test, a whole locate over srun steps with a stand-in runner, --drain;
and on a REAL Slurm (munged, slurmctld and two slurmd of Debian's packages on this host, nodes
lnode1 and lnode2 at 127.0.0.1): `locate --job` and `--slurm` run iperf3 as job steps."""

from __future__ import annotations

import json
import random
import shutil
import threading
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.exits import USAGE_EXIT
from gpunode.fleet.locate import pairtests
from gpunode.fleet.locate.algorithm import Round
from gpunode.fleet.locate.srun import Allocation, SrunRounds, allocation, job_fields
from gpunode.fleet.validate import FleetError
from gpunode.host.runner import CommandResult, Runner

FIX = Path(__file__).parent / "fixtures"
SINFO = ["sinfo", "-h", "-N", "-n"]


class Answers(Runner):
    """A stand-in Runner: each argv answered by the first rule whose test it passes; every argv kept."""

    def __init__(self, rules):
        self.rules, self.calls, self.lock = rules, [], threading.Lock()

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        argv = [str(a) for a in argv]
        with self.lock:
            self.calls.append(argv)
        for test, answer in self.rules:
            if test(argv):
                return answer(argv) if callable(answer) else answer
        return CommandResult(argv, 127, error=f"{argv[0]}: not expected here")


def _text(name: str) -> str:
    return (FIX / "slurm" / name).read_text()


def _slurm_reads(show_job: str | None = None, rc: int = 0, stderr: str = "") -> Answers:
    rules = [(lambda a: a[:4] == SINFO, CommandResult([], 0, _text("sinfo-nodeaddr.txt")))]
    if show_job is not None:
        rules.append((lambda a: a[:3] == ["scontrol", "show", "job"], CommandResult([], rc, show_job, stderr)))
    return Answers(rules)


def test_the_allocation_of_this_job_comes_from_its_environment():
    running = _text("show-job-running-2-nodes.txt")  # root's job (uid 0): its nodes are checked against Slurm's
    runner = _slurm_reads(running)
    alloc = allocation(runner, {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "lnode[1-2]"}, None, uid=0)
    assert alloc == Allocation("1", ["lnode1", "lnode2"], {"lnode1": "127.0.0.1", "lnode2": "127.0.0.1"})
    assert runner.calls == [["scontrol", "show", "job", "1"], ["sinfo", "-h", "-N", "-n", "lnode[1-2]", "-o", "%N|%o"]]
    big = allocation(_slurm_reads(running.replace("NodeList=lnode[1-2]", "NodeList=gpu-[01-03,10]")),
                     {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "gpu-[01-03],gpu-10"}, None, uid=0)
    assert big.nodes == ["gpu-01", "gpu-02", "gpu-03", "gpu-10"] and big.addresses["gpu-10"] == "gpu-10"


def test_a_running_job_gives_its_nodes_from_scontrol_show_job():
    runner = _slurm_reads(_text("show-job-running-2-nodes.txt"))
    alloc = allocation(runner, {}, "1", uid=0)  # the job is root's
    assert alloc.job == "1" and alloc.nodes == ["lnode1", "lnode2"]
    assert runner.calls[0] == ["scontrol", "show", "job", "1"]


@pytest.mark.parametrize("show, rc, stderr, env, job, message", [
    ("show-job-pending.txt", 0, "", {}, "2", "job 2 is PENDING: its nodes are not allocated now"),
    (None, 1, "slurm_load_jobs error: Invalid job id specified\n", {}, "99",
     "scontrol show job 99: slurm_load_jobs error: Invalid job id specified"),
    ("show-job-running-2-nodes.txt", 0, "", {}, "1; reboot", "--job '1; reboot': give a job id"),
    ("show-job-comment.txt", 0, "", {}, "2", "job 2 is COMPLETED"),
    (None, 0, "", {}, None, "--slurm: not inside a Slurm allocation"),
    (None, 0, "", {"SLURM_JOB_ID": "3", "SLURM_JOB_NODELIST": "lnode1"}, None, "job 3 has 1 node(s): locate needs at least 2"),
    (None, 0, "", {"SLURM_JOB_ID": "3", "SLURM_JOB_NODELIST": "gpu-[01-02],-R"}, None, "node '-R' is not a host name"),
    (None, 0, "", {"SLURM_JOB_ID": "3", "SLURM_JOB_NODELIST": "gpu-[01-"}, None, "node list 'gpu-[01-'"),
])
def test_no_allocation_to_test_is_said_in_one_line(show, rc, stderr, env, job, message):
    runner = _slurm_reads(_text(show) if show else "", rc, stderr)
    with pytest.raises(FleetError) as err:
        allocation(runner, env, job)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_job_comment_cannot_choose_the_nodes():
    text = _text("show-job-running-2-nodes.txt").replace(
        "   Power=", "   Comment=x NodeList=victim[1-64] JobState=RUNNING\n   Power=")
    fields = job_fields(text)
    assert fields["NodeList"] == "lnode[1-2]" and "victim" not in json.dumps(fields)
    first = _text("show-job-running-2-nodes.txt").splitlines(keepends=True)
    early = "".join(first[:2] + ["   Comment=x NodeList=victim[1-64]\n"] + first[2:])  # before the real one
    assert job_fields(early)["NodeList"] == "lnode[1-2]"
    # a comment with a newline in it: scontrol prints the rest as a line of its own
    wrapped = _text("show-job-running-2-nodes.txt").replace("   Power=", "   Comment=x\nNodeList=victim[1-64]\n   Power=")
    assert job_fields(wrapped)["NodeList"] == "lnode[1-2]"


def test_a_node_address_that_could_read_as_an_option_is_refused():
    runner = Answers([STILL_RUNNING,
                      (lambda a: a[:4] == SINFO, CommandResult([], 0, "lnode1|127.0.0.1\nlnode2|--logfile=/etc/x\n"))])
    with pytest.raises(FleetError, match="lnode2: NodeAddr '--logfile=/etc/x' is not a host name"):
        allocation(runner, {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "lnode[1-2]"}, None, uid=0)


# After each round the job is read again (a step of an ended job fails for gpunode, not for the nodes).
STILL_RUNNING = (lambda a: a[:3] == ["scontrol", "show", "job"], CommandResult([], 0, _text("show-job-running-2-nodes.txt")))
ALLOC = Allocation("7", ["gpu-01", "gpu-02", "gpu-03", "gpu-04"],
                   {"gpu-01": "10.0.0.1", "gpu-02": "10.0.0.2", "gpu-03": "10.0.0.3", "gpu-04": "10.0.0.4"})


def _iperf(bad: str | None = None, slow_address: str | None = None):
    """Answers for tcp steps: servers end at once, ss says LISTEN, a client's figure is 0.1 Gb/s
    where either end is `bad` (its node name on the client's --nodelist, its address on --client)."""
    ok = (FIX / "locate" / "iperf3_ok.json").read_text()
    doc = json.loads(ok)
    doc["end"]["sum_received"]["bits_per_second"] = 1e8
    slow = json.dumps(doc)

    def client(argv):
        host = next(a.split("=", 1)[1] for a in argv if a.startswith("--nodelist="))
        partner = argv[argv.index("--client") + 1]
        return CommandResult(argv, 0, slow if bad in (host, ALLOC.nodes[int(partner[-1]) - 1]) else ok)

    return Answers([
        STILL_RUNNING,
        (lambda a: "--server" in a, CommandResult([], 0, "")),
        (lambda a: "ss" in a, CommandResult([], 0, "LISTEN 0 5 0.0.0.0:5201 0.0.0.0:*\n")),
        (lambda a: "--client" in a, client),
    ])


def test_each_pair_test_is_two_job_steps_pinned_to_their_nodes():
    runner = _iperf()
    rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(seconds=1), ALLOC, runner, sleep=lambda s: None)
    rnd = Round("match", [(0, 1)], roles=["match"])
    rounds(rnd)
    step = ["srun", "--jobid=7", "--overlap", "--nodes=1", "--ntasks=1"]
    assert sorted(runner.calls) == sorted([
        [*step, "--nodelist=gpu-02", "iperf3", "--server", "--one-off", "--port", "5201"],
        [*step, "--nodelist=gpu-02", "ss", "--no-header", "--listening", "--tcp", "--numeric", "sport = :5201"],
        [*step, "--nodelist=gpu-01", "iperf3", "--client", "10.0.0.2", "--port", "5201", "--time", "1",
         "--parallel", "1", "--json"],
        ["scontrol", "show", "job", "7"]])
    assert rnd.figures[0] > 1 and rounds.runs[0]["job"] == "7" and rounds.details[0][0].error is None


def test_nccl_is_its_own_two_node_step_of_the_job():
    cfg = pairtests.Config(launcher="srun", gpus_per_node=8, nccl_bin="/opt/nccl-tests/all_reduce_perf")
    rounds = SrunRounds(pairtests.PLUGINS["nccl"], cfg, ALLOC, Runner())
    a, _ = pairtests.PLUGINS["nccl"].plan(cfg, "10.0.0.1", "10.0.0.2", "gpu-01", "gpu-02")
    argv = rounds.step("gpu-01", a.clients[0])
    assert argv[:9] == ["srun", "--jobid=7", "--overlap", "--nodes", "2", "--ntasks-per-node", "8",
                        "--nodelist", "gpu-01,gpu-02"]
    assert "/opt/nccl-tests/all_reduce_perf" in argv and argv.count("srun") == 1


def test_a_server_that_never_listens_is_a_failed_test_after_the_playbooks_30_tries():
    runner = Answers([STILL_RUNNING, (lambda a: "--server" in a, CommandResult([], 0, "")),
                      (lambda a: "ss" in a, CommandResult([], 0, ""))])
    slept = []
    rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(), ALLOC, runner, sleep=slept.append)
    rnd = Round("match", [(0, 1)], roles=["match"])
    rounds(rnd)
    assert rnd.figures == [None] and rounds.details[0][0].error == "gpu-02: no server listening on port 5201"
    assert sum("ss" in c for c in runner.calls) == 30 and slept == [1.0] * 29
    assert not any("--client" in c for c in runner.calls)


def test_locate_over_srun_names_the_bad_node_in_two_rounds():
    for seed in range(5):
        runner = _iperf(bad="gpu-03")
        rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(), ALLOC, runner, sleep=lambda s: None)
        from gpunode.fleet.locate.driver import run_locate

        outcome, _ = run_locate(rounds, 1, seed, 0.5, None)
        assert [(v.kind, v.nodes) for v in outcome.verdicts] == [("node", (2,))]
        assert len(outcome.rounds) == 2 and outcome.tests == 4 and len(rounds.runs) == 2


def test_drain_runs_only_when_asked_and_through_gpunode_slurm_drain():
    from gpunode.fleet.locate.report import locate_document
    from gpunode.fleet.locate.session import drain_faults
    from gpunode.fleet.locate.simulate import Fleet
    from gpunode.slurm.scontrol import Slurm

    outcome, _ = Fleet(8, bad_nodes=(3,), figures=True).run(random.Random(4))
    doc = locate_document(outcome, [f"gpu-{i:02d}" for i in range(8)], test="tcp", unit="Gb/s", seed=4, repeat=1,
                          ratio=0.8, expectation=None, expectation_source="fleet median")
    assert "drained" not in doc  # the report only suggests
    idle = (FIX / "slurm" / "show-node-idle.txt").read_text().replace("NodeName=vm", "NodeName=gpu-03")
    runner = Answers([(lambda a: a[:3] == ["scontrol", "show", "node"], CommandResult([], 0, idle)),
                      (lambda a: a[:2] == ["scontrol", "update"], CommandResult([], 0, ""))])
    drain_faults(doc, Slurm(runner))
    assert runner.calls[-1] == ["scontrol", "update", "nodename=gpu-03", "state=drain",
                                "reason=gpunode: drain: fleet locate tcp: node fault, failed 2 of 2 tests"]
    assert doc["drained"] == [{"node": "gpu-03", "action": "drained",
                               "detail": "gpunode: drain: fleet locate tcp: node fault, failed 2 of 2 tests"}]
    assert doc["exit_code"] == 2
    foreign = (FIX / "slurm" / "show-node-drain-foreign.txt").read_text()
    runner = Answers([(lambda a: a[:3] == ["scontrol", "show", "node"], CommandResult([], 0, foreign))])
    doc.pop("drained")
    drain_faults(doc, Slurm(runner))
    assert doc["drained"][0]["action"] == "left-foreign" and not any(c[1] == "update" for c in runner.calls)


@pytest.mark.parametrize("args, message", [
    (["--slurm", "-i", "inv.ini"], "give -i INVENTORY or --slurm/--job, not both"),
    ([], "give -i INVENTORY, or --slurm inside a Slurm allocation"),
    (["--job", "1x"], "--job '1x': give a job id (a number)"),
    # inventory-only options were ignored under --slurm/--job: the whole allocation was tested
    (["--slurm", "--limit", "gpu-01:gpu-02"], "--limit: only with -i INVENTORY, not with --slurm/--job"),
    (["--job", "42", "-l", "gpu-01"], "--limit: only with -i INVENTORY"),
    (["--slurm", "--playbooks", "pb", "--state-dir", "st"], "--playbooks, --state-dir: only with -i INVENTORY"),
])
def test_usage_errors(monkeypatch, args, message):
    for var in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, ["fleet", "locate", *args])
    assert result.exit_code == USAGE_EXIT and f"gpunode: error: {message}" in result.output
    assert result.output.count("gpunode: error:") == 1


# --- a real Slurm: two slurmd on this host ----------------------------------------------------


def _local_slurm():
    from test_gate_slurm import LocalSlurm, _free_ports

    class TwoNodeSlurm(LocalSlurm):
        """LocalSlurm with two nodes, lnode1 and lnode2, each its own slurmd on this host (ports and
        spool dirs per node: %n), no job hooks (an allocation runs steps here), no gres."""

        NODES = ("lnode1", "lnode2")

        def write_conf(self, hooks, interval: int = 0) -> None:
            if not hasattr(self, "ports"):
                *self.ports, self.port2 = _free_ports(3)
            super().write_conf(hooks, interval)
            r = self.root
            lines = [line for line in self.conf.read_text().splitlines()
                     if not line.startswith(("Prolog", "Epilog=", "HealthCheck", "NodeName=", "GresTypes="))]
            text = "\n".join(lines) + "\n"
            for key, value in (("SlurmdSpoolDir", f"{r}/spool/%n"), ("SlurmdPidFile", f"{r}/slurmd-%n.pid"),
                               ("SlurmdLogFile", f"{r}/log/slurmd-%n.log")):
                text = "\n".join(f"{key}={value}" if line.startswith(key + "=") else line
                                 for line in text.splitlines()) + "\n"
            nodes = "".join(f"NodeName={name} NodeHostname={self.node} NodeAddr=127.0.0.1 Port={port} CPUs=1 "
                            "State=UNKNOWN\n" for name, port in zip(self.NODES, (self.ports[1], self.port2), strict=True))
            self.conf.write_text(text.replace("PartitionName=", nodes + "PartitionName="))
            (r / "etc" / "gres.conf").write_text("")

        def start_slurm(self) -> None:
            self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
            for name in self.NODES:
                self._spawn(f"slurmd-{name}", ["slurmd", "-D", "-N", name])
            self._wait(lambda: self.cmd("sinfo", "-h", "-o", "%T %D").stdout.split() == ["idle", "2"], 30,
                       "two idle nodes")

        def state(self) -> str:
            return self.cmd("sinfo", "-h", "-o", "%T").stdout.strip().upper()

    return TwoNodeSlurm


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    from test_gate_slurm import idle_cluster

    with idle_cluster(tmp_path_factory, "locate-slurm", _local_slurm()) as slurm:
        granted = slurm.cmd("salloc", "-N2", "--no-shell", "--job-name=gpunode-locate-test")
        assert granted.returncode == 0, granted.stderr
        job = granted.stderr.split("Granted job allocation")[1].split()[0]
        try:
            yield slurm, job
        finally:  # end the job (and any step) before the daemons stop
            slurm.cmd("scancel", job)
            slurm._wait(lambda: slurm.cmd("squeue", "-h", "-j", job).stdout.strip() == "", 30, "the job to end")


def _locate(two_nodes, monkeypatch, *args):
    slurm, job = two_nodes
    from test_gate_slurm import _free_ports

    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    port = str(_free_ports(1)[0])
    result = CliRunner().invoke(app, ["fleet", "locate", *args, "--test", "tcp", "--seconds", "1", "--port", port,
                                      "--timeout", "30", "--json", "--quiet"])
    return result, json.loads(result.stdout) if result.stdout.startswith("{") else None


@pytest.mark.slow
@pytest.mark.root
def test_locate_job_runs_iperf3_as_steps_of_a_real_job(two_nodes, monkeypatch):
    from testkit import require

    require(shutil.which("iperf3") is not None, "needs iperf3 (Debian package iperf3)")
    slurm, job = two_nodes
    for var in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        monkeypatch.delenv(var, raising=False)
    result, doc = _locate(two_nodes, monkeypatch, "--job", job)
    assert result.exit_code == 0, result.output
    assert doc["slurm_job"] == job and doc["hosts"] == ["lnode1", "lnode2"] and doc["status"] == "OK"
    assert doc["rounds"] == 1 and doc["tests"] == 1 and doc["verdicts"] == [] and "drained" not in doc
    test = doc["results"][0]
    assert test["figure"] > 0 and test["passed"] and test["error"] is None, test
    # inside the allocation: the same, from its environment
    monkeypatch.setenv("SLURM_JOB_ID", job)
    monkeypatch.setenv("SLURM_JOB_NODELIST", "lnode[1-2]")
    result, doc = _locate(two_nodes, monkeypatch, "--slurm")
    assert result.exit_code == 0 and doc["slurm_job"] == job and doc["results"][0]["figure"] > 0, result.output


@pytest.mark.slow
@pytest.mark.root
def test_locate_job_refuses_a_job_whose_name_prints_a_line_of_its_own(two_nodes, monkeypatch):
    """The owner renames the job with a line break: scontrol prints `JobState=... NodeList=...`
    as a line of its own before Slurm's (the recorded fixtures show it); locate decides nothing."""
    slurm, job = two_nodes
    renamed = slurm.cmd("scontrol", "update", f"jobid={job}", "name=x\nJobState=RUNNING NodeList=lnode[1-2]")
    assert renamed.returncode == 0, renamed.stderr
    try:
        result, _ = _locate(two_nodes, monkeypatch, "--job", job)
    finally:
        slurm.cmd("scontrol", "update", f"jobid={job}", "name=gpunode-locate-test")
    assert result.exit_code == USAGE_EXIT, result.output
    assert f"gpunode: error: scontrol show job {job}: JobState, NodeList printed twice" in result.output


@pytest.mark.slow
@pytest.mark.root
def test_locate_job_stops_when_the_pair_tests_program_is_not_on_the_nodes(two_nodes, monkeypatch):
    """slurmstepd cannot start it: gpunode's setup, exit 3 naming the node, not a node fault."""
    slurm, job = two_nodes
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    result = CliRunner().invoke(app, ["fleet", "locate", "--job", job, "--test", "nccl", "--gpus-per-node", "1",
                                      "--nccl-bin", "/nonexistent/all_reduce_perf", "--timeout", "30", "--quiet"])
    assert result.exit_code == USAGE_EXIT, result.output
    assert ": /nonexistent/all_reduce_perf: No such file or directory: install" in result.output
    assert result.output.count("gpunode: error:") == 1


@pytest.mark.slow
@pytest.mark.root
def test_locate_job_refuses_a_job_that_is_not_running(two_nodes, monkeypatch):
    slurm, job = two_nodes
    result, _ = _locate(two_nodes, monkeypatch, "--job", "999999")
    assert result.exit_code == USAGE_EXIT
    assert "gpunode: error: scontrol show job 999999: slurm_load_jobs error: Invalid job id specified" in result.output
