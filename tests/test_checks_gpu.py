"""GPU checks (checks/gpu.py) on the real H100 NVML inventory and 8-GPU variants of it."""

from dataclasses import replace

import pytest
from gpu_fixtures import broken_gpu, by_subject, change, h100, hgx, make_host, only

from gpunode.checks import gpu as G
from gpunode.checks import static_checks
from gpunode.config import Config
from gpunode.host.gpu.model import GpuInventory, GpuProcess
from gpunode.host.gpu.source import GpuSource
from gpunode.host.runner import ReplayRunner
from gpunode.host.seam import Facts, Host
from testkit import NOW, run, statuses, tree_host

GPU_CHECKS = [c for c in static_checks() if c.id.startswith("gpu.")]
# Checks that judge each GPU on its own (one result per GPU).
PER_GPU = [G.ecc_uncorrectable, G.memory_remap, G.throttle, G.clocks, G.temperature, G.power, G.processes]
GiB = 1 << 30


class HungSource(GpuSource):
    """NVML that never answers, as LiveGpuSource reports it."""

    def inventory(self, timeout=None):
        raise TimeoutError(f"NVML did not answer within {timeout or 8.0:.1f}s")


def hung_host(tmp_path, pci=()):
    host = make_host(tmp_path, None, pci=list(pci))
    return Host(sys=host.sys, gpu=HungSource(), runner=ReplayRunner(),
                facts=Facts(is_root=True, hostname="t", now=NOW, live=False))


def test_the_real_h100_passes_every_gpu_check(tmp_path):
    host = make_host(tmp_path, h100())
    for c in GPU_CHECKS:
        if c.id == "gpu.xid":
            continue  # needs a kernel log: tests/test_checks_xid.py
        for r in run(c, host, config=Config(expected_gpus=1)):
            assert r.status.value in ("PASS", "SKIP"), (c.id, r.subject, r.message)


@pytest.mark.parametrize("c", GPU_CHECKS, ids=lambda c: c.id)
def test_no_driver_skips_every_gpu_check(tmp_path, c):
    results = run(c, tree_host(tmp_path))  # no inventory, no NVIDIA device on the PCI bus
    assert statuses(results) == ["SKIP"]
    assert "no NVIDIA driver/NVML" in results[0].message


@pytest.mark.parametrize("c", PER_GPU, ids=lambda c: c.id)
def test_a_gpu_nvml_cannot_open_errors_alone(tmp_path, c):
    results = by_subject(run(c, make_host(tmp_path, broken_gpu(hgx(), 3))))
    assert results["GPU3"].status.value == "ERROR" and "cannot open GPU 3" in results["GPU3"].message
    assert {r.status.value for s, r in results.items() if s != "GPU3"} == {"PASS"}
    assert len(results) == 8


@pytest.mark.parametrize("c, field", [
    (G.ecc_uncorrectable, "ecc_uncorrected_volatile"),
    (G.memory_remap, "remapped_rows"),
    (G.throttle, "clock_event_reasons"),
    (G.clocks, "sm_app_clock_mhz"),
    (G.temperature, "temperature_c"),
    (G.power, "power_usage_w"),
    (G.processes, "processes_compute"),
    (G.processes, "memory"),
], ids=lambda v: getattr(v, "id", v))
def test_a_field_nvml_failed_to_read_errors_that_gpu(tmp_path, c, field):
    inv = change(hgx(), 5, field_errors={field: "Unknown Error"})
    results = by_subject(run(c, make_host(tmp_path, inv)))
    assert results["GPU5"].status.value == "ERROR"
    assert "Unknown Error" in results["GPU5"].message
    assert {r.status.value for s, r in results.items() if s != "GPU5"} == {"PASS"}


@pytest.mark.parametrize("c", PER_GPU, ids=lambda c: c.id)
def test_hung_nvml_is_an_error_not_a_pass(tmp_path, c):
    r = only(run(c, hung_host(tmp_path)))
    assert r.status.value == "ERROR" and "NVML hung" in r.message


# --- gpu.nvml -------------------------------------------------------------------------------


