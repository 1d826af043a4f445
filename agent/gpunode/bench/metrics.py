"""The metric table of `gpunode bench`: the door for a new metric (issue 21 item 4).

Every figure bench reports is one entry here: its name, unit, the --only section that runs it,
whether higher or lower is better, and one line of what it measures. A per-GPU microbenchmark
also names its step: `label` (the progress line, after "GPU<n>") and `measure(backend, target,
plan) -> Metric` (micro.py), and bench/run.py plans one step per selected GPU for each, in table
order. So a new per-GPU metric is one entry here plus its measuring function (and, for a new
kind of operation, the backends' op); docs/bench.md lists every name (tests/test_bench_metrics.py
holds both). Sections whose tools report several figures (nccl-tests, fio, perftest) keep their
steps in run.py; their figures are listed here all the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import partial

from gpunode.bench import micro
from gpunode.bench.backend import GEMM_DTYPES


@dataclass(frozen=True)
class MetricSpec:
    name: str  # as in the document; a family's pattern: nccl.*.busbw, p2p.*
    unit: str
    section: str  # the --only word that runs it
    better: str  # higher | lower (results.lower_is_better agrees: tests hold it)
    what: str  # one line: what is measured, and how it is counted
    label: str = ""  # per-GPU step's progress label; "" = not a per-GPU microbenchmark
    measure: Callable[..., object] | None = None  # (backend, target, plan) -> Metric
    wanted: Callable[[micro.MicroPlan], bool] = lambda plan: True  # does this plan measure it


def _gemm(dtype: str) -> MetricSpec:
    return MetricSpec(f"gemm.{dtype}", "TFLOP/s", "gemm", "higher", f"8192^3 {dtype} matmul, 2mnk FLOP per GEMM",
                      f"GEMM {dtype}", lambda b, t, plan: micro.gemm_metric(b, t, dtype, plan),
                      lambda plan: dtype in plan.gemm_dtypes)


def _host_copy(kind: str, what: str) -> MetricSpec:
    direction, memory = kind.split("_")
    return MetricSpec(f"{direction}.{memory}", "GB/s", "h2d", "higher", what, kind.replace("_", " "),
                      partial(_host_copy_measure, kind))


def _host_copy_measure(kind, backend, target, plan):
    return micro.host_copy_metric(backend, target, kind, plan)


METRICS: tuple[MetricSpec, ...] = (
    *(_gemm(d) for d in GEMM_DTYPES),
    MetricSpec("hbm.d2d", "GB/s", "hbm", "higher", "1 GiB device-to-device copy, bytes read + written",
               "HBM copy", micro.d2d_metric),
    MetricSpec("hbm.read", "GB/s", "hbm", "higher", "1 GiB float32 sum on the GPU, bytes read (decode reads weights)",
               "HBM read", micro.hbm_read_metric),
    _host_copy("h2d_pinned", "1 GiB pinned host buffer to the GPU, bytes counted once"),
    _host_copy("d2h_pinned", "1 GiB GPU to a pinned host buffer, bytes counted once"),
    _host_copy("h2d_pageable", "256 MiB pageable host buffer to the GPU (staged by the driver)"),
    _host_copy("d2h_pageable", "256 MiB GPU to a pageable host buffer (staged by the driver)"),
    MetricSpec("gemm.bf16.concurrent", "TFLOP/s", "gemm", "higher", "the bf16 GEMM on every selected GPU at once"),
    MetricSpec("p2p", "GB/s", "p2p", "higher", "one GPU: no peer to copy to (SKIP)"),
    MetricSpec("p2p.*", "GB/s", "p2p", "higher", "1 GiB copy GPU S -> GPU D, bytes counted once"),
    MetricSpec("nccl.*.busbw", "GB/s", "nccl", "higher", "nccl-tests busbw at the largest size, data checked"),
    MetricSpec("fio.seq_write", "MB/s", "fio", "higher", "fio 1 MiB sequential write, direct I/O"),
    MetricSpec("fio.seq_read", "MB/s", "fio", "higher", "fio 1 MiB sequential read, direct I/O"),
    MetricSpec("fio.rand_read.iops", "IOPS", "fio", "higher", "fio 4 KiB random read, QD 64"),
    MetricSpec("fio.rand_read.p99_us", "us", "fio", "lower", "fio 4 KiB random read, 99th percentile latency"),
    MetricSpec("torch.all_reduce.busbw", "GB/s", "allreduce", "higher", "all-reduce through torch.distributed/NCCL"),
    MetricSpec("rdma.gdr_write_bw", "GB/s", "gdr", "higher", "loopback ib_write_bw --use_cuda per RDMA port"),
)

# The --only words, in table order.
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(m.section for m in METRICS))


def per_gpu(sections) -> list[MetricSpec]:
    """The per-GPU microbenchmarks of these sections, in table order."""
    return [m for m in METRICS if m.measure is not None and m.section in sections]


def spec_of(name: str) -> MetricSpec | None:
    """The entry of a reported metric name (an exact name before a family's pattern)."""
    exact = [m for m in METRICS if m.name == name]
    return exact[0] if exact else next((m for m in METRICS if fnmatchcase(name, m.name)), None)
