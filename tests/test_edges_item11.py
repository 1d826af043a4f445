"""Edges the mutation pass of issue 20 item 11 found untested in small modules: the trust
concerns' text, the fleet trends' statistics and plot thinning, the parse cache's write path,
--prove's figures, the order of dcgmi's per-GPU results."""

from __future__ import annotations

import json
import os

import pytest


def test_foreign_processes_are_named_three_then_counted():
    from gpunode.bench.trust import foreign_text

    procs = [{"pid": i, "name": f"p{i}", "used_bytes": 1} for i in range(4)]
    assert foreign_text(procs) == ("foreign process on the GPU: pid 0 (p0, 0.0 GiB), pid 1 (p1, 0.0 GiB), "
                                   "pid 2 (p2, 0.0 GiB) +1 more")
    assert foreign_text([{"pid": 7, "name": "x", "used_bytes": 0}, {"pid": 8}]) == \
        "foreign process on the GPU: pid 7 (x), pid 8"
    assert "more" not in foreign_text(procs[:3])


def test_quantiles_interpolate_between_order_statistics():
    from gpunode.fleet.trends import quantile

    assert quantile([5.0], 0.9) == 5.0
    assert quantile([1.0, 3.0], 0.5) == 2.0 and quantile([1.0, 3.0], 1.0) == 3.0
    assert quantile([1.0, 2.0, 4.0], 0.75) == 3.0


def test_plot_series_are_thinned_to_sixty_points_keeping_both_ends():
    from gpunode.fleet.trends import MAX_POINTS, thin

    assert MAX_POINTS == 60
    points = [(float(i), float(i)) for i in range(121)]
    kept = thin(points)
    assert len(kept) == 60 and kept[0] == [0.0, 0.0] and kept[-1] == [120.0, 120.0]
    assert thin(points[:60]) == [[float(i), float(i)] for i in range(60)]


def test_a_cache_write_that_cannot_land_leaves_no_temp_file_and_no_descriptor(tmp_path):
    from gpunode.parsed_cache import ParsedCache

    cache = ParsedCache(tmp_path / "state")
    key = cache.key("a: 1\n", ())
    cache.put(key, {"a": 1})
    assert cache.get(key) == (True, {"a": 1})
    blocked = cache.key("b: 2\n", ())
    os.mkdir(cache._path(blocked))  # a directory where the entry goes: the rename fails
    os.mkdir(os.path.join(cache._path(blocked), "x"))
    fds = len(os.listdir("/proc/self/fd"))
    cache.put(blocked, {"b": 2})
    assert len(os.listdir("/proc/self/fd")) == fds
    assert sorted(os.listdir(cache.directory)) == sorted(os.path.basename(cache._path(k)) for k in (key, blocked))


def test_prove_rows_keep_five_digits():
    from gpunode.bench.results import BenchDocument, Metric
    from gpunode.tune.prove import compare_runs

    def one(value):
        return BenchDocument("t", "h", "", 0.0, "quick", {}, {}, [Metric("gemm.bf16", 0, value, "TFLOP/s", "ok", "", {})])

    (row,) = compare_runs(one(3.0), one(2.0), floor=0.123456789)
    assert row.change == -0.33333 and row.noise == 0.12346


def test_dcgm_results_are_listed_node_first_then_by_gpu():
    from gpunode.diag import dcgm

    doc = {"DCGM Diagnostic": {"test_categories": [{"category": "Hardware", "tests": [{"name": "Memory", "results": [
        {"entity_group": "GPU", "entity_id": 1, "status": "Pass"}, {"entity_group": "GPU", "entity_id": 0, "status": "Fail"},
        {"entity_group": "Switch", "entity_id": 0, "status": "Pass"}]}]}]}}
    results, _ = dcgm.parse(json.dumps(doc))
    assert [(r.gpu, r.status) for r in results] == [(None, "PASS"), (0, "FAIL"), (1, "PASS")]


@pytest.mark.parametrize("status", ["PASS", "WARN"])
def test_gate_result_with_nothing_wrong_has_no_detail(status):
    from gpunode.audit.engine import Result, Status
    from gpunode.diag.gatecheck import result_of

    got = result_of([Result("a", "a", "gpu", "critical", Status(status), "m")], blocked=False)
    assert (got.detail is None) is (status == "PASS")


