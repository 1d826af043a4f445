"""bench/trust branches no other test reached (pinned when concerns and likely_cause were split
into one helper per finding, issue 21): the exact texts, their order, and what wins."""

from test_bench_trust import QUIET  # the recorded H200 run's telemetry while nothing is wrong

from gpunode.bench import trust


def test_every_concern_at_once_in_order_of_seriousness():
    tel = {"foreign_processes": [{"pid": 7}], "clock_events": ["hw_slowdown"], "ecc_uncorrected_delta": 2,
           "xid": [{"xid": 79}, {"xid": 48}], "remap_failure": True}
    assert [c.to_json() for c in trust.concerns(tel, 0.2, 0.05)] == [
        {"kind": "interference", "text": "foreign process on the GPU: pid 7"},
        {"kind": "throttle", "text": "GPU throttled: hw_slowdown"},
        {"kind": "errors", "text": "2 new uncorrectable ECC error(s); Xid 79, 48; HBM row remapping for uncorrectable errors"},
        {"kind": "unstable", "text": "unstable: CoV 20.0% above the 5.0% bound"}]


def test_row_remapping_alone_is_an_error():
    assert [c.text for c in trust.concerns({"remap_uncorrectable_delta": 1}, None)] == [
        "HBM row remapping for uncorrectable errors"]


def test_likely_cause_names_a_concern_first_then_pcie_then_power():
    assert trust.likely_cause(None) is None
    assert trust.likely_cause({**QUIET, "clock_events": [], "power_w": {"median": 500.0}}) is None
    slow_link = {**QUIET, "pcie": {"gen": 4, "width": 16, "max_gen": 5, "max_width": 16}, "xid": [{"xid": 79}]}
    assert trust.likely_cause(slow_link) == "Xid 79"
    assert trust.likely_cause({**slow_link, "xid": []}) == "PCIe link at Gen4 x16 during the copy (capable of Gen5 x16)"
    assert trust.likely_cause(QUIET) == "power-capped: 690 W of a 700 W limit"
    assert trust.likely_cause({**QUIET, "power_w": {"median": 500.0}}) == "clocks held down by the power cap (sw_power_cap)"
