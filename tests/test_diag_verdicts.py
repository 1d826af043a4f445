"""diag's verdicts on a telemetry summary (diag/verdicts.py), each rule at its edge: pure
functions, so a saved result is judged exactly as a live one."""

from __future__ import annotations

import pytest

from gpunode.diag.verdicts import (
    PCIE_REPLAYS_WARN,
    Floors,
    errors_findings,
    load_findings,
    telemetry_gap,
)
from gpunode.status import worst


def test_worst_orders_pass_skip_warn_error_fail():
    assert worst([]) == "PASS" and worst([], default="SKIP") == "SKIP"
    assert worst(["PASS", "WARN"]) == "WARN" and worst(["WARN", "PASS"]) == "WARN"
    assert worst(["SKIP", "WARN"]) == "WARN"
    assert worst(["WARN", "ERROR"]) == "ERROR" and worst(["ERROR", "WARN"]) == "ERROR"
    assert worst(["ERROR", "FAIL"]) == "FAIL" and worst(["FAIL", "ERROR", "WARN", "PASS"]) == "FAIL"
    assert worst(["PASS", "SKIP"]) in ("PASS", "SKIP")  # equal rank: neither says anything is wrong


def test_floors_from_a_baseline_mapping():
    assert Floors.from_mapping(None) == Floors()
    f = Floors.from_mapping({"sm_clock_min_mhz": 1700, "power_min_ratio": 0.9, "source": 7})
    assert f == Floors(1700, 0.9, "7")


def kinds(findings):
    return [(f.status, f.kind) for f in findings]


def test_new_errors_each_fail_and_a_pending_remap_warns():
    assert errors_findings({}) == []
    assert errors_findings({"ecc_uncorrected_delta": 0, "remap_uncorrectable_delta": 0, "xid": [],
                            "remap_failure": False, "remap_pending": False, "pcie_replay_delta": 0}) == []
    ecc = errors_findings({"ecc_uncorrected_delta": 1})
    assert kinds(ecc) == [("FAIL", "errors")] and "1 new uncorrectable" in ecc[0].text
    xid = errors_findings({"xid": [{"xid": 79}, "junk", {"xid": 48}]})
    assert kinds(xid) == [("FAIL", "errors")] and xid[0].text.endswith("79, 48")
    assert kinds(errors_findings({"xid": ["junk"]})) == []
    assert kinds(errors_findings({"remap_failure": True})) == [("FAIL", "errors")]
    remapped = errors_findings({"remap_uncorrectable_delta": 1})
    assert kinds(remapped) == [("FAIL", "errors")] and "1 row(s) newly remapped" in remapped[0].text
    assert kinds(errors_findings({"remap_pending": True})) == [("WARN", "errors")]


def test_pcie_replays_warn_only_beyond_the_bound():
    assert errors_findings({"pcie_replay_delta": PCIE_REPLAYS_WARN}) == []
    over = errors_findings({"pcie_replay_delta": PCIE_REPLAYS_WARN + 1})
    assert kinds(over) == [("WARN", "pcie")] and f"{PCIE_REPLAYS_WARN + 1} PCIe replays" in over[0].text


def test_throttle_reasons_fail_under_load_others_do_not():
    assert load_findings({"clock_events": ["sw_power_cap", "gpu_idle"]}, Floors(), full_load=True) == []
    found = load_findings({"clock_events": ["sw_power_cap", "hw_slowdown"]}, Floors(), full_load=False)
    assert kinds(found) == [("FAIL", "throttle")] and found[0].text.endswith("hw_slowdown")
    # throttle_events (the summary's own filter) is read first
    assert kinds(load_findings({"throttle_events": ["hw_thermal_slowdown"], "clock_events": []}, Floors(),
                               full_load=False)) == [("FAIL", "throttle")]


FLOORS = Floors(sm_clock_min_mhz=1700, power_min_ratio=0.9, source="t")


@pytest.mark.parametrize(("sm", "status"), [(1699, "FAIL"), (1700, None), (1755, None)])
def test_sm_clock_floor_under_full_load(sm, status):
    tel = {"sm_clock_mhz": {"median": sm}}
    found = kinds(load_findings(tel, FLOORS, full_load=True))
    assert found == ([("FAIL", "clocks")] if status else [])
    assert load_findings(tel, FLOORS, full_load=False) == []  # only judged under full load
    assert load_findings(tel, Floors(), full_load=True) == []  # no floor: not judged


@pytest.mark.parametrize(("power", "status"), [(629, "WARN"), (630, None), (700, None)])
def test_power_share_under_full_load(power, status):
    tel = {"power_w": {"max": power}, "power_limit_w": 700}
    found = load_findings(tel, FLOORS, full_load=True)
    assert kinds(found) == ([("WARN", "power")] if status else [])
    if status:
        assert "never reaching 90% of its 700 W limit" in found[0].text
    assert load_findings(tel, FLOORS, full_load=False) == []
    assert load_findings({"power_w": {"max": 1}, "power_limit_w": 0}, FLOORS, full_load=True) == []
    assert load_findings({"power_w": {"max": 1}, "power_limit_w": 700}, Floors(), full_load=True) == []


def test_a_foreign_process_makes_figures_untrustworthy():
    tel = {"foreign_processes": [{"pid": 1, "name": "a"}, "junk", {"pid": 2}, {"pid": 3, "name": "c"},
                                 {"pid": 4, "name": "d"}]}
    found = load_findings(tel, Floors(), full_load=False)
    assert kinds(found) == [("WARN", "interference")]
    assert found[0].text.endswith("pid 1 (a), pid 2 (?), pid 3 (c)")


def test_load_findings_include_the_error_findings():
    assert kinds(load_findings({"ecc_uncorrected_delta": 2}, Floors(), full_load=False)) == [("FAIL", "errors")]


def test_telemetry_gap():
    assert telemetry_gap({"samples": 10}, []) is None
    assert telemetry_gap({"samples": 10, "read_errors": {"count": 5, "first": "x"}}, []) is None  # half
    most = telemetry_gap({"samples": 10, "read_errors": {"count": 6, "first": "NVML timeout"}}, [])
    assert most is not None and most.status == "ERROR" and "NVML timeout" in most.text
    assert telemetry_gap({"samples": 1, "read_errors": {"first": "x"}}, []) is None  # no count: none failed
    none = telemetry_gap(None, ["no NVML", "no driver"])
    assert none is not None and none.status == "WARN" and none.text.endswith("(no NVML; no driver)")
    assert telemetry_gap({}, []).text.endswith("(no samples)")
