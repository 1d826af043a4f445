"""The notes of `gpunode baseline record` in their order, for the branches the record tests leave
open: a figure that left out in every run is noted every time, a wide spread widens the bound
(with a note), and results without a GPU identity make a baseline without `match`."""

from __future__ import annotations

from baseline_fixtures import bench_doc, gemm, h100_gpus, metric

from gpunode.baselines.record import build_baseline


def test_notes_say_what_was_left_out_then_what_spread_then_the_missing_match():
    figures = [gemm("bf16", 700.0, cov=0.09), metric("gemm.bf16", 1.0, "GB/s"),
               metric("hbm.d2d", None, "GB/s", status="FAIL", message="boom")]
    mapping, notes = build_baseline([bench_doc({}, figures), bench_doc({}, figures)], "n")
    assert notes == [
        "gemm.bf16: no baseline family for this metric/unit (GB/s), not recorded",
        "hbm.d2d GPU0: FAIL (boom), not recorded",
        "gemm.bf16: no baseline family for this metric/unit (GB/s), not recorded",
        "hbm.d2d GPU0: FAIL (boom), not recorded",
        "gemm.bf16: the recorded runs spread up to CoV 9.0%: its stability bound is 11.2% (default 5%)",
        "no GPU identity in the results: the baseline has no `match` and is used only by --baseline",
    ]
    assert "match" not in mapping and mapping["metrics"]["gemm.bf16"]["max_cov"] == 0.112


def test_a_quiet_figure_keeps_the_default_bound_and_lower_is_better_is_said():
    figures = [gemm("bf16", 700.0, cov=0.05), metric("fio.rand_read.p99_us", 90.0, "us", None)]
    mapping, notes = build_baseline([bench_doc(h100_gpus(1), figures)], "n")
    assert notes == [] and "max_cov" not in mapping["metrics"]["gemm.bf16"]
    assert "better" not in mapping["metrics"]["gemm.bf16"]
    assert mapping["metrics"]["fio.rand_read.p99_us"]["better"] == "lower"
    assert mapping["metrics"]["fio.rand_read.p99_us"]["source"].endswith(
        "median of 1 figures (1 run(s)) of gpunode bench --quick, observed 90.0..90.0 us")
