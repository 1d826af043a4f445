"""diag's protocols (gemm.py, memtest.py, results.py) against scripted workers: what a result
says for each count, bound and list length, with no clock and no kernels involved."""

from __future__ import annotations

import threading

import pytest

from gpunode.bench.backend import Device
from gpunode.diag import gemm, memtest
from gpunode.diag.backend import AllocationError, Batch, Mismatch, PatternResult, Reference, WordError
from gpunode.diag.gemm import GemmPlan, GemmRun, cross_gpu_result, gemm_result, run_gemm
from gpunode.diag.results import DiagDocument, TestResult, overall

CPU = Device(0, "cpu", None, (0, 0), 0)
GOOD = Reference(b"ref", 0.5, 0, 0.0)


class ScriptedGemm:
    """Products in batches; `wrong` iterations mismatch; records each batch call."""

    flops = 2 * 64 ** 3

    def __init__(self, wrong=(), seconds=0.5):
        self.wrong, self.seconds, self.calls = set(wrong), seconds, []

    def reference(self):
        return GOOD

    def batch(self, iters, first_iteration, check=True):
        self.calls.append((iters, first_iteration, check))
        bad = [Mismatch(i, 2, 0.5) for i in range(first_iteration, first_iteration + iters) if i in self.wrong]
        return Batch(self.seconds, iters, bad if check else [])

    def close(self):
        pass


def test_quick_run_checks_every_product_in_batches():
    worker = ScriptedGemm()
    run = run_gemm(worker, 0, GemmPlan(size=64, batch=8, quick_batches=3), None, threading.Event())
    assert worker.calls == [(8, 3, True), (8, 11, True), (8, 19, True)]
    assert run.products == run.checked_products == 3 + 24 and run.mismatch_count == 0
    assert run.reference is GOOD and len(run.checked_tflops) == 3 and run.plain_tflops == []
    assert run.checked_tflops[0] == pytest.approx(8 * worker.flops / 0.5 / 1e12)


def test_a_given_reference_is_not_recomputed_and_stop_ends_the_run():
    class NoReference(ScriptedGemm):
        def reference(self):
            raise AssertionError("reference() called although one was given")

    stop = threading.Event()
    stop.set()
    run = run_gemm(NoReference(), 1, GemmPlan(batch=4, quick_batches=2), None, stop, reference=GOOD)
    assert run.reference is GOOD and run.products == 3 and run.checked_products == 3


def test_every_plain_batch_still_checks_its_last_product():
    worker = ScriptedGemm(wrong={3 + 15 * 4 + 4})  # the product right after the 16th (plain) batch
    run = run_gemm(worker, 0, GemmPlan(batch=4, quick_batches=gemm.PLAIN_EVERY), None, threading.Event(),
                   measure_plain=True)
    plain = [c for c in worker.calls if not c[2]]
    assert plain == [(4, 3 + 15 * 4, False)] and worker.calls[-1] == (1, 3 + 16 * 4, True)
    assert run.products == 3 + 16 * 4 + 1 and run.checked_products == 3 + 15 * 4 + 1
    assert len(run.plain_tflops) == 1 and len(run.checked_tflops) == 15
    assert run.mismatch_count == 1 and run.mismatches[0].iteration == 3 + 16 * 4


def test_zero_second_batches_give_no_rate():
    run = run_gemm(ScriptedGemm(seconds=0.0), 0, GemmPlan(batch=2, quick_batches=2), None, threading.Event())
    assert run.checked_tflops == [] and "TFLOP/s" not in gemm_result(run).message


def test_mismatches_are_counted_all_but_listed_up_to_max_listed():
    worker = ScriptedGemm(wrong=range(3, 3 + 40))
    run = run_gemm(worker, 2, GemmPlan(batch=8, quick_batches=5), None, threading.Event())
    assert run.mismatch_count == 40 and len(run.mismatches) == gemm.MAX_LISTED
    result = gemm_result(run)
    assert result.status == "FAIL" and result.gpu == 2
    assert "40 product(s) differ from the reference; first: product 3, 2 row checksum(s) off by up to 0.5" \
        in result.message
    assert [m["iteration"] for m in result.detail["mismatches"]] == list(range(3, 3 + gemm.MAX_LISTED))


def test_sustained_run_ends_at_its_deadline_after_at_least_one_batch():
    worker = ScriptedGemm()
    run = run_gemm(worker, 0, GemmPlan(batch=2), 0.0, threading.Event())
    assert len(worker.calls) == 1 and run.products == 5


