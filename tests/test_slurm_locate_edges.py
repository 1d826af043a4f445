"""Hostile input to `gpunode slurm drain` and `gpunode fleet locate --slurm/--job` (issue 25, with
issue 20's edges): what a job's owner can print into `scontrol show job` (a job name with a line
break or spaces), a job of another user, a node reason with a line break (recorded from the real
local Slurm of tests/test_fleet_locate_slurm.py, Slurm 22.05), reasons that pose as the watcher's
or carry invisible characters, a hung scontrol, node lists too large to expand."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from test_fleet_locate_slurm import SINFO, Answers, _slurm_reads

from gpunode.exits import UsageError
from gpunode.fleet.locate.srun import allocation
from gpunode.fleet.validate import FleetError
from gpunode.host.runner import CommandResult
from gpunode.slurm import drain as use_case
from gpunode.slurm.scontrol import Slurm, parse_show_node, settle_node

FIX = Path(__file__).parent / "fixtures" / "slurm"


def _job(name: str) -> str:
    return (FIX / name).read_text()


@pytest.mark.parametrize("fixture", ["show-job-name-with-line-break.txt", "show-job-pending-name-with-line-break.txt"])
def test_a_job_name_with_a_line_break_cannot_choose_the_nodes_or_the_state(fixture):
    """`salloc --job-name=$'x\\nJobState=RUNNING NodeList=victim[1-64]'`: scontrol prints the
    name's second line as a line of its own, before Slurm's JobState and NodeList (recorded)."""
    runner = _slurm_reads(_job(fixture))
    with pytest.raises(FleetError, match="printed twice") as err:
        allocation(runner, {}, "2")
    assert "\n" not in str(err.value)
    assert not any(c[:4] == SINFO for c in runner.calls)  # no node of it was looked at


def test_a_job_name_with_spaces_is_free_text_to_the_end_of_its_line():
    """`--job-name='x JobState=RUNNING NodeList=victim[1-64]'` on a held job: the name runs to the
    end of scontrol's first line (as printed by the real Slurm)."""
    text = _job("show-job-pending.txt").replace("JobName=", "JobName=x JobState=RUNNING NodeList=victim[1-64] ", 1)
    with pytest.raises(FleetError, match="job 2 is PENDING"):
        allocation(_slurm_reads(text), {}, "2")


def test_a_job_of_another_user_is_not_tested_in():
    """root typing a wrong job id at 3 a.m.: pair tests would run as steps inside a stranger's
    job (and --drain drain its nodes)."""
    runner = _slurm_reads(_job("show-job-running-other-user.txt"))
    with pytest.raises(FleetError, match=r"job 1 belongs to nobody\(65534\), not to uid 0"):
        allocation(runner, {}, "1", uid=0)
    assert not any(c[:4] == SINFO for c in runner.calls)
    mine = _job("show-job-running-2-nodes.txt")  # UserId=root(0)
    assert allocation(_slurm_reads(mine), {}, "1", uid=0).nodes == ["lnode1", "lnode2"]
    with pytest.raises(FleetError, match=r"belongs to root\(0\), not to uid 1000"):
        allocation(_slurm_reads(mine), {}, "1", uid=1000)


def test_a_hung_scontrol_or_sinfo_is_said_as_such():
    hung = CommandResult(["scontrol"], -9, duration_s=10.0, timed_out=True)
    with pytest.raises(FleetError, match="scontrol show job 5: no answer within 10.0s"):
        allocation(Answers([(lambda a: True, hung)]), {}, "5")
    running = Answers([(lambda a: a[0] == "scontrol", CommandResult([], 0, _job("show-job-running-2-nodes.txt"))),
                       (lambda a: True, hung)])
    with pytest.raises(FleetError, match="sinfo: no answer within 10.0s"):
        allocation(running, {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "lnode[1-2]"}, None, uid=0)


def test_a_node_list_too_large_is_refused_before_it_is_expanded_or_sent_to_sinfo():
    runner = _slurm_reads()
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "a[0-99999],b[0-99999]"}
    with pytest.raises(FleetError, match="more than 65536 nodes"):
        allocation(runner, env, None)
    assert runner.calls == []
    with pytest.raises(FleetError, match="range too large"):
        allocation(runner, {**env, "SLURM_JOB_NODELIST": "node[0-99999999]"}, None)
    runner = _slurm_reads(_job("show-job-running-2-nodes.txt").replace("NodeList=lnode[1-2]", "NodeList=a[1-2],b[01-02],c"))
    ok = allocation(runner, {**env, "SLURM_JOB_NODELIST": "a[1-2],b[01-02],c"}, None, uid=0)
    assert ok.nodes == ["a1", "a2", "b01", "b02", "c"]


