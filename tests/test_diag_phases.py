"""diag's Phase door (issue 21 item 4): the phases are one table, run by level in order, and
`clocks` (the phase added through it) says whether each GPU reached its application SM clock
under full load. Runs on the numpy CPU backend with a replayed telemetry trace."""

from __future__ import annotations

from test_diag_run import Recording, ctx_of

from gpunode.diag.phases import PHASES, clock_result
from gpunode.diag.run import run_diag


def _names(level):
    return [p.name for p in PHASES if p.min_level <= level <= p.max_level]


def test_each_level_runs_its_phases_in_table_order():
    assert _names(1) == ["correctness GEMM"]
    assert _names(2) == ["correctness GEMM", "HBM memory test", "sustained checked GEMM", "clocks"]
    assert _names(3) == ["correctness GEMM", "HBM memory test", "stress", "clocks"]


def tel(median, events=()):
    return {"sm_clock_mhz": {"min": median, "median": median, "max": median}, "clock_events": list(events)}


def test_clock_reached_passes_with_figures():
    r = clock_result(0, 1755, tel(1755))
    assert r.status == "PASS" and r.name == "clocks.load" and r.figures == {
        "sm_clock_mhz": 1755, "app_clock_mhz": 1755, "ratio": 1.0}
    assert clock_result(0, 1755, tel(1680)).status == "PASS"  # a boost bin below: within 5 %


def test_clock_held_low_by_the_power_cap_is_explained():
    r = clock_result(0, 1980, tel(1500, ["sw_power_cap"]))
    assert r.status == "PASS" and "sw_power_cap" in r.message


def test_clock_low_for_no_reason_the_driver_names_warns():
    r = clock_result(3, 1980, tel(1410, ["gpu_idle"]))
    assert r.status == "WARN" and r.gpu == 3 and "locked low" in r.message and r.figures["ratio"] == 0.712


def test_nothing_to_compare_skips():
    assert clock_result(0, None, tel(1755)).status == "SKIP"
    assert clock_result(0, 1755, None).status == "SKIP"
    assert clock_result(0, 1755, {"sm_clock_mhz": {}}).status == "SKIP"


def test_level_2_run_judges_clocks_in_the_load_window():
    ctx = ctx_of(Recording(), 2, gpus=(0, 1))
    ctx.app_clocks = {0: 1755, 1: 1980}  # the replayed trace runs at 1755 MHz under the power cap
    doc = run_diag(ctx)
    clocks = {r.gpu: r for r in doc.results if r.name == "clocks.load"}
    assert clocks[0].status == "PASS" and "reaches" in clocks[0].message
    assert clocks[1].status == "PASS" and "sw_power_cap" in clocks[1].message
    assert [r.name for r in doc.results].index("clocks.load") > [r.name for r in doc.results].index("load.gemm")


def test_level_1_has_no_clock_phase():
    doc = run_diag(ctx_of(Recording(), 1))
    assert not [r for r in doc.results if r.name == "clocks.load"]


def test_a_stop_during_a_phase_runs_no_later_phase():
    ctx = ctx_of(Recording(), 2)

    def progress(text, left):
        if text.startswith("HBM memory test"):
            ctx.stop.set()  # as a caller's stop event lands while the memory test runs

    ctx.progress = progress
    names = [r.name for r in run_diag(ctx).results]
    assert "gemm.correctness" in names and "hbm.memtest" in names
    assert "gemm.sustained" not in names and "clocks.load" not in names
