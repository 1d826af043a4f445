"""Verdicts: thresholds exactly at the warn/fail ratios, lower-is-better, conditions that differ,
metrics the bench itself failed, overall status and exit codes, the CLI, and real recorded results."""

from __future__ import annotations

import json

import pytest
from baseline_fixtures import (
    GIB,
    bench_doc,
    d2d,
    gemm,
    h100_gpus,
    h100_metrics,
    host_copy,
    metric,
    nccl,
    write_yaml,
)
from typer.testing import CliRunner

from gpunode.baselines.compare import compare_document, grade, judge
from gpunode.baselines.schema import load_baseline
from gpunode.baselines.select import Selection
from gpunode.bench.results import BenchDocument
from gpunode.cli import app
from testkit import FIXTURES

BASELINE = """\
name: t
match: {gpu_name: "NVIDIA H100 80GB HBM3"}
defaults: {warn: 0.9, fail: 0.8}
metrics:
  gemm.bf16:
    value: 796
    unit: TFLOP/s
    conditions: {dtype: bf16, m: 8192, n: 8192, k: 8192}
    source: test
  hbm.d2d:
    value: 3010
    unit: GB/s
    conditions: {counting: read+write, bytes: {min: 268435456}}
    source: test
  fio.rand_read.p99_us:
    value: 100
    unit: us
    source: test
  nccl.all_reduce.busbw:
    value: 480
    unit: GB/s
    conditions: {ngpus: 8, largest_bytes: {min: 4294967296}, algo env.NCCL_ALGO: null}
    source: nvls
  nccl.all_reduce.busbw@ring:
    metric: nccl.all_reduce.busbw
    value: 370
    unit: GB/s
    conditions: {ngpus: 8, largest_bytes: {min: 1073741824}, algo env.NCCL_ALGO: ring}
    source: ring
"""


@pytest.fixture
def baseline(tmp_path):
    return load_baseline(write_yaml(tmp_path / "t.yaml", BASELINE))


def verdicts_for(baseline, metrics, gpus=None):
    bench = BenchDocument.from_json(bench_doc(gpus or h100_gpus(), metrics))
    return judge(bench, Selection(baseline, "file", "test"))


def only_row(baseline, m):
    rows = [r for r in verdicts_for(baseline, [m]).rows if r.metric == m["name"]]
    assert len(rows) == 1
    return rows[0]


@pytest.mark.parametrize(("measured", "status"), [
    (796.0, "PASS"),
    (796 * 1.3, "PASS"),  # faster than expected is fine
    (796 * 0.9, "PASS"),  # exactly at warn
    (796 * 0.9 - 0.01, "WARN"),
    (796 * 0.8, "WARN"),  # exactly at fail
    (796 * 0.8 - 0.01, "FAIL"),
    (0.0, "FAIL"),
])
def test_verdict_boundaries_higher_is_better(baseline, measured, status):
    row = only_row(baseline, gemm("bf16", measured))
    assert row.status == status, row
    assert row.expected == 796 and row.ratio == pytest.approx(measured / 796, abs=1e-4)


@pytest.mark.parametrize(("expected", "measured", "warn", "fail", "status"), [
    # measured figures written in decimal exactly at the threshold; in binary floating point
    # measured/expected comes out a hair below it (636.8 / 796 == 0.7999999999999999)
    (796, 636.8, 0.9, 0.8, "WARN"), (763, 610.4, 0.9, 0.8, "WARN"), (414, 331.2, 0.9, 0.8, "WARN"),
    (3010, 2769.2, 0.92, 0.8, "PASS"), (4235, 3896.2, 0.92, 0.8, "PASS"), (7.7, 6.93, 0.9, 0.8, "PASS"),
    (7.7, 6.9685, 0.95, 0.905, "WARN"), (796, 636.79, 0.9, 0.8, "FAIL"), (4235, 3896.1, 0.92, 0.8, "WARN"),
])
def test_boundaries_are_exact_despite_binary_floating_point(expected, measured, warn, fail, status):
    assert grade(measured / expected, warn, fail) == status