def test_a_reason_whose_second_line_looks_like_ours_stays_someone_elses():
    """`scontrol update reason=$'ops: cable\\nReason=gpunode: ...'` (recorded): Slurm prints the
    second line under the first; it must not make the reason gpunode's."""
    node = parse_show_node((FIX / "show-node-reason-line-break.txt").read_text())
    assert node.reason == "ops: cable" and not node.reason_is_ours
    slurm = Slurm(Answers([]))  # any scontrol call would be refused (not expected)
    assert settle_node(slurm, node, "gpunode: drain: fleet locate tcp: node fault").action == "left-foreign"
    assert settle_node(slurm, node, None).action == "left-foreign"  # the gate never resumes it


@pytest.mark.parametrize("reason, message", [
    ("gpunode: watch: xid 79", "the watcher's"),
    ("gpunode: bad\u202e node", "printable"),
    ("gpunode: bad\u200b node", "printable"),
])
def test_a_reason_that_poses_as_the_watchers_or_hides_characters_is_refused(reason, message):
    with pytest.raises(UsageError, match=message):
        use_case.check(["n1"], reason)


def test_drain_with_no_node_fault_touches_nothing_and_the_document_keeps_its_schema():
    from jsonschema import Draft202012Validator

    from gpunode.fleet.locate.report import locate_document
    from gpunode.fleet.locate.session import drain_faults
    from gpunode.fleet.locate.simulate import Fleet

    schema = json.loads((Path(__file__).parent.parent / "docs" / "schemas" / "fleet.locate.schema.json").read_text())
    for bad in ((), (3,)):
        outcome, _ = Fleet(8, bad_nodes=bad, figures=True).run(random.Random(4))
        doc = locate_document(outcome, [f"gpu-{i:02d}" for i in range(8)], test="tcp", unit="Gb/s", seed=4,
                              repeat=1, ratio=0.8, expectation=None, expectation_source="fleet median")
        doc["slurm_job"] = "7"
        runner = Answers([(lambda a: a[:3] == ["scontrol", "show", "node"],
                           CommandResult([], 1, "Node gpu-03 not found\n"))])
        before = doc["exit_code"]
        drain_faults(doc, Slurm(runner))
        errors = list(Draft202012Validator(schema).iter_errors(json.loads(json.dumps(doc))))
        assert not errors, errors[:3]
        if not bad:
            assert doc["drained"] == [] and runner.calls == [] and doc["exit_code"] == before == 0
        else:  # scontrol failed: said per node, and the FAIL stays the exit code
            assert doc["drained"][0]["action"] == "error" and doc["exit_code"] == 2


def _drained_doc(detail: str) -> dict:
    from gpunode.fleet.locate.report import locate_document
    from gpunode.fleet.locate.simulate import Fleet

    outcome, _ = Fleet(8, bad_nodes=(3,), figures=True).run(random.Random(4))
    doc = locate_document(outcome, [f"gpu-{i:02d}" for i in range(8)], test="tcp", unit="Gb/s", seed=4, repeat=1,
                          ratio=0.8, expectation=None, expectation_source="fleet median")
    doc["drained"] = [{"node": "gpu-03", "action": "left-foreign", "detail": detail}]
    return doc


@pytest.mark.parametrize("reason", ["ops: see [/wiki] for the cable", "ops [link=file:///etc/shadow]click[/link]"])
def test_a_foreign_reason_is_printed_as_it_is_on_a_terminal_and_through_a_pipe(reason):
    """--drain's report quotes the reason it left; on rich's console brackets are markup: `[/wiki]`
    raised MarkupError after the drains (a traceback, exit 1), `[link=...]` made a hyperlink."""
    import io

    from rich.cells import cell_len
    from rich.console import Console

    from gpunode.fleet.locate.report import render_table

    detail = f"node already has a reason not set by gpunode: {reason!r}, left as it is by gpunode slurm drain"
    doc = _drained_doc(detail)
    term, pipe = io.StringIO(), io.StringIO()
    render_table(doc, Console(file=term, width=80, force_terminal=True, no_color=True, soft_wrap=False))
    render_table(doc, Console(file=pipe, width=80, force_terminal=False, soft_wrap=True))
    assert f"drain gpu-03: left-foreign: {detail}\n" in pipe.getvalue()  # one line, as it is
    tail = term.getvalue().split("drain gpu-03: ", 1)[1]
    assert "\x1b" not in tail and " ".join(tail.split()) == f"left-foreign: {detail}"
    assert all(cell_len(line) <= 80 for line in tail.splitlines())


