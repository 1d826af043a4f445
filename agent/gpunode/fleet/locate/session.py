"""The use case behind `gpunode fleet locate`, callable without typer (issue 21, thin commands):
`check` turns the request into the pair tests' Config (bad input is an exits.UsageError),
`hosts` validates the inventory, `run` takes the rounds and returns the report document."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from gpunode.exits import UsageError
from gpunode.fleet.locate.pairtests import PLUGINS, Config

TEST_NAMES = ("tcp", "ib", "nccl")


@dataclass
class LocateRequest:
    inventory: Path
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
    cfg = Config(seconds=req.seconds, port=req.port, rails=req.rails, gpus_per_node=req.gpus_per_node,
                 launcher=req.launcher, nccl_bin=req.nccl_bin)
    if req.round0 and PLUGINS[req.test].plan_all(cfg, ["a", "b"]) is None:
        raise UsageError(f"--round0: --test {req.test} has no all-nodes test (nccl has)")
    if req.round0 and req.expect is None:
        raise UsageError("--round0 needs --expect: one all-nodes figure has no fleet median to be judged by")
    return cfg


def hosts(req: LocateRequest):
    """-> (the validated inventory, the playbook directory); UsageError for a bad inventory."""
    from gpunode.fleet.locate.driver import SPEC
    from gpunode.fleet.specs import playbooks_dir
    from gpunode.fleet.validate import FleetError, validate

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
    rounds = FleetRounds(PLUGINS[req.test], cfg, inv, pdir, req.state_dir or default_state_dir(), forks=req.forks,
                         timeout=req.timeout, console=console)
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
    return locate_document(outcome, rounds.names, test=req.test, unit=PLUGINS[req.test].unit, seed=seed,
                           repeat=req.repeat, ratio=req.ratio, expectation=judge.expectation,
                           expectation_source=judge.source, details=rounds.details, runs=rounds.runs,
                           wall_s=round(time.monotonic() - started, 2), round0=first)