@pytest.mark.parametrize(("p99", "status"), [(100, "PASS"), (100 / 0.9, "PASS"), (112, "WARN"), (125, "WARN"),
                                              (126, "FAIL"), (50, "PASS")])
def test_lower_is_better_inverts_the_ratio(baseline, p99, status):
    row = only_row(baseline, metric("fio.rand_read.p99_us", p99, "us", None))
    assert row.status == status
    assert row.ratio == pytest.approx(100 / p99, abs=1e-4)


def test_a_metric_the_bench_failed_is_fail_whatever_its_figure(baseline):
    row = only_row(baseline, metric("nccl.all_reduce.busbw", 999.0, "GB/s", None, status="fail",
                                    message="#wrong 3 at 1073741824 bytes", ngpus=8))
    assert row.status == "FAIL" and "#wrong 3" in row.message


def test_a_metric_the_bench_errored_is_error_and_unknown_overall(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 796.0), metric("hbm.d2d", None, "GB/s", status="error",
                                                             message="CUDA out of memory")])
    assert [r.status for r in v.rows if r.metric == "hbm.d2d"] == ["ERROR"]
    assert (v.status, v.exit_code) == ("UNKNOWN", 3)


def test_error_and_fail_without_a_baseline_figure_still_count(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 796.0), metric("fio.seq_read", None, "MB/s", None, status="error",
                                                             message="fio exited 1")])
    assert v.status == "UNKNOWN"
    v = verdicts_for(baseline, [gemm("bf16", 796.0), metric("p2p.0-1", 10.0, "GB/s", None, status="fail", message="x")])
    assert v.status == "FAIL"


@pytest.mark.parametrize(("m", "reason"), [
    (gemm("bf16", 100.0, size=4096), "m 4096, baseline 8192"),
    (gemm("bf16", 100.0) | {"conditions": {"dtype": "bf16"}}, "the result does not state m"),
    (d2d(100.0, nbytes=64 << 20), "bytes 67108864, baseline >= 268435456"),
    (d2d(100.0) | {"conditions": {"bytes": GIB, "counting": "read"}}, "counting read, baseline read+write"),
])
def test_other_conditions_are_not_compared_and_say_why(baseline, m, reason):
    row = only_row(baseline, m)
    assert row.status == "SKIP" and reason in row.message, row.message
    assert row.ratio is None


def test_dtype_is_part_of_the_name_and_an_unknown_metric_is_not_compared(baseline):
    row = only_row(baseline, gemm("fp16", 50.0))
    assert row.status == "SKIP" and "no figure for this metric" in row.message


def test_variants_pick_the_entry_whose_conditions_match(baseline):
    gpus8 = h100_gpus(8)
    nvls = verdicts_for(baseline, [nccl("all_reduce", 470.0, 8, 4 * GIB)], gpus8).rows[0]
    assert (nvls.status, nvls.expected, nvls.baseline_key) == ("PASS", 480, "nccl.all_reduce.busbw")
    ring = verdicts_for(baseline, [nccl("all_reduce", 300.0, 8, 4 * GIB, {"NCCL_ALGO": "Ring"})], gpus8).rows[0]
    assert (ring.status, ring.expected, ring.baseline_key) == ("WARN", 370, "nccl.all_reduce.busbw@ring")
    small = verdicts_for(baseline, [nccl("all_reduce", 100.0, 8, 256 << 20)], gpus8).rows[0]
    assert small.status == "SKIP"
    assert "largest_bytes 268435456, baseline >= 4294967296 (and 1 other variant(s)" in small.message
    four = verdicts_for(baseline, [nccl("all_reduce", 100.0, 4, 4 * GIB)], gpus8).rows[0]
    assert four.status == "SKIP" and "ngpus 4, baseline 8" in four.message


