"""Orchestration of `gpunode bench`: which steps run, on which GPUs, into one BenchDocument.

`plan_steps` turns the options into a list of labelled steps (so the CLI can show a progress bar
with a known total); `run_steps` runs them and assembles the document. Quick mode keeps every
step short so that a one-GPU node finishes inside 60 s.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gpunode import __version__
from gpunode.bench import fio, micro, nccl, nccl_log, numa, perftest, torch_dist
from gpunode.bench.backend import Backend
from gpunode.bench.discover import find_backend
from gpunode.bench.metrics import SECTIONS, per_gpu
from gpunode.bench.results import BenchDocument, Metric, errored, skipped
from gpunode.bench.watch import watched
from gpunode.host.facts.infiniband import ib_ports
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import NVML_TIMEOUT_S
from gpunode.host.seam import Host
from gpunode.outputs import iso_time

MICRO_SECTIONS = ("gemm", "hbm", "h2d", "p2p")  # measured in-process through a GPU backend


@dataclass
class BenchOptions:
    mode: str = "quick"  # quick | full
    only: tuple[str, ...] = SECTIONS
    gpus: list[int] | None = None  # NVML indices; None = all
    backend: str = "auto"  # auto | torch | cupy
    nccl_tests_dir: str | None = None
    nccl_tests: tuple[str, ...] | None = None  # default: all_reduce (quick), all five (full)
    nccl_launcher: str | None = None  # None: one process, -g N; mpirun | srun: one process per GPU
    hosts: tuple[str, ...] = ()
    fio_target: fio.FioTarget | None = None  # checked by the caller; None: a scratch file in $TMPDIR
    fio_dir: str | None = None
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def __post_init__(self) -> None:
        if self.mode not in ("quick", "full"):
            raise ValueError(f"mode {self.mode!r}: quick or full")
        unknown = sorted(set(self.only) - set(SECTIONS))
        if unknown:
            raise ValueError(f"--only: unknown benchmark(s) {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
        for t in self.nccl_tests or ():
            if t not in nccl.TESTS:
                raise ValueError(f"nccl test {t!r} not in {', '.join(nccl.TESTS)}")

    @property
    def quick(self) -> bool:
        return self.mode == "quick"


@dataclass
class Step:
    label: str
    run: Callable[[], list[Metric]]


def gpu_summary(inv: GpuInventory) -> dict:
    return inv.summary()


def inventory(host: Host) -> GpuInventory:
    try:
        return host.gpu.inventory(timeout=NVML_TIMEOUT_S)
    except TimeoutError as exc:
        return GpuInventory(available=False, error=str(exc))


def select_gpus(inv: GpuInventory, wanted: list[int] | None) -> list[int] | None:
    """NVML indices to benchmark (None: every GPU); ValueError names an index that does not exist."""
    if wanted is None or not inv.available:
        return wanted
    have = [g.index for g in inv.gpus]
    missing = [i for i in wanted if i not in have]
    if missing:
        raise ValueError(f"--gpus: no GPU {', '.join(map(str, missing))} (this node has {len(have)}: {have})")
    return list(wanted)


def targets(host: Host, backend: Backend, inv: GpuInventory, chosen: list[int] | None) -> list[micro.Target]:
    """Backend devices named by their NVML index, matched by PCI address (CUDA may order GPUs
    differently from NVML); without NVML the backend's own ordinals are used."""
    by_bdf = {g.sysfs_bdf: g.index for g in inv.gpus if g.sysfs_bdf}
    out = []
    for dev in backend.devices():
        index = by_bdf.get((dev.bdf or "").lower()) if inv.gpus else dev.index
        if index is None or (chosen is not None and index not in chosen):
            continue
        out.append(micro.Target(index, dev, numa.gpu_locality(host.sys, dev.bdf)))
    return sorted(out, key=lambda t: t.gpu)


NO_BACKEND = "gpu.backend"  # the one metric of a run that asked for GPU figures and could take none


def _no_gpu_measured(sections, reason: str) -> list[Metric]:
    """GPU sections asked for but nothing can measure them: one ERROR, so the run is UNKNOWN
    (exit 3) even when fio or nccl-tests passed: a node is never OK having measured no GPU."""
    return [errored(NO_BACKEND, "", f"no GPU measured ({', '.join(sections)}): {reason}")]


@dataclass
class BenchRun:
    """A planned run: the steps to take, and what the document needs besides their metrics."""

    host: Host
    opts: BenchOptions
    inv: GpuInventory
    tools: dict[str, str]
    steps: list[Step]


