"""gpunode diag end to end with a replayed telemetry trace, and every fault injected through the
backend seam: each must end FAIL or ERROR, never PASS.

Each test runs on two backends of the same seam: numpy on the CPU (backend_numpy, everywhere,
CI included: the diag logic, its checks and verdicts) and torch (backend_torch, marked `gpu`:
`pytest -m gpu` on a machine with torch, on CUDA where it has enough GPUs for the test, else
on torch's CPU device, so the torch kernels are tested there too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpunode.bench.backend import Device
from gpunode.diag.backend import Injector
from gpunode.diag.gemm import GemmPlan
from gpunode.diag.results import DiagDocument, TestResult
from gpunode.diag.run import DiagContext, DiagOptions, run_diag
from gpunode.diag.verdicts import Floors
from gpunode.host.gpu.sample import Sample
from gpunode.host.gpu.telemetry import ReplayTelemetrySource, TelemetrySampler, Trace

FIXTURES = Path(__file__).parent / "fixtures" / "telemetry"
CPU = Device(0, "cpu", None, (0, 0), 0)
MEMORY = 4 << 20  # what the memory test is given on every backend: small and the same everywhere


def torch_backend(injector=None, gpus=1):
    """TorchDiag on CUDA when there are GPUs enough for the test, else on torch's CPU device.
    Only `pytest -m gpu` gets here: torch missing is a failure, never a skip."""
    try:
        import torch
    except ImportError:
        pytest.fail("the `gpu` tests need torch (run them on the GPU machine: pytest -m gpu)")
    from gpunode.diag.backend_torch import TorchDiag

    if not (torch.cuda.is_available() and torch.cuda.device_count() >= gpus):
        return TorchDiag(torch, injector, device_type="cpu", cpu_memory_bytes=MEMORY)

    class SmallTorchDiag(TorchDiag):
        def memory(self, device):  # the diag logic under test, not 80 GB of HBM
            free, total = super().memory(device)
            return min(free, MEMORY), total

    return SmallTorchDiag(torch, injector, device_type="cuda")


@pytest.fixture(params=["numpy", pytest.param("torch", marks=pytest.mark.gpu)])
def make_backend(request):
    """-> make(injector=None, gpus=1): a diag backend of the parametrized kind."""
    if request.param == "torch":
        return torch_backend
    from gpunode.diag.backend_numpy import NumpyDiag

    return lambda injector=None, gpus=1: NumpyDiag(injector, memory_bytes=MEMORY)


def product_values(backend, dtype: str, size: int, seed: int) -> list[float]:
    """A·B of the backend's seeded inputs in fp32, flat (row-major), as plain floats."""
    if backend.name == "numpy":
        from gpunode.diag.backend_numpy import as_float

        a, b = backend.inputs(dtype, size, seed)
        return (as_float(a, dtype) @ as_float(b, dtype)).reshape(-1).tolist()
    a, b = backend._inputs(dtype, size, seed)
    return (a.float() @ b.float()).view(-1).tolist()


def device_of(backend, gpu: int) -> Device:
    kind = getattr(backend, "device_type", "cpu")
    return Device(gpu, kind, None, (0, 0), 0)


def healthy_trace(gpus=(0,), **over) -> Trace:
    rows = []
    for i in range(4):
        for g in gpus:
            s = Sample(t=float(i), gpu=g, sm_clock_mhz=1755, mem_clock_mhz=3201, power_w=650 + i, power_limit_w=700,
                       temp_c=60, mem_temp_c=70, clock_events=("sw_power_cap",), ecc_uncorrected=0,
                       ecc_corrected=0, remap_uncorrectable=0, remap_pending=False, remap_failure=False,
                       pcie_replay=0, processes=())
            for k, v in over.items():
                setattr(s, k, v)
            rows.append(s)
    return Trace(samples=rows)


