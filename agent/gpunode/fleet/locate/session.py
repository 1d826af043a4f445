"""The use case behind `gpunode fleet locate`, callable without typer (issue 21, thin commands):
`check` turns the request into the pair tests' Config (bad input is an exits.UsageError),
`hosts` validates the inventory (or finds the Slurm allocation's nodes, --slurm / --job), `run`
takes the rounds and returns the report document (and drains the node faults, --drain)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from gpunode.exits import UsageError
from gpunode.fleet.locate.pairtests import PLUGINS, Config

TEST_NAMES = ("tcp", "ib", "nccl")


@dataclass
class LocateRequest:
    inventory: Path | None
    limit: str | None = None
    test: str = "tcp"
    repeat: int = 1
    seed: int | None = None
    ratio: float = 0.8
    expect: float | None = None
    seconds: int = 2
    port: int = 5201
    rails: tuple[str, ...] = ()
    gpus_per_node: int = 8
    launcher: str = "mpirun"
    nccl_bin: str = "all_reduce_perf"
    round0: bool = False
    timeout: int = 120
    forks: int = 50
    playbooks: Path | None = None
    state_dir: Path | None = None
    slurm: bool = False  # the nodes of this Slurm allocation, tested with srun
    job: str | None = None  # ... of this running job (from beside it)
    drain: bool = False  # drain the node faults (gpunode slurm drain), never without asking


def check(req: LocateRequest) -> Config:
    """The pair tests' configuration; UsageError names the first bad option."""
    if req.test not in TEST_NAMES:
        raise UsageError(f"--test {req.test!r}: give tcp, ib or nccl")
    if req.launcher not in ("mpirun", "srun"):
        raise UsageError(f"--launcher {req.launcher!r}: give mpirun or srun")
    if not 0 < req.ratio < 1:
        raise UsageError(f"--ratio {req.ratio}: give a fraction between 0 and 1 (0.8 = fail below 80 % of the expectation)")
    if req.expect is not None and not req.expect > 0:
        raise UsageError(f"--expect {req.expect}: give a positive figure")
    _one_source(req)
    launcher = "srun" if req.slurm or req.job else req.launcher  # steps of the allocation: no mpirun over ssh
    cfg = Config(seconds=req.seconds, port=req.port, rails=req.rails, gpus_per_node=req.gpus_per_node,
                 launcher=launcher, nccl_bin=req.nccl_bin)
    if req.round0 and PLUGINS[req.test].plan_all(cfg, ["a", "b"]) is None:
        raise UsageError(f"--round0: --test {req.test} has no all-nodes test (nccl has)")
    if req.round0 and req.expect is None:
        raise UsageError("--round0 needs --expect: one all-nodes figure has no fleet median to be judged by")
    return cfg


def _one_source(req: LocateRequest) -> None:
    """-i INVENTORY and its options, or --slurm/--job: never a mix (an option silently ignored)."""
    if not (req.slurm or req.job):
        return
    if req.inventory is not None:
        raise UsageError("give -i INVENTORY or --slurm/--job, not both")
    given = [o for o, value in (("--limit", req.limit), ("--playbooks", req.playbooks), ("--state-dir", req.state_dir))
             if value is not None]
    if given:  # the allocation is the selection, and no playbook runs
        raise UsageError(f"{', '.join(given)}: only with -i INVENTORY, not with --slurm/--job")


def hosts(req: LocateRequest):
    """-> (the validated inventory, the playbook directory), or (the Slurm allocation, None);
    UsageError for a bad inventory or no allocation to test."""
    from gpunode.fleet.locate.driver import SPEC
    from gpunode.fleet.specs import playbooks_dir
    from gpunode.fleet.validate import FleetError, validate

    if req.slurm or req.job:
        from gpunode.fleet.locate.srun import allocation
        from gpunode.host.runner import Runner

        try:
            return allocation(Runner(), os.environ, req.job), None
        except FleetError as exc:
            raise UsageError(str(exc)) from None
    if req.inventory is None:
        raise UsageError("give -i INVENTORY, or --slurm inside a Slurm allocation (--job JOBID beside one)")
    pdir = playbooks_dir(req.playbooks)
    try:
        inv = validate(SPEC, req.inventory, req.limit, {}, pdir)
    except FleetError as exc:
        raise UsageError(str(exc)) from None
    if len(inv.hosts) < 2:
        raise UsageError(f"{req.inventory}: locate needs at least 2 hosts, the selection has {len(inv.hosts)}")
    return inv, pdir