def test_unit_mismatch_is_not_compared(baseline):
    row = only_row(baseline, metric("hbm.d2d", 3000.0, "MB/s", 0, bytes=GIB, counting="read+write"))
    assert row.status == "SKIP" and "measured in MB/s, baseline in GB/s" in row.message


def test_baseline_metrics_not_measured_are_listed_and_do_not_change_the_verdict(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 796.0)])
    missing = {r.metric for r in v.rows if r.message == "not measured in this run"}
    assert missing == {"hbm.d2d", "fio.rand_read.p99_us", "nccl.all_reduce.busbw"}
    assert (v.status, v.exit_code) == ("OK", 0)


@pytest.mark.parametrize(("bf16", "d2d_value", "status", "code"), [
    (796, 3010, "OK", 0), (700, 3010, "WARN", 1), (600, 3010, "FAIL", 2), (700, 2000, "FAIL", 2),
])
def test_overall_status_and_exit_code(baseline, bf16, d2d_value, status, code):
    v = verdicts_for(baseline, [gemm("bf16", float(bf16)), d2d(float(d2d_value))])
    assert (v.status, v.exit_code) == (status, code)


def test_nothing_compared_is_unknown(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 100.0, size=1024)])
    assert (v.status, v.exit_code) == ("UNKNOWN", 3)


def test_per_gpu_rows_name_the_gpu(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 796.0, gpu=0), gemm("bf16", 600.0, gpu=1)], h100_gpus(2))
    assert [(r.subject, r.status) for r in v.rows if r.metric == "gemm.bf16"] == [("GPU0", "PASS"), ("GPU1", "FAIL")]


def test_compare_document_auto_selects_the_shipped_h100_baseline(tmp_path):
    v = compare_document(bench_doc(h100_gpus(), h100_metrics()), baselines_dir=tmp_path)
    assert v.baseline == "h100-sxm5-80gb-1gpu" and v.origin == "shipped"
    assert v.status == "OK", [r for r in v.rows if r.status != "PASS"]
    statuses = {r.metric: r.status for r in v.rows}
    assert statuses["gemm.bf16"] == statuses["h2d.pinned"] == "PASS"
    assert statuses["h2d.pageable"] == "SKIP"  # information only: no baseline figure


def test_compare_document_flags_a_slow_gpu(tmp_path):
    v = compare_document(bench_doc(h100_gpus(), h100_metrics(scale=0.85)), baselines_dir=tmp_path)
    assert v.status == "WARN"
    assert {r.metric for r in v.rows if r.status == "WARN"} >= {"gemm.bf16", "hbm.d2d", "h2d.pinned"}


def test_compare_document_rejects_what_is_not_a_bench_result(tmp_path):
    with pytest.raises(ValueError, match="not a gpunode bench result"):
        compare_document({"schema": "gpunode.audit/1"}, baselines_dir=tmp_path)


def test_cli_compare_table_json_and_exit_codes(tmp_path):
    results = tmp_path / "r.json"
    results.write_text(json.dumps(bench_doc(h100_gpus(), h100_metrics(scale=0.75))))
    runner = CliRunner()
    out = runner.invoke(app, ["compare", str(results), "--baselines", str(tmp_path)])
    assert out.exit_code == 2, out.output
    assert "h100-sxm5-80gb-1gpu" in out.stdout and "FAIL (exit 2)" in out.stdout
    out = runner.invoke(app, ["compare", str(results), "--json", "--baseline", "h100-sxm5-80gb-1gpu",
                              "--baselines", str(tmp_path)])
    doc = json.loads(out.stdout)
    assert doc["schema"] == "gpunode.compare/1" and doc["status"] == "FAIL" and doc["exit_code"] == 2
    row = next(r for r in doc["verdicts"] if r["metric"] == "gemm.bf16")
    assert row["status"] == "FAIL" and row["ratio"] == 0.75 and row["expected"] == 710