def test_fit_keeps_a_line_of_exactly_the_width_and_wraps_a_longer_one():
    from gpunode.layout import fit

    assert fit(["a" * 30], 30) == ["a" * 30]
    assert fit(["word " * 8], 30) == ["word word word word word word", "  word word"]


def test_the_table_is_drawn_from_exactly_wide_columns_and_folded_below():
    import io

    from rich.console import Console

    from gpunode.layout import WIDE, Col, show

    def out(width: int, title: str = "T") -> str:
        buf = io.StringIO()
        console = Console(file=buf, width=width, force_terminal=True, color_system=None)
        show(console, title, [Col("check", whole=True), Col("status")], [["gpu.ecc", "PASS"]], fmt="table")
        return buf.getvalue()

    assert "┃" in out(WIDE) or "│" in out(WIDE)
    folded = out(WIDE - 1)
    assert "│" not in folded and "┃" not in folded and folded.splitlines()[0] == "T"
    assert out(WIDE - 1, title="").splitlines()[0] != ""


def series(values: list[float]) -> list[tuple[float, float]]:
    return [(day * 86400.0, v) for day, v in enumerate(values)]


def test_a_drift_exactly_at_the_threshold_is_not_reported_and_slow_latency_growth_is():
    from gpunode.fleet.trends import Settings, metric_trend

    gemm = ("H100", "gemm.bf16", "TFLOP/s", "{}")
    at = metric_trend(gemm, {"a": series([100, 100, 100, 90, 90, 90])}, Settings(window=3, min_drop=0.10526, k=0))
    assert at["drifting"] == []
    beyond = metric_trend(gemm, {"a": series([100, 100, 100, 90, 90, 90])}, Settings(window=3, min_drop=0.105, k=0))
    assert [d["host"] for d in beyond["drifting"]] == ["a"]
    p99 = ("H100", "fio.rand_read.p99_us", "us", "{}")
    slow = metric_trend(p99, {"b:GPU1": series([100, 100, 100, 110, 110, 110])}, Settings(window=3))
    assert [(d["host"], d["gpu"]) for d in slow["drifting"]] == [("b", 1)]


def test_fit_never_touches_a_line_that_fits():
    from gpunode.layout import fit

    assert fit(["abc  "], 5) == ["abc  "]  # wrapping would drop its trailing blanks


def test_a_cache_entry_above_8_mib_is_a_miss(tmp_path):
    from gpunode.parsed_cache import MAX_ENTRY_BYTES, ParsedCache

    assert MAX_ENTRY_BYTES == 8 << 20
    cache = ParsedCache(tmp_path / "state")
    small = cache.key("a: 1\n", ())
    cache.put(small, {"a": 1})  # makes the cache directory as gpunode does
    for size, hit in ((MAX_ENTRY_BYTES, True), (MAX_ENTRY_BYTES + 1, False)):
        key = cache.key(f"big {size}\n", ())
        head = json.dumps({"key": key, "document": ""})
        text = head[:-2] + "x" * (size - len(head)) + head[-2:]
        fd = os.open(cache._path(key), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, text.encode())
        os.close(fd)
        assert cache.get(key)[0] is hit, size


def test_history_keeps_only_real_numbers_and_their_spread():
    from gpunode.history.record import figures_of

    base = {"name": "gemm.bf16", "gpu": 0, "unit": "TFLOP/s", "status": "PASS", "conditions": {}}
    doc = {"metrics": [{**base, "value": True}, {**base, "value": "680"}, {**base, "value": float("nan")},
                       {**base, "value": 680.0, "spread": {"cov": 0.02}}, {**base, "value": 690.0, "spread": {"cov": "x"}}]}
    figures = figures_of(doc)
    assert [(f.value, f.cov) for f in figures] == [(680.0, 0.02), (690.0, None)]


def test_a_zero_figure_has_no_ratio_and_is_skipped_against_history():
    from gpunode.history.store import Figure
    from gpunode.history.trend import judge_against_history, ratio

    assert ratio(0.0, 5.0, False) is None and ratio(5.0, 0.0, True) is None and ratio(10.0, 5.0, False) == 2.0
    earlier = [(None, Figure("gemm.bf16", 0, 680.0, "TFLOP/s", "{}", 0.01, True))] * 3
    doc = {"metrics": [{"name": "gemm.bf16", "gpu": 0, "unit": "TFLOP/s", "status": "PASS", "value": 0.0}]}
    (verdict,) = judge_against_history(doc, earlier)
    assert verdict.status == "SKIP" and verdict.message == "no usable ratio" and verdict.median == 680.0