def test_nvml_answers(tmp_path):
    r = only(run(G.nvml_responsive, make_host(tmp_path, h100())))
    assert r.status.value == "PASS" and "580.159.04" in r.message and r.subject == "GPU0"


def test_nvml_missing_while_a_gpu_is_on_the_pci_bus_fails(tmp_path):
    inv = GpuInventory(available=False, error="no NVIDIA driver/NVML: NVML Shared Library Not Found")
    r = only(run(G.nvml_responsive, make_host(tmp_path, inv, pci=["0000:18:00.0"])))
    assert r.status.value == "FAIL"
    assert "Shared Library Not Found" in r.message and "0000:18:00.0" in r.message


def test_nvml_ignores_nvswitch_audio_and_other_vendors(tmp_path):
    # make_host always adds an NVSwitch bridge, an NVIDIA audio function and a NIC.
    r = only(run(G.nvml_responsive, make_host(tmp_path, GpuInventory(available=False, error="no NVIDIA driver/NVML"))))
    assert r.status.value == "SKIP" and "no NVIDIA GPU on the PCI bus" in r.message


def test_nvml_hung_fails(tmp_path):
    r = only(run(G.nvml_responsive, hung_host(tmp_path, ["0000:18:00.0"])))
    assert r.status.value == "FAIL" and "NVML hung" in r.message and "within 8.0s" in r.message


def test_nvml_finds_no_gpu_but_the_bus_has_one(tmp_path):
    inv = replace(h100(), gpus=[])
    r = only(run(G.nvml_responsive, make_host(tmp_path, inv, pci=["0000:00:06.0"])))
    assert r.status.value == "FAIL" and "finds no GPU" in r.message


def test_nvml_cannot_open_one_gpu(tmp_path):
    results = by_subject(run(G.nvml_responsive, make_host(tmp_path, broken_gpu(hgx(), 2))))
    assert results["GPU2"].status.value == "FAIL" and "cannot open" in results["GPU2"].message
    assert statuses([results["GPU0"], results["GPU7"]]) == ["PASS", "PASS"]


# --- gpu.driver -----------------------------------------------------------------------------


@pytest.mark.parametrize("version, pin, matches", [
    ("580.159.04", "580.159.04", True),
    ("580.159.04", "580.", True),
    ("580.159.04", "580.*", True),
    ("580.159.04", "580", True),
    ("5800.1", "580", False),
    ("580.159.04", "580.159", True),
    ("580.159.04", "580.15", False),
    ("580.159.04", "575.", False),
    ("13.0", "13.0", True),
    ("13.0", "12.", False),
])
def test_pin_matches(version, pin, matches):
    assert G.pin_matches(version, pin) is matches


def test_driver_without_pins_passes(tmp_path):
    r = only(run(G.driver_version, make_host(tmp_path, h100())))
    assert r.status.value == "PASS" and "no pin set" in r.message


def test_driver_matching_pins_pass(tmp_path):
    cfg = Config(driver_pin="580.", cuda_pin="13.0")
    assert statuses(run(G.driver_version, make_host(tmp_path, h100()), config=cfg)) == ["PASS"]


def test_driver_off_pin_warns(tmp_path):
    cfg = Config(driver_pin="575.", cuda_pin="12.")
    r = only(run(G.driver_version, make_host(tmp_path, h100()), config=cfg))
    assert r.status.value == "WARN"
    assert "driver 580.159.04 does not match pin 575." in r.message and "CUDA driver 13.0" in r.message


# --- gpu.count ------------------------------------------------------------------------------


def test_count_as_expected(tmp_path):
    r = only(run(G.gpu_count, make_host(tmp_path, hgx()), config=Config(expected_gpus=8)))
    assert r.status.value == "PASS" and r.observed == {"nvml": 8, "usable": 8, "pci": 8}


def test_count_below_expected_fails(tmp_path):
    r = only(run(G.gpu_count, make_host(tmp_path, h100()), config=Config(expected_gpus=8)))
    assert r.status.value == "FAIL" and "1 usable GPU(s), expected 8" in r.message