def run_of(ref=GOOD, **over) -> GemmRun:
    run = GemmRun(0, "bf16", 64, reference=ref, products=19, checked_products=19, seconds=1.234)
    for k, v in over.items():
        setattr(run, k, v)
    return run


def test_a_clean_run_passes_with_its_figures():
    result = gemm_result(run_of(Reference(b"r", 0.123456, 0, 0.0, 0, 0.654321), checked_tflops=[10.0, 30.0, 20.0]))
    assert result.status == "PASS" and result.message == "19 of 19 products checked, all correct, 20 TFLOP/s checked"
    assert result.figures["tflops_checked"] == 20.0 and result.figures["seconds"] == 1.23
    assert result.figures["abft_max_ratio"] == 0.1235 and result.figures["element_max_ratio"] == 0.6543
    assert result.detail is None


def test_verification_overhead_from_plain_and_checked_rates():
    result = gemm_result(run_of(checked_tflops=[90.0], plain_tflops=[100.0]))
    assert result.figures["tflops_plain"] == 100.0 and result.figures["verification_overhead_pct"] == 10.0
    no_checked = gemm_result(run_of(plain_tflops=[100.0]))
    assert "verification_overhead_pct" not in no_checked.figures and "tflops_checked" not in no_checked.figures


@pytest.mark.parametrize(("ref", "words"), [
    (Reference(b"r", 3.5, 2, 0.0), "fails its ABFT checksum on 2 row(s), worst 3.5x the bf16 error bound"),
    (Reference(b"r", float("inf"), 1, 0.0), "worst beyond the bf16 error bound"),
    (Reference(b"r", 0.2, 0, 0.25), "products 0-2 of the same inputs differ (row checksums by up to 0.25)"),
    (Reference(b"r", 0.2, 0, 0.0, 3, 9.0, [{"row": 1, "col": 2, "got": 1.5, "want": -1.5}]),
     "product 0 has 3 element(s) off the full-precision product, first C[1,2] = 1.5 instead of -1.5"),
])
def test_each_reference_check_fails_on_its_own(ref, words):
    result = gemm_result(run_of(ref))
    assert result.status == "FAIL" and words in result.message and result.message.startswith("GPU0: wrong results: ")


def test_infinite_ratios_are_written_as_text():
    figures = gemm_result(run_of(Reference(b"r", float("inf"), 1, 0.0, 1, float("inf")))).figures
    assert figures["abft_max_ratio"] == "inf" and figures["element_max_ratio"] == "inf"
    result = gemm_result(run_of(mismatches=[Mismatch(5, 1, float("inf"))], mismatch_count=1))
    assert result.detail["mismatches"] == [{"iteration": 5, "rows": 1, "max_abs": "inf"}]


def test_no_reference_means_no_reference_figures():
    result = gemm_result(run_of(ref=None))
    assert result.status == "PASS" and "abft_max_ratio" not in result.figures


def refs(*prints: bytes) -> dict[int, Reference]:
    return {i: Reference(p, 0.1, 0, 0.0) for i, p in enumerate(prints)}


def test_cross_gpu_majority_and_no_majority():
    names = {i: "H100" for i in range(4)}
    assert cross_gpu_result(refs(b"a"), names) is None
    same = cross_gpu_result(refs(b"a", b"a", b"a"), names)
    assert same.status == "PASS" and same.message == "3 GPUs computed bit-identical products"
    odd = cross_gpu_result(refs(b"a", b"b", b"a"), names)
    assert odd.status == "FAIL" and odd.detail == {"disagreeing": [1]} and odd.message.startswith("GPU1 computed")
    tie = cross_gpu_result(refs(b"a", b"a", b"b", b"b"), names)
    assert tie.status == "FAIL" and tie.detail == {"disagreeing": [0, 1, 2, 3]}
    assert tie.message.startswith("GPU0, GPU1, GPU2, GPU3 computed")


def test_cross_gpu_compares_within_a_model_only():
    mixed = cross_gpu_result(refs(b"a", b"b"), {0: "H100", 1: "H200"})
    assert mixed.status == "SKIP" and "GPU0 (H100) has no GPU of its model" in mixed.message
    three = cross_gpu_result(refs(b"a", b"a", b"z"), {0: "H100", 1: "H100", 2: "H200"})
    assert three.status == "PASS" and three.message.startswith("2 GPUs computed bit-identical products (GPU2 (H200)")


# --- memory test --------------------------------------------------------------------------------------