def test_cli_compare_bad_results_and_unknown_hardware(tmp_path):
    runner = CliRunner()
    notjson = write_yaml(tmp_path / "x.json", "{nope")
    out = runner.invoke(app, ["compare", str(notjson)])
    assert out.exit_code == 3 and out.stderr.startswith(f"gpunode: error: {notjson}:1: not valid JSON")
    wrong = tmp_path / "audit.json"
    wrong.write_text(json.dumps({"schema": "gpunode.audit/1"}))
    out = runner.invoke(app, ["compare", str(wrong)])
    assert out.exit_code == 3 and "not a gpunode bench result" in out.stderr
    other = tmp_path / "l40.json"
    gpus = h100_gpus() | {"devices": [h100_gpus()["devices"][0] | {"name": "NVIDIA L40S", "pci_device": "0x26b9"}]}
    other.write_text(json.dumps(bench_doc(gpus, h100_metrics())))
    out = runner.invoke(app, ["compare", str(other), "--baselines", str(tmp_path)])
    assert out.exit_code == 3 and "no baseline matches 1 × NVIDIA L40S (0x26b9)" in out.stderr


def test_renderer_prints_every_row(baseline):
    import io

    from rich.console import Console

    from gpunode.baselines.compare import render_verdicts

    v = verdicts_for(baseline, [gemm("bf16", 700.0), host_copy("h2d.pageable", 16.0)])
    out = io.StringIO()  # piped: one line per row, written to the console's file
    render_verdicts(v, Console(width=200, file=out))
    text = out.getvalue()
    assert "gemm.bf16" in text and "WARN" in text and "not compared" in text and "WARN (exit 1)" in text


REAL = sorted((FIXTURES / "bench").glob("h[12]00-*.json"))
EXPECTED = {"h100": "h100-sxm5-80gb-1gpu", "h200": "h200-141gb-1gpu"}


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_recorded_results_pass_against_the_shipped_baseline(path, tmp_path):
    """Recorded by `gpunode bench --json` on the lent H100 and H200: the baseline is auto-selected, every
    comparable figure PASSes, and what was not compared says why."""
    doc = json.loads(path.read_text())
    v = compare_document(doc, baselines_dir=tmp_path)
    assert v.baseline == EXPECTED[path.name[:4]] and v.status == "OK"
    measured = {m["name"] for m in doc["metrics"] if m["status"] == "ok"}
    comparable = measured & {"gemm.bf16", "gemm.fp16", "gemm.tf32", "gemm.fp8", "hbm.d2d", "h2d.pinned", "d2h.pinned"}
    compared = [r for r in v.rows if r.status in ("PASS", "WARN", "FAIL")]
    assert {r.metric for r in compared} == comparable and {"hbm.d2d", "h2d.pinned"} <= comparable
    assert all(r.status == "PASS" for r in compared), [(r.metric, r.ratio) for r in compared if r.status != "PASS"]
    assert all(r.message for r in v.rows if r.status == "SKIP")


@pytest.mark.parametrize("path", REAL, ids=[p.name for p in REAL])
def test_real_results_under_a_noisy_neighbour_would_be_flagged(path, tmp_path):
    """The recorded figures at 60 % (a GPU shared with another job) WARN or FAIL every GEMM."""
    doc = json.loads(path.read_text())
    for m in doc["metrics"]:
        if m["name"].startswith("gemm.") and m["value"] is not None:
            m["value"] *= 0.6
    v = compare_document(doc, baselines_dir=tmp_path)
    gemms = [r for r in v.rows if r.metric.startswith("gemm.") and r.ratio is not None]
    assert gemms and all(r.status == "FAIL" for r in gemms) and v.exit_code == 2