def test_count_a_gpu_fell_off_the_bus(tmp_path):
    inv = hgx()
    pci = [g.sysfs_bdf for g in inv.gpus]
    inv = replace(inv, gpus=inv.gpus[:7])  # NVML lost 0000:db:00.0, sysfs still shows it
    r = only(run(G.gpu_count, make_host(tmp_path, inv, pci=pci)))
    assert r.status.value == "FAIL" and "NVML lacks 0000:db:00.0" in r.message


def test_count_a_gpu_nvml_cannot_open_fails(tmp_path):
    r = only(run(G.gpu_count, make_host(tmp_path, broken_gpu(hgx(), 4)), config=Config(expected_gpus=8)))
    assert r.status.value == "FAIL" and "cannot open GPU4" in r.message and "7 usable" in r.message


def test_count_no_driver_while_the_pci_bus_shows_gpus_fails(tmp_path):
    r = only(run(G.gpu_count, make_host(tmp_path, None, pci=[g.sysfs_bdf for g in hgx().gpus[:2]])))
    assert r.status.value == "FAIL" and r.message.endswith("while the PCI bus shows 2") and r.expected == 2


def test_count_a_gpu_listed_twice_does_not_stand_in_for_a_missing_one(tmp_path):
    inv = hgx()
    twice = replace(inv, gpus=[*inv.gpus[:7], replace(inv.gpus[0], index=7)])  # 0000:db:00.0 lost, GPU0 twice
    r = only(run(G.gpu_count, make_host(tmp_path, twice, pci=[g.sysfs_bdf for g in inv.gpus]),
                 config=Config(expected_gpus=8)))
    assert r.status.value == "FAIL" and r.observed == {"nvml": 8, "usable": 7, "pci": 8}
    assert r.message == ("the PCI bus shows 8 NVIDIA GPUs but NVML lacks 0000:db:00.0; GPU7 is GPU0 again "
                         "(same UUID); 7 usable GPU(s), expected 8")


def test_count_without_expectation_compares_with_pci(tmp_path):
    assert statuses(run(G.gpu_count, make_host(tmp_path / "a", hgx()))) == ["PASS"]
    r = only(run(G.gpu_count, make_host(tmp_path / "b", h100(), pci=[])))
    assert r.status.value == "SKIP" and "no expected_gpus" in r.message


def test_count_more_than_expected_warns(tmp_path):
    r = only(run(G.gpu_count, make_host(tmp_path, hgx()), config=Config(expected_gpus=4)))
    assert r.status.value == "WARN"


def test_count_no_driver_but_gpus_expected_fails(tmp_path):
    r = only(run(G.gpu_count, tree_host(tmp_path), config=Config(expected_gpus=8)))
    assert r.status.value == "FAIL" and "0 GPUs usable" in r.message


def test_count_hung_nvml_fails(tmp_path):
    r = only(run(G.gpu_count, hung_host(tmp_path, ["0000:18:00.0"])))
    assert r.status.value == "FAIL" and "NVML hung" in r.message


# --- gpu.ecc.uncorrectable ------------------------------------------------------------------


def test_ecc_volatile_uncorrectable_fails(tmp_path):
    inv = change(hgx(), 6, ecc_uncorrected_volatile=2, ecc_uncorrected_aggregate=2)
    results = by_subject(run(G.ecc_uncorrectable, make_host(tmp_path, inv)))
    assert results["GPU6"].status.value == "FAIL" and "2 uncorrectable" in results["GPU6"].message
    assert results["GPU0"].status.value == "PASS"


def test_ecc_only_aggregate_warns(tmp_path):
    r = only(run(G.ecc_uncorrectable, make_host(tmp_path, change(h100(), ecc_uncorrected_aggregate=3))))
    assert r.status.value == "WARN" and "3 uncorrectable over the GPU's life" in r.message


def test_ecc_off_skips(tmp_path):
    inv = change(h100(), ecc_mode_current=False, ecc_uncorrected_volatile=None, ecc_uncorrected_aggregate=None)
    r = only(run(G.ecc_uncorrectable, make_host(tmp_path, inv)))
    assert r.status.value == "SKIP" and "gpu.ecc_mode" in r.message


