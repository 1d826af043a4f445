"""PCIe link and NVLink/fabric checks on the real H100 inventory and HGX variants of it."""

import pytest
from gpu_fixtures import broken_gpu, by_subject, change, h100, hgx, make_host, nvlinks, only

from gpunode.checks import nvlink as N
from gpunode.checks import pcie as P
from gpunode.checks.gpu_common import is_busy
from testkit import run, statuses

IDLE, BUSY = 0x1, 0x0  # clock event masks: the real idle H100 reports gpu_idle while in P0


# --- pcie.link --------------------------------------------------------------------------


def test_pcie_full_link_passes(tmp_path):
    r = only(run(P.pcie_link, make_host(tmp_path, h100())))
    assert r.status.value == "PASS" and r.observed == "Gen5 x16" and r.expected == "Gen5 x16"


def test_pcie_narrow_link_fails(tmp_path):
    inv = change(hgx(), 4, pcie_width_current=8)
    results = by_subject(run(P.pcie_link, make_host(tmp_path, inv)))
    assert results["GPU4"].status.value == "FAIL" and "x8 of x16" in results["GPU4"].message
    assert results["GPU3"].status.value == "PASS"


def test_pcie_slow_link_when_idle_is_power_saving(tmp_path):
    r = only(run(P.pcie_link, make_host(tmp_path, change(h100(), pcie_gen_current=1, clock_event_reasons=IDLE))))
    assert r.status.value == "PASS" and "normal power saving" in r.message


def test_pcie_slow_link_when_busy_fails(tmp_path):
    inv = change(h100(), pcie_gen_current=3, clock_event_reasons=BUSY, performance_state=0)
    r = only(run(P.pcie_link, make_host(tmp_path, inv)))
    assert r.status.value == "FAIL" and "Gen3 of Gen5 while the GPU is busy" in r.message


def test_pcie_slot_slower_than_the_gpu_warns(tmp_path):
    inv = change(h100(), pcie_gen_current=4, pcie_gen_max=4, pcie_gen_gpu_max=5, clock_event_reasons=BUSY)
    r = only(run(P.pcie_link, make_host(tmp_path, inv)))
    assert r.status.value == "WARN" and "slot limits the link to Gen4" in r.message


def test_pcie_unknown_skips(tmp_path):
    inv = change(h100(), pcie_gen_current=None, pcie_width_current=None)
    assert statuses(run(P.pcie_link, make_host(tmp_path, inv))) == ["SKIP"]


def test_pcie_field_error_errors_that_gpu(tmp_path):
    inv = change(hgx(2), 1, field_errors={"pcie_width_current": "GPU is lost"})
    results = by_subject(run(P.pcie_link, make_host(tmp_path, inv)))
    assert statuses([results["GPU0"], results["GPU1"]]) == ["PASS", "ERROR"]


def test_busy_means_p0_without_the_idle_event():
    real = h100().gpus[0]
    assert not is_busy(real)  # the recorded idle H100: P0, gpu_idle
    assert is_busy(change(h100(), clock_event_reasons=0x4).gpus[0])
    assert not is_busy(change(h100(), clock_event_reasons=0, performance_state=8).gpus[0])


# --- pcie.replay ------------------------------------------------------------------------


def test_replay_real_count_passes(tmp_path):
    r = only(run(P.pcie_replay, make_host(tmp_path, h100())))  # the lent H100 reports 2
    assert r.status.value == "PASS" and r.observed["replays"] == 2


def test_replay_rate_over_limit_warns(tmp_path):
    # 1 h of uptime: 8/min allows 480.
    inv = change(h100(), pcie_replay_counter=5000)
    r = only(run(P.pcie_replay, make_host(tmp_path, inv, uptime="3600.0 7000.0\n")))
    assert r.status.value == "WARN" and "83.3 per minute" in r.message


def test_replay_rate_under_limit_over_long_uptime_passes(tmp_path):
    inv = change(h100(), pcie_replay_counter=5000)
    assert statuses(run(P.pcie_replay, make_host(tmp_path, inv))) == ["PASS"]  # one day


def test_replay_without_uptime_is_judged_strictly(tmp_path):
    assert statuses(run(P.pcie_replay, make_host(tmp_path / "a", h100(), uptime=None))) == ["PASS"]
    inv = change(h100(), pcie_replay_counter=9)
    r = only(run(P.pcie_replay, make_host(tmp_path / "b", inv, uptime=None)))
    assert r.status.value == "WARN" and "uptime unknown" in r.message


# --- nvlink.state -----------------------------------------------------------------------


def test_nvlink_none_on_the_vm_skips(tmp_path):
    r = only(run(N.nvlink_state, make_host(tmp_path, h100())))
    assert r.status.value == "SKIP" and "no NVLink" in r.message


def test_nvlink_all_active_pass(tmp_path):
    results = run(N.nvlink_state, make_host(tmp_path, hgx()))
    assert statuses(results) == ["PASS"] * 8 and "all 18 NVLinks active (NVLink 4)" in results[0].message