def test_slurm_install_refuses_a_hook_budget_that_is_not_a_positive_number():
    from gpunode.slurm.install import check_hook_values

    check_hook_values(None, None, None)
    check_hook_values(None, None, 30.0)
    for bad in (float("nan"), -1.0, 0.0, float("inf")):
        with pytest.raises(ValueError, match="--timeout"):
            check_hook_values(None, None, bad)


def test_a_hook_script_is_rewritten_unless_text_and_mode_already_match(tmp_path):
    from gpunode.slurm.install import HookScript, install_script

    script = HookScript("prolog", tmp_path / "gpunode-prolog", "#!/bin/sh\nexit 0\n")
    assert install_script(script, as_root=False) == "written"
    assert install_script(script, as_root=False) == "unchanged"
    script.path.chmod(0o775)
    assert install_script(script, as_root=False) == "written" and script.path.stat().st_mode & 0o7777 == 0o755


def test_a_drift_needs_two_windows_of_runs():
    from gpunode.history.trend import drift

    points = [(day * 86400.0, 100.0 - day) for day in range(6)]
    assert drift(points[:5], window=3) is None
    d = drift(points, window=3)
    assert d is not None and d.runs == 6 and d.first == 99.0 and d.last == 96.0


def test_latency_that_stepped_up_once_but_has_no_slope_is_not_drifting():
    from gpunode.fleet.trends import Settings, metric_trend

    p99 = ("H100", "fio.rand_read.p99_us", "us", "{}")
    flat = metric_trend(p99, {"a": series([100.0] * 7 + [110.0] * 3)}, Settings(window=3))  # Theil-Sen slope 0
    assert flat["drifting"] == []


def test_slurm_conf_lines_default_and_asked_health_check_interval():
    from pathlib import Path

    from gpunode.slurm.chain import plan_install

    assert "HealthCheckInterval=300" in plan_install(Path("/opt/g"), {}).conf_lines
    assert "HealthCheckInterval=60" in plan_install(Path("/opt/g"), {}, interval=60).conf_lines
    kept = plan_install(Path("/opt/g"), {"healthcheckinterval": "120"}).conf_lines
    assert "# HealthCheckInterval=120 (the site's value): unchanged" in kept


def test_a_dcgm_test_without_per_gpu_results_takes_its_summary():
    from gpunode.diag import dcgm

    def one(test: dict):
        doc = {"DCGM Diagnostic": {"test_categories": [{"category": "Integration", "tests": [{"name": "PCIe", **test}]}]}}
        return [(r.gpu, r.status) for r in dcgm.parse(json.dumps(doc))[0]]

    assert one({"test_summary": {"status": "Pass"}}) == [(None, "PASS")]
    assert one({"test_summary": {"status": "Fail"}}) == [(None, "FAIL")]
    assert one({"test_summary": "Pass"}) == [(None, "ERROR")]


def test_ratios_of_figures_below_one_are_still_ratios():
    from gpunode.history.trend import ratio

    assert ratio(0.5, 1.0, False) == 0.5 and ratio(10.0, 0.5, False) == 20.0


def test_slurm_install_refuses_a_config_the_hooks_could_not_load(tmp_path):
    from gpunode.slurm.install import check_hook_values

    bad = tmp_path / "config.yaml"
    bad.write_text("gate: [unclosed\n")
    with pytest.raises(ValueError):
        check_hook_values(str(bad), None, None)


def test_a_folded_row_is_its_key_then_one_line_per_other_column():
    import io

    from rich.console import Console

    from gpunode.layout import Col, show

    buf = io.StringIO()
    console = Console(file=buf, width=80, force_terminal=True, color_system=None)
    show(console, "T", [Col("check", whole=True), Col("status")], [["gpu.ecc", "PASS"], ["gpu.xid", ""]], fmt="table")
    assert buf.getvalue() == "T\ngpu.ecc\n    status: PASS\ngpu.xid\n"