# --- gpu.memory.remap -----------------------------------------------------------------------


def test_remap_pending_fails(tmp_path):
    inv = change(h100(), remap_pending=True, remap_uncorrectable=1)
    r = only(run(G.memory_remap, make_host(tmp_path, inv)))
    assert r.status.value == "FAIL" and "pending" in r.message and r.observed["uncorrectable"] == 1


def test_remap_failure_fails(tmp_path):
    r = only(run(G.memory_remap, make_host(tmp_path, change(h100(), remap_failure=True))))
    assert r.status.value == "FAIL" and "no spare rows" in r.message


def test_remapped_rows_without_pending_pass(tmp_path):
    r = only(run(G.memory_remap, make_host(tmp_path, change(h100(), remap_correctable=3, remap_uncorrectable=1))))
    assert r.status.value == "PASS" and "3 correctable, 1 uncorrectable" in r.message


def pre_ampere(**pages):
    base = dict(remap_correctable=None, remap_uncorrectable=None, remap_pending=None, remap_failure=None,
                retired_pages_sbe=0, retired_pages_dbe=0, retired_pages_pending=False)
    return change(h100(), **{**base, **pages})


@pytest.mark.parametrize("pages, status", [
    ({}, "PASS"),
    ({"retired_pages_sbe": 10, "retired_pages_dbe": 4}, "PASS"),
    ({"retired_pages_sbe": 10, "retired_pages_dbe": 5}, "WARN"),
    ({"retired_pages_sbe": 40, "retired_pages_dbe": 20}, "FAIL"),
    ({"retired_pages_pending": True}, "FAIL"),
])
def test_retired_pages_before_ampere(tmp_path, pages, status):
    assert statuses(run(G.memory_remap, make_host(tmp_path, pre_ampere(**pages)))) == [status]


def test_remap_unsupported_skips(tmp_path):
    inv = pre_ampere(retired_pages_sbe=None, retired_pages_dbe=None, retired_pages_pending=None)
    assert statuses(run(G.memory_remap, make_host(tmp_path, inv))) == ["SKIP"]


# --- gpu.throttle ---------------------------------------------------------------------------


@pytest.mark.parametrize("mask, status, word", [
    (0x0, "PASS", "no clock event"),
    (0x1, "PASS", "gpu_idle"),
    (0x4, "PASS", "sw_power_cap"),
    (0x2 | 0x10, "PASS", "sync_boost"),
    (0x8, "FAIL", "hw_slowdown"),
    (0x8 | 0x40, "FAIL", "hw_thermal_slowdown"),
    (0x8 | 0x80, "FAIL", "hw_power_brake_slowdown"),
    (0x20, "WARN", "sw_thermal_slowdown"),
    (0x1000, "WARN", "0x1000"),
])
def test_throttle_reasons(tmp_path, mask, status, word):
    r = only(run(G.throttle, make_host(tmp_path, change(h100(), clock_event_reasons=mask))))
    assert r.status.value == status and word in r.message


def test_throttle_unknown_skips(tmp_path):
    assert statuses(run(G.throttle, make_host(tmp_path, change(h100(), clock_event_reasons=None)))) == ["SKIP"]


# --- gpu.clocks -----------------------------------------------------------------------------


def test_clocks_locked_low_warns(tmp_path):
    inv = change(hgx(), 1, sm_app_clock_mhz=1410)
    results = by_subject(run(G.clocks, make_host(tmp_path, inv)))
    assert results["GPU1"].status.value == "WARN" and "SM 1410 MHz < default 1980 MHz" in results["GPU1"].message
    assert results["GPU0"].status.value == "PASS"


def test_memory_clock_locked_low_warns(tmp_path):
    r = only(run(G.clocks, make_host(tmp_path, change(h100(), mem_app_clock_mhz=1593))))
    assert r.status.value == "WARN" and "memory 1593 MHz" in r.message


ALL_REASONS = 0x1FF  # what the recorded H100/H200 drivers (580) can report, 0x2 among them


