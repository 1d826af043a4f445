"""Microbenchmark protocol and counting (no GPU: a scripted backend), NUMA locality, backend choice."""

import os

import pytest
from bench_fakes import H100, FakeBackend

from gpunode.bench import micro, numa
from gpunode.bench.backend import INSTALL_HINT, Device
from gpunode.bench.discover import find_backend
from gpunode.host.facts.cpulist import parse_cpulist
from testkit import tree_host

PLAN = micro.MicroPlan(repeats=5, warmup_s=0.1, min_batch_s=0.02)


def target(dev=H100, gpu=0, cpus=()):
    return micro.Target(gpu, dev, numa.GpuLocality(dev.bdf or "", list(cpus), None))


def test_flop_counting():
    assert micro.gemm_flops(8192, 8192, 8192) == 2 * 8192**3 == 1_099_511_627_776
    assert micro.gemm_flops(2, 3, 4) == 48


def test_batch_iters():
    assert micro.batch_iters(0.001, 0.02, 1000) == 20
    assert micro.batch_iters(0.5, 0.02, 1000) == 1  # one op already longer than a batch
    assert micro.batch_iters(1e-9, 0.02, 1000) == 1000  # capped
    assert micro.batch_iters(0.0, 0.02, 1000) == 1000


def test_gemm_metric_is_median_of_repeats_with_spread():
    # per-op seconds: lazy-init call, estimate, warm-up, then 5 batches with one slow outlier
    timings = iter([0.5, 0.002, 0.0014, 0.0014, 0.0014, 0.0028, 0.0014, 0.0014])
    fb = FakeBackend(per_op_s=lambda d, iters, n: next(timings))
    m = micro.gemm_metric(fb, target(), "bf16", PLAN)
    tflops = 2 * 8192**3 / 0.0014 / 1e12
    assert m.status == "PASS" and m.unit == "TFLOP/s" and m.gpu == 0
    assert m.value == pytest.approx(tflops, rel=1e-4)  # the outlier does not move the median
    assert m.spread.n == 5 and m.spread.min == pytest.approx(tflops / 2, rel=1e-4)
    assert m.spread.max == pytest.approx(tflops, rel=1e-4)
    assert m.conditions["m"] == m.conditions["n"] == m.conditions["k"] == 8192
    assert m.conditions["aggregate"] == "median of 5"
    assert m.conditions["iters_per_batch"] == micro.batch_iters(0.0014, 0.02, PLAN.max_iters)
    assert fb.calls == [("gemm", 0, "bf16", 8192, 8192, 8192)]
    assert fb.closed == 1 and fb.released >= 1  # buffers freed


def test_d2d_counts_read_plus_write():
    fb = FakeBackend(per_op_s=0.001)
    m = micro.d2d_metric(fb, target(), PLAN)
    assert m.value == pytest.approx(2 * (1 << 30) / 0.001 / 1e9, rel=1e-4)
    assert m.conditions["counting"] == "read+write"


def test_host_copies_count_once_and_use_plan_sizes():
    fb = FakeBackend(per_op_s=0.02)
    pinned = micro.host_copy_metric(fb, target(), "h2d_pinned", PLAN)
    pageable = micro.host_copy_metric(fb, target(), "d2h_pageable", PLAN)
    assert pinned.name == "h2d.pinned" and pageable.name == "d2h.pageable"
    assert pinned.value == pytest.approx((1 << 30) / 0.02 / 1e9, rel=1e-4)
    assert pageable.value == pytest.approx((256 << 20) / 0.02 / 1e9, rel=1e-4)
    assert ("copy", "h2d_pinned", 0, 1 << 30, None) in fb.calls
    assert pageable.conditions["host_memory"] == "pageable"


def test_unsupported_dtype_skips_and_failure_errors_only_that_metric():
    fb = FakeBackend(unsupported={"fp8": "fp8 needs compute capability 8.9+"}, fail_on="gemm:tf32")
    fp8 = micro.gemm_metric(fb, target(), "fp8", PLAN)
    tf32 = micro.gemm_metric(fb, target(), "tf32", PLAN)
    bf16 = micro.gemm_metric(fb, target(), "bf16", PLAN)
    assert (fp8.status, fp8.message) == ("SKIP", "fp8 needs compute capability 8.9+")
    assert tf32.status == "ERROR" and "out of memory" in tf32.message and tf32.value is None
    assert bf16.status == "PASS"


def test_zero_time_is_an_error_not_infinity():
    fb = FakeBackend(per_op_s=0.0)
    m = micro.d2d_metric(fb, target(), PLAN)
    assert m.status == "ERROR" and "CUDA events" in m.message


