"""bench/metrics.py, the door for a new bench metric (issue 21 item 4): the table plans the
per-GPU steps, every name bench reports has an entry, the entries agree with the rest of
gpunode (units, better, docs/bench.md), and hbm.read (the metric added through the door)
counts bytes read once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from bench_fakes import H100, FakeBackend

from gpunode.bench import metrics, micro, numa
from gpunode.bench.results import UNITS, lower_is_better
from gpunode.bench.run import SECTIONS

ROOT = Path(__file__).resolve().parent.parent
PLAN = micro.MicroPlan(repeats=3, warmup_s=0.01, min_batch_s=0.001)


def test_the_sections_are_the_tables():
    assert SECTIONS == metrics.SECTIONS == ("gemm", "hbm", "h2d", "p2p", "nccl", "fio", "allreduce", "gdr")


@pytest.mark.parametrize("spec", metrics.METRICS, ids=lambda s: s.name)
def test_each_entry_agrees_with_units_and_better(spec):
    assert spec.unit in UNITS and spec.section in SECTIONS and spec.better in ("higher", "lower")
    assert lower_is_better(spec.name.replace("*", "x"), spec.unit) == (spec.better == "lower")
    assert (spec.measure is None) == (spec.label == "")  # a per-GPU step has both


def test_every_reported_name_has_an_entry():
    for name in ("gemm.bf16", "gemm.fp8", "hbm.d2d", "hbm.read", "d2h.pageable", "p2p.0-1", "p2p",
                 "gemm.bf16.concurrent", "nccl.all_reduce.busbw", "torch.all_reduce.busbw",
                 "rdma.gdr_write_bw", "fio.rand_read.p99_us"):
        assert metrics.spec_of(name) is not None, name
    assert metrics.spec_of("p2p").what.startswith("one GPU")  # an exact name before a family's pattern
    assert metrics.spec_of("nvbandwidth.h2d") is None


def test_docs_list_every_metric():
    text = (ROOT / "docs" / "bench.md").read_text()
    table = text[text.index("## What is measured"):].split("\n\n")[0]
    as_written = {"p2p.*": "p2p.S-D", "nccl.*.busbw": "nccl.TEST.busbw"}  # a family, as the docs name it
    missing = [m.name for m in metrics.METRICS if as_written.get(m.name, m.name) not in table]
    assert not missing, f"docs/bench.md's metric table lacks {missing}"


def test_the_table_plans_one_step_per_gpu_and_entry_in_table_order():
    fb = FakeBackend(per_op_s=0.001)
    specs = [m for m in metrics.per_gpu(("hbm", "h2d")) if m.wanted(PLAN)]
    assert [m.label for m in specs] == ["HBM copy", "HBM read", "h2d pinned", "d2h pinned", "h2d pageable",
                                        "d2h pageable"]
    t = micro.Target(0, H100, numa.GpuLocality(H100.bdf or "", [], None))
    names = [m.measure(fb, t, PLAN).name for m in specs]
    assert names == [m.name for m in specs]  # each step reports its own entry's name
    only_bf16 = micro.MicroPlan(repeats=1, warmup_s=0.0, min_batch_s=0.0, gemm_dtypes=("bf16",))
    assert [m.name for m in metrics.per_gpu(("gemm",)) if m.wanted(only_bf16)] == ["gemm.bf16"]


def test_hbm_read_counts_bytes_read_once():
    fb = FakeBackend(per_op_s=0.001)
    t = micro.Target(0, H100, numa.GpuLocality(H100.bdf or "", [], None))
    m = micro.hbm_read_metric(fb, t, PLAN)
    assert m.name == "hbm.read" and m.unit == "GB/s" and m.status == "PASS"
    assert m.value == pytest.approx((1 << 30) / 0.001 / 1e9, rel=1e-4)  # half of hbm.d2d's count
    assert m.conditions["counting"] == "bytes read"
    assert ("copy", "read", 0, 1 << 30, None) in fb.calls and fb.closed == 1


def test_a_failing_read_is_that_metrics_error():
    class Broken(FakeBackend):
        def copy(self, kind, device, nbytes, peer=None):
            raise RuntimeError("CUDA out of memory")

    t = micro.Target(0, H100, numa.GpuLocality(H100.bdf or "", [], None))
    m = micro.hbm_read_metric(Broken(), t, PLAN)
    assert m.status == "ERROR" and "out of memory" in m.message and re.match(r"hbm\.read$", m.name)


def test_run_plans_only_what_the_micro_plan_measures(tmp_path, monkeypatch):
    """A plan without fp8 (as gemm_dtypes allows) plans no fp8 step: the entry's `wanted`."""
    from test_bench_session import fake_find, host_with_h100

    from gpunode.bench import run as bench_run

    monkeypatch.setattr(micro.MicroPlan, "quick", classmethod(lambda cls: cls(1, 0.0, 0.0, gemm_dtypes=("bf16",))))
    opts = bench_run.BenchOptions(mode="quick", only=("gemm",), environ={"PATH": ""})
    planned = bench_run.prepare(host_with_h100(tmp_path), opts, find=fake_find(FakeBackend()))
    assert [s.label for s in planned.steps] == ["GPU0 GEMM bf16", "GEMM on all GPUs at once"]