def context(make, level=1, injector=None, trace=None, gpus=(0,), floors=None, gate="PASS", **opts) -> DiagContext:
    backend = make(injector, gpus=len(gpus))
    options = DiagOptions(level=level, gemm=GemmPlan(size=64, batch=8, quick_batches=2), memtest_passes=1,
                          memtest_chunk_bytes=1 << 20, min_load_s=0.3, duration=0.5 if level > 1 else None, **opts)
    sampler = TelemetrySampler(ReplayTelemetrySource(trace or healthy_trace(gpus)), interval_s=0.01,
                               ours=lambda pid: pid < 1000)
    return DiagContext(opts=options, hostname="node1", now_epoch=1.7e9, gpus_meta={"count": len(gpus)},
                       devices={g: device_of(backend, g) for g in gpus}, names={g: "cpu" for g in gpus}, backend=backend,
                       sampler=sampler, floors=floors or Floors(),
                       gate=(lambda: TestResult("gate", None, gate, "gate checks")) if gate else None)


def by(doc: DiagDocument, name: str, gpu=None) -> TestResult:
    found = [r for r in doc.results if r.name == name and (gpu is None or r.gpu == gpu)]
    assert found, f"no {name} in {[r.name for r in doc.results]}"
    return found[0]


def test_level1_healthy_passes_and_round_trips(make_backend):
    doc = run_diag(context(make_backend, 1))
    assert doc.status == "OK", [(r.name, r.status, r.message) for r in doc.results]
    assert [r.name for r in doc.results] == ["gate", "gemm.correctness", "telemetry"]
    gemm = by(doc, "gemm.correctness")
    assert gemm.figures["products"] == gemm.figures["products_checked"] == 3 + 2 * 8
    again = DiagDocument.from_json(json.loads(json.dumps(doc.to_json())))
    assert again.to_json() == doc.to_json() and again.exit_code == 0


def test_flipped_bit_in_a_later_product_fails_naming_gpu_and_product(make_backend):
    inj = Injector(flip_bit={(0, 7): (100, 2)})  # a low mantissa bit: only the exact check sees it
    doc = run_diag(context(make_backend, 1, inj))
    gemm = by(doc, "gemm.correctness")
    assert inj.fired and gemm.status == "FAIL" and doc.status == "FAIL" and doc.exit_code == 2
    assert "GPU0" in gemm.message and "product 7" in gemm.message
    assert gemm.detail["mismatches"][0]["iteration"] == 7


def test_a_gpu_that_is_consistently_wrong_fails_the_abft_check(make_backend):
    # the same sign bit flipped in every product: repeats agree, only A·(B·1) (and the elementwise
    # check) can tell; the largest element, so that the row checksum moves beyond its noise
    c = product_values(make_backend(), "bf16", 64, GemmPlan().seed)
    big = max(range(len(c)), key=lambda i: abs(c[i]))
    doc = run_diag(context(make_backend, 1, Injector(flip_bit={(0, i): (big, 15) for i in range(64)})))
    gemm = by(doc, "gemm.correctness")
    assert gemm.status == "FAIL" and "ABFT" in gemm.message and "differ" not in gemm.message


def test_abft_bound_holds_for_healthy_products_of_every_dtype(make_backend):
    backend = make_backend()
    for dtype in ("bf16", "fp16", "tf32"):
        ref = backend.gemm(device_of(backend, 0), dtype, 96, 3).reference()
        assert ref.abft_bad_rows == 0 and ref.abft_max_ratio < 1 and ref.repeat_mismatch == 0, dtype


def test_cross_gpu_comparison_names_the_odd_gpu(make_backend):
    # GPU1's products all carry the same flipped bit: each GPU alone is consistent with itself
    inj = Injector(flip_bit={(1, i): (3, 0) for i in range(64)})
    doc = run_diag(context(make_backend, 1, inj, gpus=(0, 1, 2)))
    cross = by(doc, "gemm.cross_gpu")
    assert cross.status == "FAIL" and cross.detail == {"disagreeing": [1]} and "GPU1" in cross.message
    assert doc.status == "FAIL"