def test_nvlink_inactive_link_fails(tmp_path):
    links = nvlinks()
    links[7].active = False
    links[11].active = False
    results = by_subject(run(N.nvlink_state, make_host(tmp_path, change(hgx(), 6, nvlinks=links))))
    assert results["GPU6"].status.value == "FAIL" and "2 of 18 NVLinks inactive: link(s) 7, 11" in results["GPU6"].message
    assert results["GPU5"].status.value == "PASS"


def test_nvlink_fewer_links_than_siblings_fails(tmp_path):
    results = by_subject(run(N.nvlink_state, make_host(tmp_path, change(hgx(), 2, nvlinks=nvlinks(12)))))
    assert results["GPU2"].status.value == "FAIL" and "12 NVLinks, other" in results["GPU2"].message


def test_nvlink_none_while_siblings_have_them_fails(tmp_path):
    results = by_subject(run(N.nvlink_state, make_host(tmp_path, change(hgx(), 3, nvlinks=[]))))
    assert results["GPU3"].status.value == "FAIL" and "reports no NVLink" in results["GPU3"].message


def test_nvlink_all_down_on_an_nvswitch_system_fails(tmp_path):
    inv = hgx()
    for g in inv.gpus:
        g.nvlinks = nvlinks(active=False)
    results = run(N.nvlink_state, make_host(tmp_path, inv))  # fabric state says NVSwitch
    assert statuses(results) == ["FAIL"] * 8


def test_nvlink_pcie_cards_without_bridges_skip(tmp_path):
    inv = hgx(4, fabric=False)
    for g in inv.gpus:
        g.nvlinks = nvlinks(active=False)
    r = only(run(N.nvlink_state, make_host(tmp_path, inv)))
    assert r.status.value == "SKIP" and "no NVLink bridge" in r.message


def test_nvlink_unbridged_pair_next_to_a_bridged_pair_warns(tmp_path):
    inv = hgx(4, fabric=False)
    for g in inv.gpus[2:]:
        g.nvlinks = nvlinks(active=False)
    results = by_subject(run(N.nvlink_state, make_host(tmp_path, inv)))
    assert [results[f"GPU{i}"].status.value for i in range(4)] == ["PASS", "PASS", "WARN", "WARN"]


def test_nvlink_read_error_errors_that_gpu(tmp_path):
    inv = change(hgx(), 1, nvlinks=nvlinks(3), field_errors={"nvlink3": "Unknown Error"})
    results = by_subject(run(N.nvlink_state, make_host(tmp_path, inv)))
    assert results["GPU1"].status.value == "ERROR" and "nvlink3" in results["GPU1"].message


def test_nvlink_broken_gpu_errors_others_judged(tmp_path):
    results = by_subject(run(N.nvlink_state, make_host(tmp_path, broken_gpu(hgx(), 0))))
    assert results["GPU0"].status.value == "ERROR" and results["GPU7"].status.value == "PASS"


# --- nvlink.errors ----------------------------------------------------------------------


def test_nvlink_errors_quiet_pass(tmp_path):
    assert statuses(run(N.nvlink_errors, make_host(tmp_path, hgx()))) == ["PASS"] * 8


def test_nvlink_replay_errors_warn(tmp_path):
    links = nvlinks()
    links[3].replay_errors = 5
    links[9].recovery_errors = 1
    results = by_subject(run(N.nvlink_errors, make_host(tmp_path, change(hgx(), 4, nvlinks=links))))
    r = results["GPU4"]
    assert r.status.value == "WARN" and "link 3: 5 replay" in r.message and "link 9: 0 replay, 1 recovery" in r.message
    assert r.observed["replay"] == 5 and r.observed["recovery"] == 1


def test_nvlink_few_crc_errors_pass_with_a_note(tmp_path):
    inv = change(hgx(1), 0, nvlinks=nvlinks(crc_flit_errors=100))
    r = only(run(N.nvlink_errors, make_host(tmp_path, inv)))
    assert r.status.value == "PASS" and "1800 CRC errors" in r.message


def test_nvlink_crc_storm_warns(tmp_path):
    inv = change(hgx(1), 0, nvlinks=nvlinks(crc_data_errors=10**6))
    r = only(run(N.nvlink_errors, make_host(tmp_path, inv, uptime="3600.0 7000.0\n")))
    assert r.status.value == "WARN" and "per second" in r.message


def test_nvlink_errors_without_nvlink_skip(tmp_path):
    assert statuses(run(N.nvlink_errors, make_host(tmp_path, h100()))) == ["SKIP"]


# --- nvlink.fabric -----------------------------------------------------------------------------


def test_fabric_no_nvswitch_skips(tmp_path):
    r = only(run(N.fabric, make_host(tmp_path, h100())))  # the real VM: fabric not_supported
    assert r.status.value == "SKIP" and "no NVSwitch" in r.message


def test_fabric_completed_passes(tmp_path):
    assert statuses(run(N.fabric, make_host(tmp_path, hgx()))) == ["PASS"] * 8