def test_clocks_locked_through_the_user_clocks_reason_warn(tmp_path):
    # nvidia-smi -lgc while applications clocks stay at default: only the event reason shows it.
    inv = change(h100(), clock_event_reasons=0x1 | 0x2, clock_event_reasons_supported=ALL_REASONS)
    r = only(run(G.clocks, make_host(tmp_path, inv)))
    assert r.status.value == "WARN" and "user-defined clocks event reason" in r.message
    assert r.observed["reasons"] == ["gpu_idle", "applications_clocks_setting"]


def test_memory_clock_locked_below_max_in_p0_warns(tmp_path):
    # nvidia-smi -lmc 1593: HBM below its maximum although the GPU is in P0 (the real H100 idles at 2619).
    r = only(run(G.clocks, make_host(tmp_path, change(h100(), mem_clock_mhz=1593))))
    assert r.status.value == "WARN" and "memory at 1593 of 2619 MHz in P0" in r.message
    # Out of P0 memory clocks drop on their own.
    r = only(run(G.clocks, make_host(tmp_path, change(h100(), mem_clock_mhz=405, performance_state=8))))
    assert r.status.value == "PASS"


def test_busy_gpu_below_max_without_a_reason_is_locked(tmp_path):
    busy = change(h100(), clock_event_reasons=0x0, sm_clock_mhz=1095, clock_event_reasons_supported=ALL_REASONS)
    r = only(run(G.clocks, make_host(tmp_path / "a", busy)))
    assert r.status.value == "WARN" and "SM at 1095 of 1980 MHz under load with no power" in r.message
    # The same clock under a power cap is the power limit's doing, judged by gpu.throttle / gpu/power_limit.
    capped = change(h100(), clock_event_reasons=0x4, sm_clock_mhz=1095, clock_event_reasons_supported=ALL_REASONS)
    assert only(run(G.clocks, make_host(tmp_path / "b", capped))).status.value == "PASS"


def test_clocks_unlocked_and_what_an_old_recording_cannot_rule_out(tmp_path):
    r = only(run(G.clocks, make_host(tmp_path / "a", change(h100(), clock_event_reasons_supported=ALL_REASONS))))
    assert r.status.value == "PASS" and "; no locked clocks;" in r.message
    r = only(run(G.clocks, make_host(tmp_path / "b", h100())))  # recorded before the field existed: None
    assert h100().gpus[0].clock_event_reasons_supported is None
    assert r.status.value == "PASS" and "locked clocks not ruled out (NVML's supported clock event reasons not read)" \
        in r.message
    no_user_bit = change(h100(), clock_event_reasons_supported=ALL_REASONS & ~0x2)
    r = only(run(G.clocks, make_host(tmp_path / "c", no_user_bit)))
    assert "this driver does not report user-defined clocks" in r.message
    # Reasons unreadable: applications clocks are still judged, and the lock is said to be unknown.
    failed = change(h100(), clock_event_reasons=None, field_errors={"clock_event_reasons": "Unknown Error"})
    r = only(run(G.clocks, make_host(tmp_path / "d", failed)))
    assert r.status.value == "PASS" and "locked clocks not ruled out (NVML could not read clock_event_reasons: " \
        "Unknown Error)" in r.message
    low = change(h100(), sm_app_clock_mhz=1410, clock_event_reasons=None, field_errors={"clock_event_reasons": "x"})
    assert only(run(G.clocks, make_host(tmp_path / "e", low))).status.value == "WARN"


def test_clocks_unsupported_skip(tmp_path):
    inv = change(h100(), sm_app_clock_mhz=None, mem_app_clock_mhz=None, clock_event_reasons=None, sm_clock_mhz=None)
    assert statuses(run(G.clocks, make_host(tmp_path, inv))) == ["SKIP"]


# --- gpu.temperature ------------------------------------------------------------------------


@pytest.mark.parametrize("temp, status", [(39, "PASS"), (83, "PASS"), (84, "WARN"), (88, "WARN"),
                                          (89, "FAIL"), (93, "FAIL")])