def test_level2_healthy_passes_with_memtest_and_sustained_gemm(make_backend):
    doc = run_diag(context(make_backend, 2))
    assert doc.status == "OK", [(r.name, r.status, r.message) for r in doc.results]
    mem = by(doc, "hbm.memtest")
    assert mem.figures["bytes_tested"] >= 0.9 * mem.figures["free_bytes"] and mem.figures["errors"] == 0
    assert mem.figures["pattern_runs"] == 131
    sustained = by(doc, "gemm.sustained")
    assert sustained.figures["products_checked"] <= sustained.figures["products"]
    assert by(doc, "load.gemm").status == "PASS"
    names = [m["name"] for m in doc.to_json()["metrics"]]
    assert names == ["hbm.memtest", "gemm.bf16"]


def test_corrupted_memory_word_fails_with_its_address(make_backend):
    inj = Injector(corrupt_word={(0, 128): (2, 1234)})  # pattern 128: address-in-address
    doc = run_diag(context(make_backend, 2, inj))
    mem = by(doc, "hbm.memtest")
    assert inj.fired and mem.status == "FAIL" and mem.figures["errors"] == 1
    word = mem.detail["failing_words"][0]
    assert word["chunk"] == 2 and word["word"] == 1234 and word["bits"] == "0x0000000000000001"
    assert int(word["expected"], 16) == 2 * (1 << 17) + 1234  # the word's own index
    assert doc.status == "FAIL"


def test_allocation_failure_is_error_never_pass(make_backend):
    doc = run_diag(context(make_backend, 2, Injector(fail_alloc={0})))
    mem = by(doc, "hbm.memtest")
    assert mem.status == "ERROR" and "allocat" in mem.message
    assert doc.status in ("UNKNOWN", "FAIL") and doc.exit_code != 0


def test_hw_slowdown_under_load_fails(make_backend):
    trace = healthy_trace(clock_events=("sw_power_cap", "hw_slowdown"))
    doc = run_diag(context(make_backend, 2, trace=trace))
    assert by(doc, "load.gemm").status == "FAIL" and "hw_slowdown" in by(doc, "load.gemm").message
    assert by(doc, "telemetry").status == "FAIL" and doc.status == "FAIL"


def test_xid_event_fails(make_backend):
    trace = healthy_trace()
    trace.xids = [{"t": 0.0, "gpu": 0, "xid": 79}]
    doc = run_diag(context(make_backend, 1, trace=trace))
    tel = by(doc, "telemetry")
    assert tel.status == "FAIL" and "79" in tel.message and doc.exit_code == 2


def test_new_uncorrectable_ecc_and_remap_failure_fail(make_backend):
    trace = healthy_trace()
    for later in trace.samples[1:]:  # start() and stop() each take a sample: the 2nd is always read
        later.ecc_uncorrected = 3
        later.remap_failure = True
    doc = run_diag(context(make_backend, 1, trace=trace))
    tel = by(doc, "telemetry")
    assert tel.status == "FAIL" and "3 new uncorrectable" in tel.message and "remapping failed" in tel.message


def test_foreign_process_is_flagged(make_backend):
    doc = run_diag(context(make_backend, 2, trace=healthy_trace(processes=((4242, "hog.py", 8 << 30),))))
    tel = by(doc, "telemetry")
    assert tel.status == "WARN" and "pid 4242 (hog.py)" in tel.message and doc.status == "WARN"


def test_floors_under_full_load(make_backend):
    floors = Floors(sm_clock_min_mhz=1800, power_min_ratio=0.95, source="test")
    doc = run_diag(context(make_backend, 2, floors=floors))
    load = by(doc, "load.gemm")
    assert load.status == "FAIL" and "below the 1800 MHz floor" in load.message and "never reaching 95%" in load.message
    ok = run_diag(context(make_backend, 2, floors=Floors(sm_clock_min_mhz=1700, power_min_ratio=0.9, source="t")))
    assert by(ok, "load.gemm").status == "PASS"


def test_no_telemetry_is_said_not_passed(make_backend):
    class NoNvml(ReplayTelemetrySource):
        def open(self):
            raise OSError("NVML Shared Library Not Found")

    ctx = context(make_backend, 2)
    ctx.sampler = TelemetrySampler(NoNvml(Trace()))
    doc = run_diag(ctx)
    assert by(doc, "telemetry").status == "WARN" and "NVML Shared Library" in by(doc, "telemetry").message
    assert by(doc, "load.gemm").status == "SKIP"