@pytest.mark.parametrize("state, status, word", [
    ("in_progress", "success", "in progress"),
    ("not_started", "success", "not registered"),
    ("completed", "nvml_error_999", "nvml_error_999"),
])
def test_fabric_not_done_fails(tmp_path, state, status, word):
    inv = change(hgx(), 5, fabric_state=state, fabric_status=status)
    results = by_subject(run(N.fabric, make_host(tmp_path, inv)))
    assert results["GPU5"].status.value == "FAIL" and word in results["GPU5"].message
    assert results["GPU4"].status.value == "PASS"


def test_fabric_nvswitch_device_nodes_but_no_fabric_info_skip_per_gpu(tmp_path):
    # An A100 HGX: NVSwitches in /dev, NVML has no fabric state (pre-Hopper).
    inv = hgx(2, fabric=False)
    for g in inv.gpus:
        g.fabric_state, g.fabric_status = None, None
    host = make_host(tmp_path, inv, files={"/dev/nvidia-nvswitch0": "", "/dev/nvidia-nvswitchctl": ""})
    results = run(N.fabric, host)
    assert statuses(results) == ["SKIP", "SKIP"] and "before Hopper" in results[0].message


def test_fabric_read_error_errors_that_gpu(tmp_path):
    inv = change(hgx(), 7, fabric_state=None, field_errors={"fabric": "Unknown Error"})
    results = by_subject(run(N.fabric, make_host(tmp_path, inv)))
    assert results["GPU7"].status.value == "ERROR" and results["GPU0"].status.value == "PASS"


# --- limits at their edge, and counters judged against the last audit (mutation survivors) ---


def audit_twice(check, first_inv, second_inv, tmp_path, uptime="3600.00 7000.00\n"):
    """Judge first_inv, keep its counter readings, then judge second_inv an hour later."""
    from dataclasses import replace

    from gpunode.audit.context import AuditContext
    from gpunode.audit.counters import CounterStore
    from gpunode.audit.engine import run_checks
    from gpunode.tune.profiles import load_profile

    results = []
    for name, inv, hours in (("a", first_inv, 0.0), ("b", second_inv, 1.0)):
        host = make_host(tmp_path / name, inv, uptime=uptime)
        host = replace(host, facts=replace(host.facts, now=host.facts.now + hours * 3600.0))
        ctx = AuditContext(host=host, profile=load_profile("training"),
                           counters=CounterStore.load(tmp_path / "state", host))
        results.append(run_checks([check], ctx))
        assert ctx.counters.save() is None
    return results


def test_replay_rate_at_the_limit_passes(tmp_path):
    # NVIDIA's limit is a maximum: 480 replays in one hour is 8.0 per minute, not over it.
    inv = change(h100(), pcie_replay_counter=480)
    r = only(run(P.pcie_replay, make_host(tmp_path, inv, uptime="3600.0 7000.0\n")))
    assert r.status.value == "PASS" and "480 replays over 1.0 h of uptime" in r.message


def test_replay_observed_rate_and_what_it_was_counted_over(tmp_path):
    r = only(run(P.pcie_replay, make_host(tmp_path / "a", h100())))  # 2 replays in a day of uptime
    assert r.observed == {"replays": 2, "counted": 2, "per_minute": 0.001, "since_last_audit": False}
    first, second = audit_twice(P.pcie_replay, change(h100(), pcie_replay_counter=100),
                                change(h100(), pcie_replay_counter=160), tmp_path / "b")
    assert only(first).observed["since_last_audit"] is False
    r = only(second)
    assert r.status.value == "PASS" and "60 replays in 1.0 h since the last audit (160 since the driver loaded)" in r.message
    assert r.observed == {"replays": 160, "counted": 60, "per_minute": 1.0, "since_last_audit": True}


def test_nvlink_errors_that_stopped_growing_pass_on_the_next_audit(tmp_path):
    links = nvlinks()
    links[3].replay_errors = 5
    inv = change(hgx(1), 0, nvlinks=links)
    first, second = audit_twice(N.nvlink_errors, inv, inv, tmp_path)
    r = only(first)  # no earlier reading: judged on the counts since the driver loaded
    assert r.status.value == "WARN" and "NVLink errors since the driver loaded (no earlier reading): link 3: 5 replay" \
        in r.message
    assert r.observed["replay"] == 5 and r.observed["since_last_audit"] is None
    r = only(second)  # none grew since
    assert r.status.value == "PASS" and "no replay or recovery errors on 18 links in 1.0 h since the last audit" \
        in r.message
    assert r.observed["replay"] == 5
    assert r.observed["since_last_audit"] == {"replay": 0, "recovery": 0, "crc_flit": 0, "crc_data": 0}


def test_nvlink_crc_rate_at_the_concern_line_warns(tmp_path):
    # DCGM: CRC errors matter at 100+ per second. 18 links x 20000 in one hour of uptime: 100/s exactly.
    inv = change(hgx(1), 0, nvlinks=nvlinks(crc_flit_errors=20000))
    r = only(run(N.nvlink_errors, make_host(tmp_path, inv, uptime="3600.0 7000.0\n")))
    assert r.status.value == "WARN" and "360000 CRC errors since the driver loaded" in r.message \
        and "100 per second" in r.message