def test_temperature_vs_slowdown(tmp_path, temp, status):
    assert statuses(run(G.temperature, make_host(tmp_path, change(h100(), temperature_c=temp)))) == [status]


def test_temperature_without_threshold_skips(tmp_path):
    r = only(run(G.temperature, make_host(tmp_path, change(h100(), temperature_slowdown_c=None))))
    assert r.status.value == "SKIP" and "39 C" in r.message


# --- gpu.power ------------------------------------------------------------------------------


def test_power_over_the_limit_warns(tmp_path):
    r = only(run(G.power, make_host(tmp_path, change(h100(), power_usage_w=760.0, clock_event_reasons=0))))
    assert r.status.value == "WARN" and "over its enforced limit" in r.message


def test_power_heavy_draw_when_idle_warns(tmp_path):
    r = only(run(G.power, make_host(tmp_path, change(h100(), power_usage_w=420.0))))  # the real mask: gpu_idle
    assert r.status.value == "WARN" and "idle" in r.message


def test_power_heavy_draw_when_busy_passes(tmp_path):
    inv = change(h100(), power_usage_w=690.0, clock_event_reasons=0x4)
    assert statuses(run(G.power, make_host(tmp_path, inv))) == ["PASS"]


# --- gpu.processes --------------------------------------------------------------------------


def test_leftover_process_warns_with_pid_and_name(tmp_path):
    procs = [GpuProcess(pid=4242, kind="compute", used_memory_bytes=10 * GiB, name="python")]
    inv = change(hgx(), 2, processes=procs, memory_used_bytes=10 * GiB + 5 * 2**20)
    results = by_subject(run(G.processes, make_host(tmp_path, inv)))
    r = results["GPU2"]
    assert r.status.value == "WARN" and "pid 4242 (python, compute, 10.0 GiB)" in r.message
    assert r.observed == [{"pid": 4242, "name": "python", "kind": "compute", "memory": "10.0 GiB"}]
    assert results["GPU3"].status.value == "PASS"


def test_memory_in_use_without_a_visible_process_warns(tmp_path):
    r = only(run(G.processes, make_host(tmp_path, change(h100(), memory_used_bytes=20 * GiB))))
    assert r.status.value == "WARN" and "no process is visible" in r.message


def test_small_memory_use_without_process_passes(tmp_path):
    # Older NVML counts the reserved ~0.5 GiB as used.
    assert statuses(run(G.processes, make_host(tmp_path, change(h100(), memory_used_bytes=503316480)))) == ["PASS"]


# --- gpu.vbios ------------------------------------------------------------------------------


def test_vbios_same_everywhere_passes(tmp_path):
    r = only(run(G.vbios, make_host(tmp_path, hgx())))
    assert r.status.value == "PASS" and "8 GPU(s) run VBIOS 96.00.DA.00.0C" in r.message


def test_vbios_mismatch_warns_naming_gpus(tmp_path):
    inv = change(hgx(), 5, vbios_version="96.00.74.00.1A")
    r = only(run(G.vbios, make_host(tmp_path, inv)))
    assert r.status.value == "WARN" and "96.00.74.00.1A on GPU5" in r.message
    assert "GPU0, GPU1, GPU2, GPU3, GPU4, GPU6, GPU7" in r.message


def test_vbios_of_different_models_are_not_compared(tmp_path):
    inv = change(hgx(2), 1, name="NVIDIA H200", board_part_number="699-2G520-0205-000",
                 vbios_version="96.00.9F.00.04")
    assert statuses(run(G.vbios, make_host(tmp_path, inv))) == ["PASS", "PASS"]


def test_vbios_read_error_is_an_error_for_that_gpu(tmp_path):
    inv = change(hgx(2), 1, vbios_version=None, field_errors={"vbios_version": "Unknown Error"})
    results = by_subject(run(G.vbios, make_host(tmp_path, inv)))
    assert results["GPU1"].status.value == "ERROR" and results["NVIDIA H100 80GB HBM3 (695-2G520-0200-000)"].status.value == "PASS"


def test_every_gpu_check_has_remediation_and_a_stable_id():
    for c in GPU_CHECKS:
        assert c.id.startswith("gpu.") and c.remediation, c.id
        assert c.needs_gpu, c.id



