"""The use case behind `gpunode diag`, callable without typer (issue 21, thin commands):
`options` checks what was asked (bad input is an exits.UsageError, said before anything runs),
`resolve_baseline` and `context` gather what one run touches on the live host, `keep` puts
the document in the node's history. The run itself is diag/run.run_diag; the command parses,
calls these, renders (and drains/resumes under --slurm, an integration of its own)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpunode.diag.run import MIN_DURATION, DiagContext, DiagOptions
from gpunode.exits import UsageError


@dataclass
class DiagRequest:
    """What `gpunode diag` was asked (its options that shape the run)."""

    level: int = 1
    duration: float | None = None
    gpus: str | None = None  # --gpus as given (0,1), checked here
    with_dcgm: bool = False
    dcgm_level: int | None = None
    config: Path | None = None


def options(req: DiagRequest) -> DiagOptions:
    """The run's options; UsageError names the first bad one."""
    try:
        opts = DiagOptions(level=req.level, duration=req.duration, gpus=gpu_indices(req.gpus), with_dcgm=req.with_dcgm)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if req.duration is not None and req.duration < MIN_DURATION[req.level]:
        raise UsageError(f"--duration must be at least {MIN_DURATION[req.level]:.0f} s at level {req.level}")
    if req.dcgm_level is not None and not req.with_dcgm:
        raise UsageError("--dcgm-level needs --with-dcgm")
    if req.dcgm_level is not None and req.dcgm_level not in (1, 2, 3, 4):
        raise UsageError(f"--dcgm-level {req.dcgm_level}: 1 to 4")
    if req.config is not None and not req.config.is_file():
        raise UsageError(f"--config {req.config}: not a file")
    return opts


def gpu_indices(text: str | None) -> list[int] | None:
    """--gpus 0,1 -> [0, 1]; UsageError for a word that is not an index."""
    if text is None:
        return None
    out = []
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        if not item.isdigit():
            raise UsageError(f"--gpus: {item!r} is not a GPU index")
        out.append(int(item))
    return out or None


def resolve_baseline(baseline: str | None, baselines_dir: Path | None):
    """A bad --baseline/--baselines is bad input (a BaselineError, an InputError): said before the run."""
    from gpunode.baselines.compare import catalogue_for

    catalogue = catalogue_for(baselines_dir)
    return catalogue.resolve(baseline) if baseline is not None else None


def context(opts: DiagOptions, req: DiagRequest, explicit, baselines_dir: Path | None,
            progress: Callable[[str, float | None], None], gate_result: Callable[[str | None], object]):
    """-> (DiagContext, baseline selection or None, a note when no floors are judged, this host's
    topology expectations when no baseline fits). Reads the live host. gate_result(config): the
    gate's checks as one result (diag/gatecheck.py, a floor above: handed in by the command)."""
    from gpunode.bench.run import inventory, select_gpus, targets
    from gpunode.diag import dcgm
    from gpunode.diag.compare import floors_for
    from gpunode.diag.discover import find_backend
    from gpunode.host.gpu.telemetry import TelemetrySampler
    from gpunode.host.seam import live_host

    host = live_host()
    inv = inventory(host)
    try:
        chosen = select_gpus(inv, opts.gpus)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    selection, note = _selection(explicit, baselines_dir, inv)
    backend, why = find_backend()
    devices, tools = {}, {}
    if backend is not None:
        tools.update(backend.versions())
        devices = {t.gpu: t.device for t in targets(host, backend, inv, chosen)}
    config_path = str(req.config) if req.config else None
    dcgm_level = req.dcgm_level or min(req.level, 3)
    ctx = DiagContext(
        opts=opts, hostname=host.facts.hostname, now_epoch=host.facts.now, gpus_meta=inv.summary(), devices=devices,
        names={g.index: g.name or "?" for g in inv.gpus}, backend=backend, backend_why=why,
        sampler=TelemetrySampler.live(gpus=sorted(devices) if devices else chosen),
        floors=floors_for(selection), gate=lambda: gate_result(config_path),
        dcgm=(lambda: dcgm.run(host.runner, dcgm_level, chosen)) if opts.with_dcgm else None,
        progress=progress, tools=tools,
        app_clocks={g.index: g.sm_app_clock_mhz for g in inv.gpus if g.sm_app_clock_mhz},  # the clocks phase's target
    )
    if selection is not None:
        ctx.tools["baseline"] = selection.baseline.name
    # no baseline fits: --compare judges against what this host's links should give (gpunode expect)
    topology = [] if selection is not None else _topology(host, inv)
    return ctx, selection, note, topology


def _selection(explicit, baselines_dir: Path | None, inv):
    if explicit is not None:
        return explicit, None
    from gpunode.baselines.compare import catalogue_for
    from gpunode.baselines.schema import BaselineError

    try:
        return catalogue_for(baselines_dir).select(inv.summary()), None
    except BaselineError as exc:
        return None, f"no per-SKU floors (clocks, power) judged: {exc}"


def _topology(host, inv) -> list[dict]:
    from gpunode.bench.run import topology_expectations

    return topology_expectations(host, inv)


def keep(data: dict, state_dir: str | None) -> str | None:
    """The run in the node's history; a warning line when it could not be kept."""
    from gpunode.history import record

    return record("diag", data, state_dir)