def test_a_job_that_ends_between_rounds_voids_the_run_and_names_no_node():
    """The job ends (time limit, scancel) after round 1: every anchor step fails to start (srun:
    Invalid job id), which read as two failed tests of the healthy partner: a node fault, and
    --drain drained a healthy node. Now the job is read after each round; gone: no verdict."""
    from test_fleet_locate_slurm import ALLOC, _iperf

    from gpunode.fleet.locate import pairtests
    from gpunode.fleet.locate.driver import run_locate
    from gpunode.fleet.locate.srun import SrunRounds

    running = _job("show-job-running-2-nodes.txt")
    gone = CommandResult([], 1, "", "srun: error: Unable to confirm allocation for job 7: Invalid job id specified\n")
    for seed in range(3):
        steps, ended = _iperf(bad="gpu-03"), []

        def answer(argv, steps=steps, ended=ended):
            if argv[:3] == ["scontrol", "show", "job"]:
                ended.append(True)  # read after round 1: still running; the job ends just after
                return CommandResult(argv, 0, running) if len(ended) == 1 else \
                    CommandResult(argv, 1, "", "slurm_load_jobs error: Invalid job id specified\n")
            return gone if ended else steps.run(argv)

        runner = Answers([(lambda a: True, answer)])
        rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(), ALLOC, runner, sleep=lambda s: None)
        with pytest.raises(FleetError, match="job 7 ended during the run, in round 2") as err:
            run_locate(rounds, 1, seed, 0.5, None)
        assert "Invalid job id specified" in str(err.value) and "no verdict" in str(err.value)
        assert ["scontrol", "show", "job", "7"] in runner.calls


def test_a_job_gone_during_round_0_is_said_there():
    from test_fleet_locate_slurm import ALLOC

    from gpunode.fleet.locate import pairtests
    from gpunode.fleet.locate.srun import SrunRounds

    gone = CommandResult([], 1, "", "srun: error: Unable to confirm allocation for job 7: Invalid job id specified\n")
    runner = Answers([(lambda a: a[:3] == ["scontrol", "show", "job"], CommandResult([], 0, _job("show-job-comment.txt"))),
                      (lambda a: a[0] == "srun", gone)])
    cfg = pairtests.Config(launcher="srun", gpus_per_node=8, nccl_bin="/opt/nccl-tests/all_reduce_perf")
    rounds = SrunRounds(pairtests.PLUGINS["nccl"], cfg, ALLOC, runner)
    with pytest.raises(FleetError, match=r"job 7 ended during the run, in round 0 \(COMPLETED\)"):
        rounds.run_all()


def test_the_node_to_drain_is_slurms_name_as_is_never_a_cut_of_it():
    """Inventory hosts are cut to their short name (gpu-03.cluster -> gpu-03, as Slurm names
    nodes), but an IP address was cut to its first octet (10.0.0.3 -> node `10`), and under
    --slurm the names are Slurm's own: `gpu1.rack2` cut to `gpu1` drained another node."""
    from gpunode.fleet.locate.report import drain_targets
    from gpunode.fleet.locate.session import drain_faults

    def fault(name):
        return {"kind": "node", "status": "FAIL", "nodes": [name], "failed": 2, "tests": 2}

    assert drain_targets([fault("gpu-03.cluster.example")], "tcp")[0][0] == "gpu-03"
    assert drain_targets([fault("10.0.0.3")], "tcp")[0][0] == "10.0.0.3"
    assert drain_targets([fault("gpu1.rack2")], "tcp", exact=True)[0][0] == "gpu1.rack2"
    from gpunode.fleet.locate.report import locate_document
    from gpunode.fleet.locate.simulate import Fleet

    outcome, _ = Fleet(8, bad_nodes=(3,), figures=True).run(random.Random(4))
    names = [f"gpu{i}.rack2" for i in range(8)]
    doc = locate_document(outcome, names, test="tcp", unit="Gb/s", seed=4, repeat=1, ratio=0.8, expectation=None,
                          expectation_source="fleet median", slurm_job="7")
    assert doc["drain"] == ["gpunode slurm drain gpu3.rack2 --reason 'gpunode: drain: fleet locate tcp: node fault, "
                            "failed 2 of 2 tests'"] and doc["slurm_job"] == "7"
    runner = Answers([(lambda a: a[:3] == ["scontrol", "show", "node"], CommandResult([], 1, "Node x not found\n"))])
    drain_faults(doc, Slurm(runner))
    assert runner.calls == [["scontrol", "show", "node", "gpu3.rack2"]]