# --- what a verdict reports and the rules gpu_common shares (mutation survivors) -------------


def test_count_hung_nvml_reports_no_usable_gpu(tmp_path):
    r = only(run(G.gpu_count, hung_host(tmp_path, ["0000:18:00.0"])))
    assert r.status.value == "FAIL" and r.observed == 0 and r.expected == 1


def test_ecc_volatile_failure_expects_zero(tmp_path):
    inv = change(h100(), ecc_uncorrected_volatile=2, ecc_uncorrected_aggregate=2)
    r = only(run(G.ecc_uncorrectable, make_host(tmp_path, inv)))
    assert r.status.value == "FAIL" and r.observed == {"volatile": 2, "aggregate": 2} and r.expected == 0


@pytest.mark.parametrize("field", ["processes_compute", "processes_graphics", "nvlink3", "nvlink_state"])
def test_a_failed_field_a_check_does_not_need_leaves_its_verdict_alone(tmp_path, field):
    # gpu.temperature reads neither processes nor NVLinks: NVML failing those is not its ERROR.
    r = only(run(G.temperature, make_host(tmp_path, change(h100(), field_errors={field: "Unknown Error"}))))
    assert r.status.value == "PASS" and "below slowdown" in r.message


@pytest.mark.parametrize("used, status", [
    (GiB, "PASS"),  # exactly the 1 GiB allowance: not more than it
    (GiB + 1, "WARN"),
    (3 * GiB // 2, "WARN"),  # 1.5 GiB: over 1 GiB, the allowance is not 2 GiB
])
def test_leftover_memory_allowance_is_one_gib(tmp_path, used, status):
    r = only(run(G.processes, make_host(tmp_path, change(h100(), memory_used_bytes=used))))
    assert r.status.value == status
    if status == "WARN":
        assert "no process is visible" in r.message and r.expected == "<= 1.0 GiB"


def test_uptime_is_the_first_field_of_proc_uptime(tmp_path):
    from gpunode.checks import pcie as P
    from gpunode.checks.gpu_common import uptime_s

    # /proc/uptime: seconds since boot, then idle seconds summed over CPUs (here twice as many).
    host = make_host(tmp_path, change(h100(), pcie_replay_counter=500), uptime="3600.00 7200.00\n")
    assert uptime_s(host) == 3600.0
    r = only(run(P.pcie_replay, host))  # 500 replays in one hour: 8.3/min, over 8
    assert r.status.value == "WARN" and "8.3 per minute" in r.message and "over 1.0 h of uptime" in r.message


def test_error_counters_follow_a_renumbered_gpu_by_uuid(tmp_path):
    # A GPU falls off: NVML renumbers the rest, GPU1 becomes GPU0. Its replay count did not grow,
    # so it passes; keyed by label it would be compared with the old GPU0's reading instead.
    from gpunode.audit.context import AuditContext
    from gpunode.audit.counters import CounterStore
    from gpunode.audit.engine import run_checks
    from gpunode.checks import pcie as P
    from gpunode.tune.profiles import load_profile

    before = change(change(hgx(2), 0, pcie_replay_counter=0), 1, pcie_replay_counter=50000)
    after = replace(before, gpus=[replace(before.gpus[1], index=0)])
    state = tmp_path / "state"
    results = []
    for name, inv, now in (("a", before, NOW), ("b", after, NOW + 3600.0)):
        host = make_host(tmp_path / name, inv, uptime="3600.00 7200.00\n")
        host = replace(host, facts=replace(host.facts, now=now))
        ctx = AuditContext(host=host, profile=load_profile("training"), counters=CounterStore.load(state, host))
        results.append(run_checks([P.pcie_replay], ctx))
        assert ctx.counters.save() is None
    assert by_subject(results[0])["GPU1"].status.value == "WARN"  # 50000 in one hour of uptime
    r = only(results[1])
    assert r.subject == "GPU0" and r.status.value == "PASS"
    assert "0 replays in 1.0 h since the last audit (50000 since the driver loaded)" in r.message
