"""load_findings names every finding of a bad window, most telling first: throttling, the clock
and power floors, interference, then the errors (pinned when it was split into one helper per
finding, issue 21)."""

from gpunode.diag.verdicts import Floors, load_findings

FLOORS = Floors(sm_clock_min_mhz=1700, power_min_ratio=0.9, source="t")
BAD = {"clock_events": ["hw_slowdown"], "sm_clock_mhz": {"median": 1500}, "power_w": {"max": 500}, "power_limit_w": 700,
       "foreign_processes": [{"pid": 9, "name": "python3"}], "xid": [{"xid": 79}]}


def test_every_finding_in_its_place():
    assert [(f.status, f.kind, f.text) for f in load_findings(BAD, FLOORS, full_load=True)] == [
        ("FAIL", "throttle", "slowed down under load: hw_slowdown"),
        ("FAIL", "clocks", "SM clock 1500 MHz (median) under full load, below the 1700 MHz floor"),
        ("WARN", "power", "power peaked at 500 W, never reaching 90% of its 700 W limit"),
        ("WARN", "interference", "not trustworthy: another process used the GPU: pid 9 (python3)"),
        ("FAIL", "errors", "Xid event(s) during the run: 79")]
    assert [f.kind for f in load_findings(BAD, FLOORS, full_load=False)] == ["throttle", "interference", "errors"]