@pytest.mark.parametrize("kind", ["h100", "h200"])
def test_real_noisy_neighbour_runs_fail_gemm_and_hbm(kind, tmp_path):
    """Recorded on the lent GPU with benchmarks/noisy_neighbour.py keeping the same GPU busy:
    the shared run must be flagged (the alone run of the same session is a PASS fixture above)."""
    doc = json.loads((FIXTURES / "device" / f"bench-noisy-{kind}.json").read_text())
    v = compare_document(doc, baselines_dir=tmp_path)
    assert v.status == "FAIL"
    by_metric = {r.metric: r.status for r in v.rows}
    assert by_metric["gemm.bf16"] == "FAIL" and by_metric["hbm.d2d"] in ("WARN", "FAIL")
    assert by_metric["h2d.pinned"] == "PASS"  # the PCIe link is not what the neighbour takes


@pytest.mark.parametrize("name,gpu_name,device", [
    ("h100-sxm5-80gb-8gpu", "NVIDIA H100 80GB HBM3", 0x2330), ("h200-141gb-8gpu", "NVIDIA H200", 0x2335),
    ("a100-sxm4-80gb-8gpu", "NVIDIA A100-SXM4-80GB", 0x20B2), ("h100-pcie-80gb", "NVIDIA H100 PCIe", 0x2331),
])
def test_every_shipped_figure_is_compared_on_what_bench_full_records(name, gpu_name, device, tmp_path):
    """A baseline condition the bench never records would leave that figure silently never compared:
    an 8-GPU `bench --full` (micro steps through the real code, nccl metrics through nccl.metric) must
    use every expectation of every shipped baseline."""
    from baseline_fixtures import inventory_like
    from bench_fakes import FakeBackend

    from gpunode.baselines.select import Catalogue
    from gpunode.bench import nccl
    from gpunode.bench import run as bench_run
    from gpunode.bench.backend import Device
    from testkit import tree_host

    inv = inventory_like(gpu_name, device, 8)
    fake = FakeBackend(devices=[Device(i, gpu_name, g.sysfs_bdf, (9, 0), 80 << 30) for i, g in enumerate(inv.gpus)])
    make_op = fake._op

    def op_like_torch(what):  # what the torch and cupy GEMM ops state about their inputs
        op = make_op(what)
        op.conditions.update(data="randn")
        return op

    fake._op = op_like_torch
    opts = bench_run.BenchOptions(mode="full", only=("gemm", "hbm", "h2d", "p2p"), environ={"PATH": ""})
    doc = bench_run.execute(bench_run.prepare(tree_host(tmp_path, files={}, inventory=inv), opts,
                                              find=lambda prefer: (fake, "")))
    for env in ({}, {"NCCL_ALGO": "Ring"}):
        for test in nccl.TESTS:
            row = nccl.Row(4 << 30, 1 << 30, "float", "sum", 1e4, 400.0, 400.0, 0)
            run = nccl.NcclRun(rows=[row], ngpus=8, ranks=8, out_of_bounds=0, footer=True)
            doc.metrics.append(nccl.metric(bench_run.nccl_config(test, 8, False), run, "ok", "", 1, env))
    selection = Catalogue().resolve(name)
    verdicts = judge(BenchDocument.from_json(json.loads(json.dumps(doc.to_json()))), selection)
    used = {r.baseline_key for r in verdicts.rows if r.status in ("PASS", "WARN", "FAIL")}
    assert [e.key for e in selection.baseline.expectations if e.key not in used] == []


@pytest.mark.parametrize("name, gpu, device", [("h100", "NVIDIA H100 80GB HBM3", 0x2330), ("h200", "NVIDIA H200", 0x2335)])
def test_nvls_figure_is_not_used_for_a_run_with_nvls_switched_off(tmp_path, name, gpu, device):
    """8-GPU all_reduce figures of ~480 GB/s need NVLink SHARP; a run with NCCL_NVLS_ENABLE=0 (as on
    machines where multicast must stay off) is ring/tree and must say 'not compared', not FAIL."""
    from baseline_fixtures import gpus_of, inventory_like

    gpus = gpus_of(inventory_like(gpu, device, 8))
    on = bench_doc(gpus, [nccl("all_reduce", 470.0, 8, 8 << 30)], mode="full")
    off = bench_doc(gpus, [nccl("all_reduce", 350.0, 8, 8 << 30, algo={"NCCL_NVLS_ENABLE": "0"})], mode="full")
    row_on = next(r for r in compare_document(on, baselines_dir=tmp_path).rows if r.metric == "nccl.all_reduce.busbw")
    row_off = [r for r in compare_document(off, baselines_dir=tmp_path).rows if r.metric == "nccl.all_reduce.busbw"]
    assert row_on.status == "PASS"
    assert row_off and all(r.status not in ("PASS", "WARN", "FAIL") for r in row_off), row_off
    assert "NCCL_NVLS_ENABLE" in " ".join(r.message for r in row_off)