class ScriptedMem:
    bytes_tested = 3 << 30
    chunks = 3

    def __init__(self, errors=None, names=("walking_ones:0", "address", "random:0")):
        self.errors, self.names, self.closed, self.ran = errors or {}, list(names), False, []

    def patterns(self):
        return self.names

    def run(self, index):
        self.ran.append(index)
        n = self.errors.get(index, 0)
        first = [WordError(1, 7 + k, 0x1000 + 8 * k, 0xFF, 0xFE) for k in range(n)]
        return PatternResult(n, first, 0.7, 3 * 10 ** 9)

    def close(self):
        self.closed = True


class ScriptedBackend:
    def __init__(self, worker=None, fail=False, free=1000):
        self.worker, self.fail, self.free, self.asked, self.released = worker, fail, free, None, False

    def memory(self, device):
        return self.free, 2000

    def memtest(self, device, nbytes, chunk_bytes, seed):
        self.asked = (nbytes, chunk_bytes, seed)
        if self.fail:
            raise AllocationError("GPU0: out of memory")
        return self.worker

    def release(self):
        self.released = True


def test_memtest_pass_figures_and_cleanup():
    worker = ScriptedMem()
    backend = ScriptedBackend(worker, free=7 << 30)
    result = memtest.run_memtest(backend, CPU, 0, 2, threading.Event(), seed=3, fraction=0.5, chunk_bytes=100)
    assert backend.asked == (7 << 29, 100, 3) and worker.ran == [0, 1, 2, 0, 1, 2]
    assert worker.closed and backend.released
    f = result.figures
    assert result.status == "PASS" and f["pattern_runs"] == 6 and f["errors"] == 0 and f["passes"] == 2
    assert f["share_of_free"] == 0.4286 and f["gbps"] == 4.3  # 6 runs x 3 GB in 6 x 0.7 s
    assert f["bytes_tested"] == 3 << 30 and f["chunks"] == 3 and f["patterns"] == 3 and f["free_bytes"] == 7 << 30
    assert result.message == "3.0 GiB (43% of free) x 3 patterns x 2 pass(es), no errors, 4.3 GB/s"


def test_memtest_default_fraction_and_chunks():
    backend = ScriptedBackend(ScriptedMem(), free=10 << 30)
    memtest.run_memtest(backend, CPU, 0, 1, threading.Event())
    assert backend.asked[:2] == (9 << 30, 1 << 30)  # 90 % of free, in 1 GiB chunks


def test_memtest_errors_fail_with_the_first_words_and_the_worst_patterns():
    worker = ScriptedMem(errors={1: 20, 2: 1})
    result = memtest.run_memtest(ScriptedBackend(worker), CPU, 4, 1, threading.Event())
    assert result.status == "FAIL" and result.gpu == 4 and result.figures["errors"] == 21
    assert "GPU4: 21 memory word(s) read back wrong in 3.0 GiB" in result.message and "(address: 20, random:0: 1)" in result.message
    assert "first at 0x1000 expected 0x00000000000000ff found 0x00000000000000fe" in result.message
    words = result.detail["failing_words"]
    assert len(words) == 16 and words[0] == {"chunk": 1, "word": 7, "address": "0x1000", "expected": "0x00000000000000ff",
                                             "found": "0x00000000000000fe", "bits": "0x0000000000000001"}
    assert result.detail["errors_by_pattern"] == {"address": 20, "random:0": 1}


def test_memtest_words_are_shown_as_unsigned_64_bits():
    assert memtest._word(WordError(0, 0, 16, -1, 0))["expected"] == "0xffffffffffffffff"
    assert memtest._word(WordError(0, 0, 16, -1, 0))["bits"] == "0xffffffffffffffff"


def test_memtest_allocation_failure_is_error():
    backend = ScriptedBackend(fail=True, free=4000)
    result = memtest.run_memtest(backend, CPU, 0, 1, threading.Event())
    assert result.status == "ERROR" and "could not allocate" in result.message
    assert result.figures == {"free_bytes": 4000, "total_bytes": 2000, "target_bytes": 3600}


def test_a_stopped_memtest_is_error_not_pass():
    stop = threading.Event()

    class Stopping(ScriptedMem):
        def run(self, index):
            stop.set()
            return super().run(index)

    worker = Stopping()
    result = memtest.run_memtest(ScriptedBackend(worker), CPU, 0, 1, stop)
    assert result.status == "ERROR" and result.message == "stopped after 1 of 3 pattern runs" and worker.closed