def prepare(host: Host, opts: BenchOptions, find=find_backend) -> BenchRun:
    inv = inventory(host)
    chosen = select_gpus(inv, opts.gpus)
    tools: dict[str, str] = {}
    steps: list[Step] = []
    micro_sections = [s for s in MICRO_SECTIONS if s in opts.only]
    backend = None
    if micro_sections or "allreduce" in opts.only:
        backend, why = find(opts.backend)
        if backend is None:
            if micro_sections:
                steps.append(Step("microbenchmarks: no backend", lambda: _no_gpu_measured(
                    micro_sections, f"no GPU backend (torch or cupy) found: {why}")))
        else:
            tools.update(backend.versions())
            steps += _micro_steps(host, backend, inv, chosen, micro_sections, opts)
    if "nccl" in opts.only:
        steps += _nccl_steps(host, inv, chosen, opts, tools)
    if "allreduce" in opts.only:
        steps.append(_allreduce_step(host, backend, inv, chosen, opts))
    if "fio" in opts.only:
        steps.append(_fio_step(host, opts, tools))
    if "gdr" in opts.only:  # GPUDirect RDMA: ib_write_bw --use_cuda on each active RDMA port
        indices = chosen if chosen is not None else [g.index for g in inv.gpus]
        steps += [Step(label, call) for label, call in perftest.steps(
            host.runner, ib_ports(host), indices, opts.environ.get("PATH", ""), 3 if opts.quick else 10)]
    return BenchRun(host, opts, inv, tools, steps)


def execute(run: BenchRun, on_step: Callable[[int, Step], None] | None = None, sampler=None) -> BenchDocument:
    """Run the steps; with a started telemetry sampler, each metric carries what the GPUs did."""
    started = run.host.facts.now
    metrics: list[Metric] = []
    for i, step in enumerate(run.steps):
        if on_step:
            on_step(i, step)
        metrics += watched(step.run, sampler)
    return BenchDocument(
        gpunode_version=__version__, host=run.host.facts.hostname, time=iso_time(started), time_epoch=started,
        mode=run.opts.mode, gpus=gpu_summary(run.inv), tools=run.tools, metrics=metrics,
        topology=topology_expectations(run.host, run.inv),
    )


def topology_expectations(host: Host, inv: GpuInventory) -> list[dict]:
    """This host's expected figures (gpunode expect), kept with the result; a host whose PCI tree
    cannot be read still gets its measured figures, just nothing derived to judge them by."""
    from gpunode.host.facts.topology import build
    from gpunode.topology.expect import expectations

    gpus = inv.gpus if inv.available else []
    try:
        return [e.to_json() for e in expectations(build(host, gpus), gpus)]
    except (OSError, ValueError) as exc:
        print(f"gpunode: warning: no topology expectations: {exc}", file=sys.stderr)
        return []


def _micro_steps(host, backend, inv, chosen, sections, opts) -> list[Step]:
    plan = micro.MicroPlan.quick() if opts.quick else micro.MicroPlan.full()
    tgts = targets(host, backend, inv, chosen)
    if not tgts:
        return [Step("microbenchmarks: no GPU", lambda: _no_gpu_measured(sections, "no GPU selected or visible to the backend"))]
    specs = [m for m in per_gpu(sections) if m.wanted(plan)]  # the metric table's per-GPU entries
    steps = [Step(f"GPU{t.gpu} {m.label}", lambda t=t, m=m: [m.measure(backend, t, plan)]) for t in tgts for m in specs]
    if "gemm" in sections:
        steps.append(Step("GEMM on all GPUs at once", lambda: micro.concurrent_gemm_metrics(backend, tgts, plan)))
    if "p2p" in sections:
        if len(tgts) < 2:
            steps.append(Step("P2P", lambda: [skipped("p2p", "GB/s", "one GPU: no peer to copy to")]))
        for src in tgts:
            for dst in tgts:
                if src.gpu != dst.gpu:
                    steps.append(Step(f"P2P GPU{src.gpu}->GPU{dst.gpu}",
                                      lambda s=src, d=dst: [micro.p2p_metric(backend, s, d, plan)]))
    return steps


def nccl_config(test: str, ngpus: int, quick: bool) -> nccl.NcclConfig:
    if quick:
        return nccl.NcclConfig(test=test, ngpus=ngpus, min_bytes=8, max_bytes=256 << 20, step_factor=4,
                               iters=10, warmup=2)
    return nccl.NcclConfig(test=test, ngpus=ngpus, min_bytes=8, max_bytes=4 << 30, step_factor=2,
                           iters=20, warmup=5)


