"""`gpunode fleet locate --slurm`: the nodes of a Slurm allocation (this one: SLURM_JOB_ID and
SLURM_JOB_NODELIST; or --job JOBID: `scontrol show job`), each round's pair tests run as job
steps with srun from where locate runs, not through Ansible:

    tcp, ib  B's server: srun --jobid=J --nodes=1 --ntasks=1 --nodelist=B --overlap ARGV, in the
             background; once B's port listens (`ss` in a step on B, as playbooks/locate.yml
             asks it), A's client: the same on A, its output parsed. Two one-node steps, not one
             two-node step: iperf3 and ib_write_bw take their role from their argv, and the
             server must listen before the client starts.
    nccl     the plug-in's own two-node step (srun --nodes 2 --ntasks-per-node G --nodelist A,B
             ..., launcher srun), with --jobid=J --overlap.

The partner is reached at its NodeAddr (sinfo %o: the address Slurm itself uses). Every argv goes
through the Runner; every name and address is checked as a host name or IP address first."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from gpunode.fleet.locate.algorithm import Round
from gpunode.fleet.locate.driver import ADDRESS
from gpunode.fleet.locate.pairtests import Config, Figure, PairTest, Step
from gpunode.fleet.validate import FleetError
from gpunode.host.runner import CommandResult, Runner
from gpunode.slurm.scontrol import _why as _said  # one way to say why scontrol/sinfo/srun gave nothing
from gpunode.slurm.scontrol import is_node_name

JOB_ID = re.compile(r"[1-9][0-9]{0,9}")
SLURM_TIMEOUT_S = 10.0
MAX_NODES = 65536  # Slurm's own bound on a host range; a list is refused before it grows past it
LISTEN_TRIES = 30  # as playbooks/locate.yml: 30 tries, 1 s apart
# slurmstepd could not start the program on a node (not installed there, not executable):
# `slurmstepd-lnode2: error: execve(): iperf3: No such file or directory`. gpunode's setup, not
# the node's health: the run stops (exit 3) rather than count it a failed test (a node fault).
_EXECVE = re.compile(r"slurmstepd(?:-(?P<node>[^:\s]+))?: error: execve\(\): (?P<what>[^\n]+)")


@dataclass(frozen=True)
class Allocation:
    job: str
    nodes: list[str]
    addresses: dict[str, str]  # node -> NodeAddr


def allocation(runner: Runner, env: Mapping[str, str], job: str | None, uid: int | None = None) -> Allocation:
    """The allocation's nodes and their addresses; FleetError says why there are none to test.
    Either way a RUNNING job of the calling user (uid, default this process's), read from Slurm."""
    uid = os.getuid() if uid is None else uid
    from_env = job is None
    if from_env:
        job, listed = env.get("SLURM_JOB_ID", ""), env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST", "")
        if not job or not listed:
            raise FleetError("--slurm: not inside a Slurm allocation (no SLURM_JOB_ID / SLURM_JOB_NODELIST); "
                             "give --job JOBID, or run it in salloc")
    else:
        listed = _job_nodelist(runner, job, uid)
    if not JOB_ID.fullmatch(job):
        raise FleetError(f"--job {job[:40]!r}: give a job id (a number)")
    nodes = _expand(listed)
    if len(nodes) < 2:
        raise FleetError(f"job {job} has {len(nodes)} node(s): locate needs at least 2")
    if from_env:  # variables set by hand or left from another allocation: steps off the job fail as faults
        theirs = _job_nodelist(runner, job, uid)
        if set(_expand(theirs)) != set(nodes):
            raise FleetError(f"SLURM_JOB_NODELIST {listed[:60]!r} is not job {job}'s nodes ({theirs[:60]}): "
                             "run it in that job's own shell, or give --job")
    return Allocation(job, nodes, _addresses(runner, listed, nodes))


def _job_nodelist(runner: Runner, job: str, uid: int) -> str:
    """NodeList= of a RUNNING job of `uid`, from `scontrol show job`: never a stranger's job, where
    the pair tests would run as its steps (and --drain drain its nodes) after a mistyped id."""
    if not JOB_ID.fullmatch(job):
        raise FleetError(f"--job {job[:40]!r}: give a job id (a number)")
    fields = _show_job(runner, job)
    if fields.get("JobState") != "RUNNING":
        raise FleetError(f"job {job} is {fields.get('JobState', 'not shown')}: its nodes are not allocated now")
    owner = fields.get("UserId", "not shown")
    if not owner.endswith(f"({uid})"):
        raise FleetError(f"job {job} belongs to {owner[:40]}, not to uid {uid}: its steps are not yours to run "
                         "(run locate as its owner, or in your own allocation)")
    return fields.get("NodeList", "")


def _show_job(runner: Runner, job: str) -> dict[str, str]:
    """The fields of `scontrol show job`; FleetError when it cannot be read or trusted."""
    result = runner.run(["scontrol", "show", "job", job], timeout=SLURM_TIMEOUT_S)
    if not result.ok:
        raise FleetError(f"scontrol show job {job}: {_said(result)}")
    fields, twice = job_fields(result.stdout), _repeated(result.stdout)
    if twice:
        raise FleetError(f"scontrol show job {job}: {', '.join(twice)} printed twice (a job name or comment with a "
                         "line break, or several jobs): not deciding on it")
    return fields


# Lines a job's owner writes (or that run to the end of the line): never read as fields, so a
# comment like `NodeList=other[1-64]` cannot choose the nodes that are tested (and drained).
_FREE_TEXT = ("Comment=", "Command=", "WorkDir=", "StdErr=", "StdIn=", "StdOut=", "Reason=", "AdminComment=")
# A line break in those (or in the job name) prints a line of its own that looks like Slurm's, but
# cannot hide Slurm's own line: a field locate decides on seen twice is refused.
_DECIDES = ("JobId", "JobState", "NodeList", "UserId")


def _job_tokens(text: str):
    """(key, value) of `scontrol show job ID`, free text left out: the lines above, and the job
    name, which runs to the end of scontrol's first line (`JobId=1 JobName=a b=c`)."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith(_FREE_TEXT):
            continue
        for token in stripped.split():
            key, sep, value = token.partition("=")
            if key == "JobName":
                break
            if sep:
                yield key, value


def job_fields(text: str) -> dict[str, str]:
    """`scontrol show job ID` -> its key=value fields (the first of each key)."""
    fields: dict[str, str] = {}
    for key, value in _job_tokens(text):
        fields.setdefault(key, value)
    return fields


def _repeated(text: str) -> list[str]:
    keys = [key for key, _ in _job_tokens(text) if key in _DECIDES]
    return [key for key in _DECIDES if keys.count(key) > 1]


def _expand(listed: str) -> list[str]:
    from gpunode.host.facts.slurm_conf import expand_names  # python-hostlist: Slurm's bracket syntax

    nodes: list[str] = []
    try:  # part by part (python-hostlist bounds each range, not their sum): memory stays bounded
        for part in re.split(r",(?![^\[\]]*\])", listed) if listed.strip() else []:
            nodes += expand_names(part)
            if len(nodes) > MAX_NODES:
                raise ValueError(f"more than {MAX_NODES} nodes")
    except ValueError as exc:
        raise FleetError(f"node list {listed[:80]!r}: {exc}") from None
    nodes = list(dict.fromkeys(nodes))  # a name listed twice is one node
    for node in nodes:  # a name becomes srun's --nodelist and, for nccl, part of one
        if not is_node_name(node):
            raise FleetError(f"node {node[:60]!r} is not a host name a pair test can be given")
    return nodes


def _addresses(runner: Runner, listed: str, nodes: list[str]) -> dict[str, str]:
    """NodeAddr per node (`sinfo -h -N -n LIST -o '%N|%o'`); a node sinfo does not show: its name."""
    result = runner.run(["sinfo", "-h", "-N", "-n", listed, "-o", "%N|%o"], timeout=SLURM_TIMEOUT_S)
    if not result.ok:
        raise FleetError(f"sinfo: {_said(result)}")
    out = {node: node for node in nodes}
    for line in result.stdout.splitlines():
        name, _, addr = line.strip().partition("|")
        if name in out and addr:
            if not ADDRESS.fullmatch(addr):
                raise FleetError(f"{name}: NodeAddr {addr[:60]!r} is not a host name or IP address")
            out[name] = addr
    return out


@dataclass
class SrunRounds:
    """The `run` callback of algorithm.locate for the nodes of a Slurm allocation."""

    plugin: PairTest
    cfg: Config
    alloc: Allocation
    runner: Runner
    timeout: int = 120
    forks: int = 50
    console: Any = None
    sleep: Callable[[float], None] = time.sleep
    names: list[str] = field(default_factory=list)
    details: list[list[Figure]] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)  # Ctrl-C: no step starts after it

    def __post_init__(self) -> None:
        self.names = list(self.alloc.nodes)

    def step(self, host: str | None, argv: tuple[str, ...] | list[str]) -> list[str]:
        """argv as a step of the job: pinned to `host`, or (an srun already) given the job."""
        job = [f"--jobid={self.alloc.job}", "--overlap"]
        if argv[0] == "srun":
            return ["srun", *job, *argv[1:]]
        return ["srun", *job, "--nodes=1", "--ntasks=1", f"--nodelist={host}", *argv]

    def run_all(self) -> Figure | None:
        """Round 0: the plug-in's all-nodes test (nccl), one step over every node."""
        step = self.plugin.plan_all(self.cfg, self.names)
        if step is None:
            return None
        started = time.monotonic()
        fig = self._clients(None, step)
        self._still_running("round 0")
        self._note("all", 1, started)
        return fig

    def __call__(self, rnd: Round) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, min(self.forks, len(rnd.pairs)))) as pool:
            try:
                figures = list(pool.map(self._pair, rnd.pairs))
            except BaseException:  # Ctrl-C, a program missing: map cancels the queued tests; the running ones end after their step
                self.stop.set()
                raise
        self._still_running(f"round {len(self.runs) + 1}")
        self.details.append(figures)
        rnd.figures = [f.value for f in figures]
        seconds = self._note(rnd.phase, len(rnd.pairs), started)
        if self.console is not None:
            bad = sum(1 for f in figures if f.value is None)
            self.console.print(f"round {len(self.runs)} ({rnd.phase}): {len(rnd.pairs)} tests in {seconds:.1f}s, "
                               f"{bad} without a figure", highlight=False)

    def _still_running(self, when: str) -> None:
        """A step of a job that has ended cannot start: its test failed for gpunode, not for the
        nodes (read as failures, a healthy partner was named a node fault and drained)."""
        try:
            state = _show_job(self.runner, self.alloc.job).get("JobState", "not shown")
        except FleetError as exc:
            state = str(exc)
        if state != "RUNNING":
            raise FleetError(f"job {self.alloc.job} ended during the run, in {when} ({state}): "
                             "its tests are void, no verdict; run locate again in a running job")

    def _note(self, phase: str, tests: int, started: float) -> float:
        seconds = round(time.monotonic() - started, 2)
        self.runs.append({"round": len(self.runs) + 1, "phase": phase, "tests": tests, "job": self.alloc.job,
                          "seconds": seconds})
        return seconds

    def _pair(self, pair: tuple[int, int]) -> Figure:
        a, b = (self.names[x] for x in pair)
        step_a, step_b = self.plugin.plan(self.cfg, self.alloc.addresses[a], self.alloc.addresses[b], a, b)
        ended: list[tuple[str, CommandResult]] = []  # the server steps that ended, with their host
        servers = [threading.Thread(target=self._server, args=(host, argv, ended), daemon=True)
                   for host, step in ((a, step_a), (b, step_b)) for argv in step.servers]
        for thread in servers:
            thread.start()
        try:
            fig = self._listen_then_clients(((a, step_a), (b, step_b)))
        finally:
            for thread in servers:  # a one-off server ends with its client; else its timeout ends it
                deadline = time.monotonic() + self.timeout + SLURM_TIMEOUT_S
                while thread.is_alive() and not self.stop.is_set() and time.monotonic() < deadline:
                    thread.join(0.5)
        for host, result in list(ended):
            _started(result, host)
        return fig

    def _server(self, host: str, argv: tuple[str, ...], ended: list) -> None:
        ended.append((host, self.runner.run(self.step(host, argv), timeout=self.timeout)))

    def _listen_then_clients(self, sides) -> Figure:
        for host, step in sides:
            for port in step.listens:
                if not self._listening(host, port):
                    return Figure(None, error=f"{host}: no server listening on port {port}")
        host, step = sides[0] if sides[0][1].clients else sides[1]
        return self._clients(host, step)

    def _listening(self, host: str, port: int) -> bool:
        probe = self.step(host, ["ss", "--no-header", "--listening", "--tcp", "--numeric", f"sport = :{port}"])
        for attempt in range(LISTEN_TRIES):
            if self.stop.is_set():
                return False
            if attempt:
                self.sleep(1.0)
            result = self.runner.run(probe, timeout=SLURM_TIMEOUT_S)
            _started(result, host)  # no `ss` on the node: gpunode's setup, not "no server listening" (a fault)
            if result.ok and result.stdout.strip():
                return True
        return False

    def _clients(self, host: str | None, step: Step) -> Figure:
        outputs = []
        for argv in step.clients:
            if self.stop.is_set():
                return Figure(None, error="interrupted")
            result = self.runner.run(self.step(host, argv), timeout=self.timeout)
            _started(result, host)
            if result.timed_out or result.error:
                return Figure(None, error=f"{host or 'srun'}: {_said(result)}")
            outputs.append(result.stdout)
        return self.plugin.parse(outputs, self.cfg)


def _started(result: CommandResult, host: str | None) -> None:
    """FleetError when slurmstepd could not start the step's program (the pair test's, or `ss`
    probing its server) on its node."""
    match = _EXECVE.search(result.stderr or "")
    if match:
        raise FleetError(f"{match['node'] or host or 'srun'}: {match['what'][:120]}: install it on every node of "
                         "the job (no test result: a missing program is not a node fault)")