def test_slurm_tests_only_the_nodes_of_the_running_job_named_in_the_environment():
    """--slurm trusted SLURM_JOB_NODELIST as it was: in a shell whose variables are not the job's
    (hand-set, or left from another allocation) steps on nodes outside the job fail, which read
    as node faults (--drain drained them). The job is read like --job's and its nodes must match."""
    running = _job("show-job-running-2-nodes.txt")  # JobId=1, root's, NodeList=lnode[1-2]
    env = {"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "lnode[1-3]"}
    with pytest.raises(FleetError, match=r"SLURM_JOB_NODELIST 'lnode\[1-3\]' is not job 1's nodes \(lnode\[1-2\]\)"):
        allocation(_slurm_reads(running), env, None, uid=0)
    with pytest.raises(FleetError, match="job 1 is COMPLETED"):
        allocation(_slurm_reads(running.replace("JobState=RUNNING", "JobState=COMPLETED")), env, None, uid=0)
    with pytest.raises(FleetError, match=r"belongs to root\(0\), not to uid 1000"):
        allocation(_slurm_reads(running), {**env, "SLURM_JOB_NODELIST": "lnode[1-2]"}, None, uid=1000)
    same = allocation(_slurm_reads(running), {**env, "SLURM_JOB_NODELIST": "lnode2,lnode1"}, None, uid=0)
    assert same.nodes == ["lnode2", "lnode1"]


def test_ctrl_c_stops_the_running_pair_tests_after_their_step():
    """Ctrl-C while the servers do not listen (srun slow or hung): each running pair test went on
    probing, 30 tries of up to 10 s, and waited up to --timeout + 10 s for its server step: with a
    hung srun the interrupt took effect after more than 120 s (measured; now 7 s). Now no step
    starts after it; the queued tests were already cancelled by the pool."""
    import os
    import signal

    from gpunode.fleet.locate import pairtests
    from gpunode.fleet.locate.algorithm import Round
    from gpunode.fleet.locate.srun import Allocation, SrunRounds

    names = [f"n{i}" for i in range(8)]
    alloc = Allocation("7", names, {n: f"10.0.0.{i + 1}" for i, n in enumerate(names)})
    probes = []

    def answer(argv):
        if "ss" in argv:
            probes.append(argv)
            if len(probes) == 1:
                os.kill(os.getpid(), signal.SIGINT)  # the operator's Ctrl-C, during the first probe
            elif getattr(rounds, "stop", None) is not None:
                rounds.stop.wait(5)  # a probe already running when it came
        return CommandResult(argv, 0, "")  # servers end at once; nothing listens

    rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(), alloc, Answers([(lambda a: True, answer)]),
                        forks=4, sleep=lambda s: None)
    # Python's own Ctrl-C handler: a run started with `&` or nohup inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            rounds(Round("match", [(i, i + 1) for i in range(0, 8, 2)], roles=["match"] * 4))
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(probes) <= 5, len(probes)  # one running per worker; was 30 per running test