def _nccl_steps(host: Host, inv: GpuInventory, chosen: list[int] | None, opts: BenchOptions, tools: dict) -> list[Step]:
    tests = opts.nccl_tests or (("all_reduce",) if opts.quick else nccl.TESTS)
    indices = chosen if chosen is not None else [g.index for g in inv.gpus]
    fabric = nccl_log.Fabric.of(ib_ports(host), inv.gpus)  # what NCCL's transports are judged against

    def run(test: str) -> list[Metric]:
        binary = nccl.find_binary(test, [opts.nccl_tests_dir] if opts.nccl_tests_dir else [],
                                  opts.environ.get("PATH", ""))
        if binary is None:
            return [nccl.not_installed(test)]
        if not indices:
            return [skipped(f"nccl.{test}.busbw", "GB/s", inv.error or "no GPU found by NVML", test=test)]
        env = dict(opts.environ)
        uuids = [g.uuid for g in inv.gpus if g.index in indices and g.uuid]
        if chosen is not None and len(uuids) == len(indices):
            env["CUDA_VISIBLE_DEVICES"] = ",".join(uuids)  # nccl-tests' -g N takes the first N visible
        if opts.nccl_launcher:
            names = list(nccl.nccl_env(env)) + (["CUDA_VISIBLE_DEVICES"] if "CUDA_VISIBLE_DEVICES" in env else [])
            prefix = nccl.launcher_prefix(opts.nccl_launcher, opts.hosts, len(indices), names)
            cfg, nprocs = nccl_config(test, 1, opts.quick), len(indices) * max(1, len(opts.hosts))
        else:
            prefix, cfg, nprocs = [], nccl_config(test, len(indices), opts.quick), 1
        m = nccl.run_test(host.runner, binary, cfg, 300 if opts.quick else 1800, env, prefix, nprocs, fabric)
        detail = m.detail or {}
        if detail.get("nccl_tests"):
            tools["nccl-tests"] = detail["nccl_tests"]
        if detail.get("nccl"):
            tools.setdefault("nccl", detail["nccl"])
        return [m]

    return [Step(f"nccl-tests {test}", lambda test=test: run(test)) for test in tests]


def _allreduce_step(host: Host, backend, inv, chosen, opts: BenchOptions) -> Step:
    def run() -> list[Metric]:
        if backend is None or backend.name != "torch":
            return [skipped(torch_dist.NAME, "GB/s", "needs PyTorch with CUDA (pip install torch)")]
        devices = [t.device.index for t in targets(host, backend, inv, chosen)]
        sizes = [64 << 20, 256 << 20] if opts.quick else [1 << 20, 64 << 20, 1 << 30]
        return [torch_dist.run(host.runner, devices, sizes, 10 if opts.quick else 50, 3 if opts.quick else 10,
                               120 if opts.quick else 600, opts.environ, python=sys.executable,
                               fabric=nccl_log.Fabric.of(ib_ports(host), inv.gpus))]

    return Step("torch.distributed all-reduce", run)


FIO_NAMES = (("fio.seq_write", "MB/s"), ("fio.seq_read", "MB/s"), ("fio.rand_read.iops", "IOPS"),
             ("fio.rand_read.p99_us", "us"))


def _fio_step(host: Host, opts: BenchOptions, tools: dict) -> Step:
    plan = fio.FioPlan.quick() if opts.quick else fio.FioPlan.full()

    def run() -> list[Metric]:
        binary = shutil.which("fio", path=opts.environ.get("PATH", ""))
        if binary is None:
            return [skipped(n, u, fio.INSTALL_HINT) for n, u in FIO_NAMES]
        version = fio.fio_version(host.runner, binary)
        if version:
            tools["fio"] = version
        try:
            target = opts.fio_target or fio.prepare_target(host.sys, plan, opts.fio_dir)
        except fio.FioRefused as exc:
            return [errored(n, u, str(exc)) for n, u in FIO_NAMES]
        return fio.run_fio(host.runner, binary, target, plan)

    return Step("fio", run)


def run_steps(host: Host, opts: BenchOptions, on_step: Callable[[int, Step], None] | None = None,
              find=find_backend, sampler=None) -> BenchDocument:
    """Plan and run in one call (`gpunode baseline record`, `apply --prove` use this)."""
    return execute(prepare(host, opts, find), on_step, sampler)