@pytest.mark.parametrize("recorded", ["h100-quick.json", "h200-quick.json"])
def test_compare_and_bench_compare_take_the_one_compare_path(monkeypatch, recorded):
    """`gpunode compare FILE` and `bench --compare` both call baselines.compare.compare(), and
    on the same recorded run they give the same verdicts."""
    import gpunode.baselines.compare as compare_module
    from gpunode.baselines.select import Catalogue
    from gpunode.cli.bench_cmd import _compare
    from gpunode.cli.common import stdout_console

    real, calls = compare_module.compare, []

    def spy(bench, catalogue, baseline=None, **kw):
        verdicts = real(bench, catalogue, baseline, **kw)
        calls.append(verdicts.to_json())
        return verdicts

    monkeypatch.setattr(compare_module, "compare", spy)
    path = FIXTURES / "bench" / recorded
    result = CliRunner().invoke(app, ["compare", str(path), "--json"])
    assert len(calls) == 1 and json.loads(result.stdout) == json.loads(json.dumps(calls[0]))
    document = BenchDocument.from_json(json.loads(path.read_text()))
    console = stdout_console()
    with console.capture():
        code = _compare(document, (Catalogue(), None), console)
    assert len(calls) == 2 and calls[1] == calls[0] and code == calls[0]["exit_code"] == result.exit_code


# ---- mutation survivors: which catalogue, the message, trust, ranges, exactly 1, the rendered note ----

TRUST_BASELINE = """\
name: trust
defaults: {warn: 0.9, fail: 0.8}
metrics:
  gemm.bf16:
    value: 796
    unit: TFLOP/s
    conditions: {dtype: bf16}
    source: test
    peak: {value: 989.5, source: datasheet dense BF16}
  hbm.d2d:
    value: 3010
    unit: GB/s
    conditions: {bytes: {min: 268435456, max: 4294967296}}
    source: test
"""


@pytest.fixture
def trust_baseline(tmp_path):
    return load_baseline(write_yaml(tmp_path / "trust.yaml", TRUST_BASELINE))


def test_catalogue_for_reads_the_config_only_when_no_directory_is_given(tmp_path, monkeypatch):
    from gpunode.baselines.compare import catalogue_for
    from gpunode.baselines.schema import BaselineError

    mine, configured = tmp_path / "mine", tmp_path / "configured"
    mine.mkdir()
    configured.mkdir()
    monkeypatch.setenv("GPUNODE_CONFIG", str(write_yaml(tmp_path / "config.yaml", f"baselines_dir: {configured}\n")))
    assert catalogue_for().site == [configured]
    assert catalogue_for(config_dir=str(mine)).site == [mine]  # the caller's config dir, not re-read
    assert catalogue_for(baselines_dir=mine).site == [mine]
    monkeypatch.setenv("GPUNODE_CONFIG", str(tmp_path / "missing.yaml"))
    assert catalogue_for(baselines_dir=mine).site == [mine]  # --baselines DIR: a broken config is not read
    with pytest.raises(BaselineError, match="config file not found"):
        catalogue_for()


def test_the_message_says_lower_is_better_only_where_it_is(baseline):
    assert only_row(baseline, gemm("bf16", 796.0)).message == "100.0% of expected; within 90%/80%"
    assert only_row(baseline, metric("fio.rand_read.p99_us", 125, "us", None)).message == (
        "80.0% of expected (lower is better); below the warn level of 90%/80%")