def test_a_program_missing_on_a_node_stops_the_run_and_names_no_fault():
    """iperf3 not installed on lnode2: slurmstepd cannot start it (stderr recorded on the real
    Slurm). The server never listened or the client gave no figure, which read as failed tests:
    lnode2 a node fault (exit 2, --drain drained it) for gpunode's setup. Now exit 3 naming it."""
    from test_fleet_locate_slurm import STILL_RUNNING, _iperf

    from gpunode.fleet.locate import pairtests
    from gpunode.fleet.locate.driver import run_locate
    from gpunode.fleet.locate.srun import Allocation, SrunRounds

    names = ["lnode1", "lnode2", "lnode3", "lnode4"]
    alloc = Allocation("7", names, {n: f"10.0.0.{i + 1}" for i, n in enumerate(names)})
    missing = CommandResult([], 2, "", (FIX / "srun-execve-missing.stderr").read_text())
    steps = _iperf()

    def answer(argv):
        if "--nodelist=lnode2" in argv and "iperf3" in argv:  # its server or its client
            return missing
        return steps.run(argv)

    sides = set()
    for seed in range(6):
        runner = Answers([STILL_RUNNING, (lambda a: True, answer)])
        rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(), alloc, runner, sleep=lambda s: None)
        with pytest.raises(FleetError, match="lnode2: nosuchprog: No such file or directory: install"):
            run_locate(rounds, 1, seed, 0.5, None)
        sides |= {a[7] for a in runner.calls if "--nodelist=lnode2" in a and "iperf3" in a}
    assert sides == {"--server", "--client"}  # both roles were met


def test_a_node_fault_scontrol_cannot_name_is_its_error_and_the_report_still_comes_out():
    """-i mode: an inventory host `fd00::7` (IPv6) found faulty. --drain checked each name while
    draining: gpu-03 was drained, then UsageError (exit 3) and no report. Now every name is checked
    first; the bad one is its node's error, the others drained, the report says both (the FAIL
    stays the exit code, as for scontrol failing on a node)."""
    from gpunode.fleet.locate.report import locate_document
    from gpunode.fleet.locate.session import drain_faults
    from gpunode.fleet.locate.simulate import Fleet

    outcome, _ = Fleet(8, bad_nodes=(3, 5), figures=True).run(random.Random(4))
    names = [f"gpu-{i:02d}" for i in range(8)]
    names[5] = "fd00::7"
    doc = locate_document(outcome, names, test="tcp", unit="Gb/s", seed=4, repeat=1, ratio=0.8, expectation=None,
                          expectation_source="fleet median")
    assert [v["nodes"] for v in doc["verdicts"] if v["kind"] == "node"] == [["gpu-03"], ["fd00::7"]]
    idle = (FIX / "show-node-idle.txt").read_text().replace("NodeName=vm", "NodeName=gpu-03")
    runner = Answers([(lambda a: a[:3] == ["scontrol", "show", "node"], CommandResult([], 0, idle)),
                      (lambda a: a[:2] == ["scontrol", "update"], CommandResult([], 0, ""))])
    drain_faults(doc, Slurm(runner))
    assert [(d["node"], d["action"]) for d in doc["drained"]] == [("fd00::7", "error"), ("gpu-03", "drained")]
    assert "not drained: node 'fd00::7' is not a host name" in doc["drained"][0]["detail"]
    assert [c[:3] for c in runner.calls] == [["scontrol", "show", "node"], ["scontrol", "update", "nodename=gpu-03"]]
    assert doc["exit_code"] == 2


def test_no_ss_on_a_node_stops_the_run_and_names_no_fault():
    """`ss` (the listen probe, a step on the server's node) not installed on lnode2: slurmstepd's
    execve error read as "no server listening", a failed test, so lnode2 could be named a node
    fault and drained. It is gpunode's setup, as a missing iperf3: exit 3 naming it."""
    from test_fleet_locate_slurm import STILL_RUNNING, _iperf

    from gpunode.fleet.locate import pairtests
    from gpunode.fleet.locate.algorithm import Round
    from gpunode.fleet.locate.srun import Allocation, SrunRounds

    names = ["lnode1", "lnode2"]
    alloc = Allocation("7", names, {"lnode1": "10.0.0.1", "lnode2": "10.0.0.2"})
    stderr = (FIX / "srun-execve-missing.stderr").read_text().replace("nosuchprog", "ss")
    steps = _iperf()

    def answer(argv):
        if "--nodelist=lnode2" in argv and "ss" in argv:
            return CommandResult([], 2, "", stderr)
        return steps.run(argv)

    runner = Answers([STILL_RUNNING, (lambda a: True, answer)])
    rounds = SrunRounds(pairtests.PLUGINS["tcp"], pairtests.Config(), alloc, runner, sleep=lambda s: None)
    with pytest.raises(FleetError, match="lnode2: ss: No such file or directory: install"):
        rounds(Round("match", [(0, 1)], roles=["match"]))  # lnode2 is the server: its port is probed
    probes = [a for a in runner.calls if "ss" in a]
    assert len(probes) == 1 and "--nodelist=lnode2" in probes[0]  # no 30 tries for a program that is not there