def test_memtest_with_no_free_memory_reported_says_no_share_and_does_not_crash():
    result = memtest.run_memtest(ScriptedBackend(ScriptedMem(), free=0), CPU, 0, 1, threading.Event())
    assert result.status == "PASS" and result.figures["share_of_free"] is None and "of free" not in result.message


# --- the document's status ----------------------------------------------------------------------------


def r(status: str) -> TestResult:
    return TestResult("x", 0, status, "")


def test_overall_status_and_exit_code():
    assert overall([r("PASS"), r("WARN"), r("ERROR"), r("FAIL")]) == "FAIL"
    assert overall([r("PASS"), r("WARN"), r("ERROR")]) == "UNKNOWN"
    assert overall([r("PASS"), r("WARN")]) == "WARN"
    assert overall([r("PASS"), r("SKIP")]) == "OK"
    assert overall([r("SKIP")]) == "UNKNOWN" and overall([]) == "UNKNOWN"
    assert overall([r("PASS")], interrupted=True) == "UNKNOWN"
    doc = DiagDocument("t", "n", "", 0.0, 1, 1.0, None, {}, {}, [r("PASS"), r("WARN")])
    assert doc.exit_code == 1 and doc.to_json()["summary"] == {"PASS": 1, "WARN": 1}


def test_a_result_names_its_subject():
    assert TestResult("gemm.correctness", 3, "PASS", "").subject == "GPU3"
    assert TestResult("gemm.cross_gpu", None, "PASS", "").subject == ""
    with pytest.raises(ValueError, match="status 'OK'"):
        TestResult("x", 0, "OK", "")


# --- the document contract, diag figures as metrics, dcgmi -----------------------------------------


def test_a_non_finite_figure_is_refused_and_optional_fields_are_read_back():
    good = {"name": "x", "gpu": 0, "status": "PASS", "message": "m", "figures": {"gbps": 1.5}}
    assert TestResult.from_json(good).figures == {"gbps": 1.5}
    with pytest.raises(ValueError, match="figure gbps is not finite"):
        TestResult.from_json({**good, "figures": {"gbps": float("inf")}})
    data = DiagDocument("t", "n", "", 0.0, 2, 1.0, 120.0, {}, {}, [r("PASS")], notes=["a"]).to_json()
    back = DiagDocument.from_json(data)
    assert back.planned_s == 120.0 and back.notes == ["a"]
    assert DiagDocument.from_json({**data, "planned_s": "soon", "notes": None}).planned_s is None
    assert DiagDocument.from_json({**data, "notes": None}).notes == []


def test_metrics_take_the_telemetry_of_their_own_load_window():
    from gpunode.diag.metrics import metrics_of

    t_gemm, t_stress = {"samples": 1}, {"samples": 2}
    figures = {"tflops_checked": 600.0, "dtype": "bf16", "m": 8192, "n": 8192, "k": 8192}
    results = [TestResult("load.gemm", 0, "PASS", "", telemetry=t_gemm),
               TestResult("load.stress", 0, "PASS", "", telemetry=t_stress),
               TestResult("gemm.sustained", 0, "PASS", "", figures), TestResult("stress.gemm", 0, "PASS", "", figures),
               TestResult("gemm.sustained", 1, "PASS", "", figures)]
    got = metrics_of(results)
    assert [m.get("telemetry") for m in got] == [t_gemm, t_stress, None]
    assert "telemetry" not in got[2] and got[0]["conditions"]["source"] == "gemm.sustained"


def test_judging_a_document_without_gpus_or_tools(monkeypatch):
    import gpunode.baselines.compare as baselines_compare
    from gpunode.bench.results import BenchDocument
    from gpunode.diag import compare

    seen = {}
    monkeypatch.setattr(baselines_compare, "judge", lambda bench, selection, **kw: seen.setdefault("b", bench))
    compare.judge_document({"metrics": None}, selection=object())
    bench = seen["b"]
    assert isinstance(bench, BenchDocument) and bench.gpus == {} and bench.tools == {} and bench.metrics == []


def test_dcgm_runtime_error_is_kept_beside_test_results():
    from gpunode.diag import dcgm

    doc = {"DCGM Diagnostic": {"runtime_error": "nvvs crashed", "test_categories": [
        {"category": "Hardware", "tests": ["junk", {"name": 7}, {"name": "Memory", "results": [
            "junk", {"entity_group": "GPU", "entity_id": 0, "status": "Pass"}]}]}]}}
    import json

    results, _ = dcgm.parse(json.dumps(doc))
    assert [(x.name, x.gpu, x.status) for x in results] == [("dcgm", None, "ERROR"), ("dcgm.memory", 0, "PASS")]
    assert results[0].message == "DCGM runtime error: nvvs crashed"
    empty, _ = dcgm.parse(json.dumps({"DCGM Diagnostic": {"test_categories": []}}))
    assert [(x.name, x.status, x.message) for x in empty] == [("dcgm", "ERROR", "dcgmi diag reported no test results")]