def test_a_full_figure_beside_a_foreign_process_is_not_trusted(trust_baseline):
    foreign = {"foreign_processes": [{"pid": 4242, "name": "python", "used_bytes": 2 << 30}]}
    row = only_row(trust_baseline, gemm("bf16", 796.0) | {"telemetry": foreign})
    assert row.status == "WARN" and row.ratio == 1.0
    assert row.message == ("not trustworthy: foreign process on the GPU: pid 4242 (python, 2.0 GiB); "
                           "100.0% of expected; within 90%/80%")
    assert row.concerns == ("foreign process on the GPU: pid 4242 (python, 2.0 GiB)",)
    clean = only_row(trust_baseline, gemm("bf16", 791.6))
    assert (clean.status, clean.peak_ratio, clean.concerns) == ("PASS", 0.8, ())  # 791.6 / 989.5


def test_a_low_figure_names_its_likely_cause_and_only_then(trust_baseline):
    capped = {"power_w": {"median": 695.0}, "power_limit_w": 700.0}
    low = only_row(trust_baseline, gemm("bf16", 700.0) | {"telemetry": capped})
    assert low.status == "WARN"
    assert low.message == ("likely cause: power-capped: 695 W of a 700 W limit; "
                           "87.9% of expected; below the warn level of 90%/80%")
    assert "likely cause" not in only_row(trust_baseline, gemm("bf16", 700.0)).message  # no telemetry: no guess
    assert "likely cause" not in only_row(trust_baseline, gemm("bf16", 796.0) | {"telemetry": capped}).message


def test_a_range_condition_holds_its_upper_bound(trust_baseline):
    assert only_row(trust_baseline, d2d(3010.0, nbytes=GIB)).status == "PASS"
    assert only_row(trust_baseline, d2d(3010.0, nbytes=4 * GIB)).status == "PASS"  # at max
    above = only_row(trust_baseline, d2d(3010.0, nbytes=8 * GIB))
    assert above.status == "SKIP" and "bytes 8589934592, baseline >= 268435456 and <= 4294967296" in above.message


def test_lower_is_better_at_exactly_one(baseline):
    """A p99 of exactly 1 us is 100 x better than the expected 100 us, not an infinite ratio."""
    row = only_row(baseline, metric("fio.rand_read.p99_us", 1.0, "us", None))
    assert (row.status, row.ratio) == ("PASS", 100.0)
    assert row.message.startswith("10000.0% of expected (lower is better)")


def _rendered(verdicts, **console):
    import io

    from rich.console import Console

    from gpunode.baselines.compare import render_verdicts

    out = io.StringIO()
    render_verdicts(verdicts, Console(file=out, **console))
    return out.getvalue().splitlines()


def test_the_rendered_note_is_the_message_of_what_did_not_pass(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 796.0, gpu=0), gemm("bf16", 700.0, gpu=1)], h100_gpus(2))
    lines = _rendered(v, width=200)  # piped: one plain line per row
    passed = next(line for line in lines if line.startswith("gemm.bf16  GPU0"))
    warned = next(line for line in lines if line.startswith("gemm.bf16  GPU1"))
    assert passed.endswith("0.90/0.80  -") and "of expected" not in passed
    assert warned.endswith("0.90/0.80  87.9% of expected; below the warn level of 90%/80%")


def test_on_a_narrow_terminal_only_the_note_folds_below_its_row(baseline):
    v = verdicts_for(baseline, [gemm("bf16", 700.0)])
    lines = _rendered(v, width=80, force_terminal=True, color_system=None)
    i = next(i for i, line in enumerate(lines) if line.startswith("gemm.bf16"))
    assert lines[i] == "gemm.bf16  GPU0  WARN  700.0 TFLOP/s  796.0 TFLOP/s  0.879  0.90/0.80"
    assert lines[i + 1] == "    Note: 87.9% of expected; below the warn level of 90%/80%"