def test_level3_runs_stress_with_verified_copies(make_backend):
    doc = run_diag(context(make_backend, 3, gpus=(0, 1), trace=healthy_trace((0, 1))))
    assert doc.status == "OK", [(r.name, r.status, r.message) for r in doc.results]
    names = {(r.name, r.gpu) for r in doc.results}
    assert {("stress.gemm", 0), ("stress.gemm", 1), ("load.stress", 0), ("pcie.copy", 0), ("pcie.copy", 1),
            ("p2p.copy", 0), ("p2p.copy", 1), ("gemm.cross_gpu", None)} <= names


def test_interrupt_is_error_and_stops_cleanly(make_backend):
    def interrupt(text, left):
        if "sustained" in text:
            raise KeyboardInterrupt

    ctx = context(make_backend, 2)
    ctx.progress = interrupt
    doc = run_diag(ctx)
    assert doc.interrupted and doc.status == "UNKNOWN" and doc.exit_code == 3
    assert ctx.stop.is_set() and ctx.sampler._thread is None
    assert any("interrupted" in n for n in doc.notes)


def test_nothing_tested_is_error(make_backend):
    ctx = context(make_backend, 1, gate=None)
    ctx.backend, ctx.backend_why = None, "torch not installed"
    doc = run_diag(ctx)
    assert doc.status == "UNKNOWN" and by(doc, "gpu.kernels").message.endswith("torch not installed")


def test_options_are_validated():
    for bad in ({"level": 4}, {"level": 1, "duration": 60}, {"level": 2, "duration": float("nan")},
                {"level": 2, "duration": -1}):
        with pytest.raises(ValueError):
            DiagOptions(**bad)


def test_a_small_wrong_element_below_the_abft_noise_is_caught_element_by_element(make_backend):
    backend = make_backend()
    c = product_values(backend, "bf16", 256, 20261201)
    element = next(i for i, x in enumerate(c) if 0.2 < abs(x) < 1.0)  # 2|c| is below the ABFT bound here
    inj = Injector(flip_bit={(0, i): (element, 15) for i in range(64)})
    ctx = context(make_backend, 1, inj)
    ctx.opts.gemm = GemmPlan(size=256, batch=8, quick_batches=2)
    gemm = by(run_diag(ctx), "gemm.correctness")
    assert gemm.status == "FAIL" and "element(s) off the full-precision product" in gemm.message
    assert "ABFT" not in gemm.message
    assert gemm.detail["wrong_elements"][0]["col"] == element % 256


def test_two_gpus_that_disagree_are_both_suspect(make_backend):
    inj = Injector(flip_bit={(1, i): (3, 0) for i in range(64)})
    cross = by(run_diag(context(make_backend, 1, inj, gpus=(0, 1))), "gemm.cross_gpu")
    assert cross.status == "FAIL" and cross.detail == {"disagreeing": [0, 1]}


def test_a_copy_that_arrives_corrupted_once_fails():
    import threading

    from gpunode.diag.backend import CopyResult
    from gpunode.diag.stress import CopyRun, copy_loop, copy_result

    class Flaky:
        label = "GPU0 host<->device"

        def __init__(self):
            self.n = 0

        def round(self):
            self.n += 1
            return CopyResult(0.01, 1 << 20, ["host->device copy differs"] if self.n == 2 else [])

        def close(self):
            pass

    stop = threading.Event()
    run = CopyRun("GPU0 host<->device", "pcie.copy", 0)
    worker = Flaky()

    def make():
        return worker

    # three rounds, then stop: no clock involved
    orig = worker.round

    def round_and_stop():
        r = orig()
        if worker.n >= 3:
            stop.set()
        return r

    worker.round = round_and_stop
    copy_loop(make, run, deadline=float("inf"), stop=stop)
    result = copy_result(run)
    assert run.rounds == 3 and result.status == "FAIL" and "1 of 3 rounds" in result.message
    assert copy_result(CopyRun("x", "p2p.copy", 0, error="no peer access between these GPUs")).status == "SKIP"