def test_dcgm_run_timeouts_and_empty_output():
    from gpunode.diag import dcgm
    from gpunode.host.runner import CommandResult

    class Scripted:
        def __init__(self, **result):
            self.result, self.timeouts = result, []

        def run(self, argv, timeout=10.0, **kw):
            self.timeouts.append(timeout)
            return CommandResult(list(argv), **self.result)

    slow = Scripted(rc=-9, timed_out=True)
    results, _ = dcgm.run(slow, 2)
    assert slow.timeouts == [900] and results[0].message == "dcgmi diag -r 2 did not finish in 900 s"
    silent, _ = dcgm.run(Scripted(rc=1, stdout="  \n", stderr="starting\nError: unable to connect to host engine\n"), 1)
    assert silent[0].status == "ERROR" and silent[0].message == "dcgmi diag failed: Error: unable to connect to host engine"
    bare, _ = dcgm.run(Scripted(rc=3), 1)
    assert bare[0].message == "dcgmi diag failed: exit 3"
    denied, _ = dcgm.run(Scripted(rc=126, error="permission denied"), 1)
    assert denied[0].status == "ERROR" and denied[0].message == "permission denied"


# --- level 1's gate result ------------------------------------------------------------------------------


def check(cid: str, status: str, message: str = "", subject: str | None = None):
    from gpunode.audit.engine import Result, Status

    return Result(cid, cid, "gpu", "critical", Status(status), message or f"{cid} {status.lower()}", subject=subject)


def test_gate_result_status_is_the_worst_check():
    from gpunode.diag.gatecheck import result_of

    ok = result_of([check("a", "PASS"), check("b", "SKIP")], blocked=False)
    assert (ok.status, ok.message, ok.figures, ok.detail) == ("PASS", "2 gate checks, none failed",
                                                              {"pass": 1, "skip": 1}, None)
    assert result_of([check("a", "PASS"), check("w", "WARN")], False).status == "WARN"
    assert result_of([check("w", "WARN"), check("e", "ERROR")], False).status == "ERROR"
    assert result_of([check("e", "ERROR"), check("f", "FAIL")], False).status == "FAIL"
    assert result_of([check("a", "PASS")], blocked=True).status == "FAIL"  # the gate blocked (a stale state, say)


def test_gate_result_lists_fail_then_error_then_warn_up_to_four():
    from gpunode.diag.gatecheck import LISTED, result_of

    results = [check("w1", "WARN"), check("e1", "ERROR"), check("f1", "FAIL", "two\n  lines", subject="GPU3"),
               check("w2", "WARN"), check("f2", "FAIL"), check("p", "PASS")]
    got = result_of(results, False)
    assert LISTED == 4
    assert got.message == "f1 GPU3: two lines; f2: f2 fail; e1: e1 error; w1: w1 warn (+1 more)"
    assert [c["id"] for c in got.detail["checks"]] == ["f1", "f2", "e1", "w1", "w2"]
    assert got.figures == {"pass": 1, "warn": 2, "fail": 2, "error": 1}
    four = result_of(results[:4], False)
    assert "more" not in four.message


def test_gate_result_from_a_recorded_host_and_from_a_broken_config(tmp_path):
    from gpunode.diag.gatecheck import gate_result
    from testkit import HOSTS

    result = gate_result(snapshot=str(HOSTS / "h100-sxm-1gpu"))
    assert result.name == "gate" and result.status == "PASS" and result.figures["pass"] > 0
    bad = tmp_path / "config.yaml"
    bad.write_text("gate: [unclosed\n")
    broken = gate_result(config_path=str(bad), snapshot=str(HOSTS / "h100-sxm-1gpu"))
    assert broken.status == "ERROR" and broken.message.startswith("the gate's checks could not run: ")


def test_only_torch_runs_diag_kernels_and_a_missing_one_says_why():
    from gpunode.diag.discover import find_backend

    assert find_backend("cupy") == (None, "diag backend 'cupy': only torch is implemented")

    backend, why = find_backend("auto", importer=lambda name: (None, f"{name} is not installed"))
    assert backend is None and why.endswith("(torch is not installed)")  # the importer given was asked
