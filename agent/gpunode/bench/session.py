"""The use case behind `gpunode bench`, callable without typer (issue 21, thin commands):
`options` checks what was asked (bad input is an exits.UsageError, said before anything runs),
`plan` turns it into the steps for this host, `run` takes them while the GPUs are watched, and
`keep` puts the document in the node's history. The command parses, calls these, renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpunode.bench import fio
from gpunode.bench.discover import find_backend
from gpunode.bench.results import BenchDocument
from gpunode.bench.run import BenchOptions, BenchRun, execute, prepare
from gpunode.exits import UsageError
from gpunode.host.seam import Host

BACKENDS = ("auto", "torch", "cupy")
LAUNCHERS = (None, "mpirun", "srun")


@dataclass
class BenchRequest:
    """What `gpunode bench` was asked, already split at commas (the command's options)."""

    quick: bool = False
    full: bool = False
    only: tuple[str, ...] = ()  # empty: every section
    gpus: str | None = None  # --gpus as given (0,1), checked here
    backend: str = "auto"
    nccl_tests_dir: Path | None = None
    nccl_tests: tuple[str, ...] | None = None
    nccl_launcher: str | None = None
    hosts: tuple[str, ...] = ()
    fio_dir: Path | None = None
    fio_destructive: Path | None = None
    history_warn: float = 0.95
    history_runs: int = 10


def options(req: BenchRequest) -> BenchOptions:
    """The run's options; UsageError names the first bad one."""
    if req.quick and req.full:
        raise UsageError("give --quick or --full, not both")
    try:
        opts = BenchOptions(
            mode="quick" if req.quick else "full",
            only=req.only or BenchOptions().only,
            gpus=gpu_indices(req.gpus),
            backend=req.backend,
            nccl_tests_dir=str(req.nccl_tests_dir) if req.nccl_tests_dir else None,
            nccl_tests=req.nccl_tests,
            nccl_launcher=req.nccl_launcher,
            hosts=req.hosts,
            fio_dir=str(req.fio_dir) if req.fio_dir else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _check_tools(req)
    _check_fio(req, opts)
    if not 0 < req.history_warn <= 1 or req.history_runs < 1:
        raise UsageError("--history-warn must be a ratio in (0, 1] and --history-runs 1 or more")
    return opts


def _check_tools(req: BenchRequest) -> None:
    if req.backend not in BACKENDS:
        raise UsageError(f"--backend {req.backend}: choose auto, torch or cupy")
    if req.nccl_launcher not in LAUNCHERS:
        raise UsageError(f"--nccl-launcher {req.nccl_launcher}: choose mpirun or srun")
    if req.hosts and not req.nccl_launcher:
        raise UsageError("--hosts needs --nccl-launcher mpirun or srun")
    if req.nccl_tests_dir is not None and not req.nccl_tests_dir.is_dir():
        raise UsageError(f"--nccl-tests-dir {req.nccl_tests_dir}: not a directory")


def _check_fio(req: BenchRequest, opts: BenchOptions) -> None:
    if req.fio_dir is not None and req.fio_destructive is not None:
        raise UsageError("give --fio-dir or --fio-destructive, not both")
    if (req.fio_dir is not None or req.fio_destructive is not None) and "fio" not in opts.only:
        raise UsageError("--fio-dir/--fio-destructive need fio among --only")
    if req.fio_dir is not None and not req.fio_dir.is_dir():
        raise UsageError(f"--fio-dir {req.fio_dir}: not a directory")


def gpu_indices(text: str | None) -> list[int] | None:
    """--gpus 0,1 -> [0, 1] (sorted, once each); ValueError for anything but indices."""
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--gpus {text!r}: give GPU indices such as 0,1") from None
    if not values or any(v < 0 for v in values):
        raise ValueError(f"--gpus {text!r}: give GPU indices such as 0,1")
    return sorted(set(values))


def plan(host: Host, req: BenchRequest, opts: BenchOptions, find=find_backend) -> BenchRun:
    """The steps for this host; a refused --fio-destructive target or a missing GPU is a UsageError."""
    if req.fio_destructive is not None:
        fio_plan = fio.FioPlan.quick() if opts.quick else fio.FioPlan.full()
        try:
            opts.fio_target = fio.destructive_target(host.sys, str(req.fio_destructive), fio_plan)
        except fio.FioRefused as exc:
            raise UsageError(str(exc)) from None
    try:
        return prepare(host, opts, find=find)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


Progress = Callable[[BenchRun, Callable[..., BenchDocument]], BenchDocument]


def _plain(bench_run: BenchRun, take: Callable[..., BenchDocument]) -> BenchDocument:
    return take(bench_run, lambda i, step: None)


def run(bench_run: BenchRun, progress: Progress = _plain, sampler_factory=None) -> BenchDocument:
    """Take the planned steps; what the GPUs did during each goes into its metrics.
    `progress(run, take)` calls take(run, on_step) and may show the steps as they go."""
    from functools import partial

    if sampler_factory is None:
        from gpunode.bench.watch import live_sampler as sampler_factory
    sampler = sampler_factory()
    try:
        return progress(bench_run, partial(execute, sampler=sampler))
    finally:
        if sampler is not None:
            sampler.stop()


def keep(data: dict, state_dir: str | None) -> str | None:
    """The run in the node's history (first: a compare that finds no baseline keeps the
    figures); a warning line when it could not be kept."""
    from gpunode.history import record

    return record("bench", data, state_dir)


__all__ = ["BenchRequest", "gpu_indices", "keep", "options", "plan", "run"]