def run(req: LocateRequest, cfg: Config, inv, pdir: Path, console=None) -> dict:
    """Round 0 (--round0), then random pairs and anchors; -> the report (schema gpunode.fleet.locate/1)."""
    from gpunode.fleet.locate.driver import FleetRounds, healthy_at_scale, round0_result, run_locate
    from gpunode.fleet.locate.report import locate_document
    from gpunode.fleet.runner import default_state_dir
    from gpunode.fleet.validate import FleetError

    seed = req.seed
    if seed is None:  # said in the report: the same seed gives the same pairs again
        import secrets

        seed = secrets.randbelow(1 << 31)
    if pdir is None:  # --slurm / --job: inv is the allocation
        from gpunode.fleet.locate.srun import SrunRounds
        from gpunode.host.runner import Runner

        rounds = SrunRounds(PLUGINS[req.test], cfg, inv, Runner(), timeout=req.timeout, forks=req.forks, console=console)
    else:
        rounds = FleetRounds(PLUGINS[req.test], cfg, inv, pdir, req.state_dir or default_state_dir(),
                             forks=req.forks, timeout=req.timeout, console=console)
    started = time.monotonic()
    first: dict | None = None
    try:
        if req.round0:
            first = round0_result(rounds.run_all(), req.ratio, req.expect)
        if first and first["passed"]:
            outcome, judge = healthy_at_scale(len(rounds.names), req.repeat, req.expect)
        else:
            outcome, judge = run_locate(rounds, req.repeat, seed, req.ratio, req.expect)
    except FleetError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot use state dir {req.state_dir}: {exc.strerror or exc}") from None
    doc = locate_document(outcome, rounds.names, test=req.test, unit=PLUGINS[req.test].unit, seed=seed,
                          repeat=req.repeat, ratio=req.ratio, expectation=judge.expectation,
                          expectation_source=judge.source, details=rounds.details, runs=rounds.runs,
                          wall_s=round(time.monotonic() - started, 2), round0=first,
                          slurm_job=inv.job if pdir is None else None)
    if req.drain:
        drain_faults(doc)
    return doc


def drain_faults(doc: dict, slurm=None) -> None:
    """--drain: each node fault through `gpunode slurm drain`'s use case (a reason someone else set
    is left); what was done goes into the report (`drained`) and its exit code. A node name
    scontrol cannot take (an IPv6 inventory host) is that node's error, found before any node is
    drained: the others are still drained and the report still comes out."""
    from gpunode.exits import worst_exit
    from gpunode.fleet.locate.report import drain_targets
    from gpunode.host.runner import Runner
    from gpunode.slurm import drain as slurm_drain
    from gpunode.slurm.scontrol import Slurm

    slurm = slurm or Slurm(Runner())
    done, ready = [], []
    for node, reason in drain_targets(doc["verdicts"], doc["test"], exact=doc.get("slurm_job") is not None):
        try:  # every target checked before the first drain: a name scontrol cannot take is this node's error
            ready.append((node, slurm_drain.check([node], reason)))
        except UsageError as exc:
            done.append(slurm_drain.Drained(node, "error", f"not drained: {exc}"))
    for node, reason in ready:
        done += slurm_drain.drain(slurm, [node], reason, by="fleet locate")
    doc["drained"] = [{"node": d.node, "action": d.action, "detail": d.detail} for d in done]
    doc["exit_code"] = worst_exit(doc["exit_code"], slurm_drain.exit_code(done))