def test_p2p_names_and_peer_note():
    second = Device(1, "NVIDIA H100 80GB HBM3", "0000:00:07.0", (9, 0), 80 << 30)
    fb = FakeBackend(devices=(H100, second), peer=False)
    m = micro.p2p_metric(fb, target(H100, 0), target(second, 1), PLAN)
    assert m.name == "p2p.0-1" and m.gpu is None
    assert m.conditions["src"] == 0 and m.conditions["dst"] == 1 and m.conditions["peer_access"] is False
    assert "staged through host memory" in m.message
    assert ("copy", "p2p", 0, 1 << 30, 1) in fb.calls


def test_concurrent_gemm_runs_every_gpu_at_once():
    devs = [Device(i, "GPU", f"0000:0{i}:00.0", (9, 0), 1) for i in range(3)]
    fb = FakeBackend(devices=devs, per_op_s=0.0014)
    out = micro.concurrent_gemm_metrics(fb, [target(d, d.index) for d in devs], PLAN)
    assert [m.gpu for m in out] == [0, 1, 2]
    assert all(m.status == "PASS" and m.name == "gemm.bf16.concurrent" for m in out)
    assert all(m.conditions["gpus_at_once"] == 3 for m in out)
    assert fb.closed == 3


def test_concurrent_gemm_one_failing_gpu_does_not_hang_the_others():
    devs = [Device(i, "GPU", None, (9, 0), 1) for i in range(2)]

    class Flaky(FakeBackend):
        def gemm(self, device, dtype, m, n, k):
            if device.index == 1:
                raise RuntimeError("CUDA error: an illegal memory access")
            return super().gemm(device, dtype, m, n, k)

    out = micro.concurrent_gemm_metrics(Flaky(devices=devs), [target(d, d.index) for d in devs], PLAN)
    assert [m.status for m in out] == ["ERROR", "ERROR"]
    assert "illegal memory access" in out[1].message


def test_concurrent_gemm_with_one_gpu_skips():
    out = micro.concurrent_gemm_metrics(FakeBackend(), [target()], PLAN)
    assert out[0].status == "SKIP"


@pytest.mark.parametrize("text,cpus", [
    ("0-3", [0, 1, 2, 3]),
    ("0-3,8-11\n", [0, 1, 2, 3, 8, 9, 10, 11]),
    ("5", [5]),
    ("0-6:2", [0, 2, 4, 6]),
    ("", []),
])
def test_parse_cpulist(text, cpus):
    assert sorted(parse_cpulist(text)) == cpus


@pytest.mark.parametrize("text", ["a-b", "3-1", "0-4:0", "1,,x"])
def test_parse_cpulist_rejects_garbage(text):
    with pytest.raises(ValueError, match="bad cpulist"):
        parse_cpulist(text)


def test_gpu_locality_from_sysfs(tmp_path):
    base = "/sys/bus/pci/devices/0000:18:00.0"
    host = tree_host(tmp_path, files={f"{base}/local_cpulist": "0-15,64-79\n", f"{base}/numa_node": "0\n",
                                      "/sys/bus/pci/devices/0000:9a:00.0/numa_node": "-1\n"})
    loc = numa.gpu_locality(host.sys, "0000:18:00.0")
    assert loc.cpus == list(range(16)) + list(range(64, 80)) and loc.numa_node == 0 and not loc.note
    vm = numa.gpu_locality(host.sys, "0000:9A:00.0")
    assert vm.cpus == [] and vm.numa_node is None and "not readable" in vm.note
    assert "unknown" in numa.gpu_locality(host.sys, None).note


def test_bound_to_binds_and_restores():
    before = os.sched_getaffinity(0)
    one = min(before)
    with numa.bound_to([one]) as note:
        assert os.sched_getaffinity(0) == {one}
        assert "bound to 1 CPU" in note
    assert os.sched_getaffinity(0) == before
    with numa.bound_to([10_000]) as note:  # none allowed: stays as it was
        assert os.sched_getaffinity(0) == before and "not bound" in note


def test_no_backend_gives_install_hint():
    backend, why = find_backend("auto", importer=lambda name: (None, None))
    assert backend is None and why == INSTALL_HINT and "pip install torch" in why


def test_broken_backend_install_is_reported():
    backend, why = find_backend("auto", importer=lambda name: (None, f"import {name} failed: OSError: libcudart.so"))
    assert backend is None and "libcudart.so" in why and INSTALL_HINT in why


def test_cpu_only_torch_is_not_usable():
    class FakeTorch:
        __version__ = "2.11.0+cpu"

        class version:
            cuda = None

    backend, why = find_backend("torch", importer=lambda name: (FakeTorch, None))
    assert backend is None and "CPU-only build" in why


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="auto, torch or cupy"):
        find_backend("jax")
