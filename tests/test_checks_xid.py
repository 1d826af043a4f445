"""The kernel log reader (gpunode.host.facts.kernlog) and the Xid check, on recorded and quoted real logs."""

from datetime import datetime, timezone

import pytest
from gpu_fixtures import KERNLOG, by_subject, change, h100, hgx, make_host, only

from gpunode.checks.xid import parse_events, pci_address, xid_events
from gpunode.config import Config
from gpunode.host.facts import kernlog
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import GpuSource
from gpunode.host.runner import ReplayRunner
from gpunode.host.seam import Host
from testkit import run, statuses

JOURNAL = list(kernlog.JOURNAL_ARGV)
DMESG = list(kernlog.DMESG_ARGV)
# Real answers on a Debian 12 VM: journalctl without journald (rc 0, nothing), dmesg as non-root
# with kernel.dmesg_restrict=1.
NO_JOURNAL = {"rc": 0, "stdout": "", "stderr": ""}
DMESG_DENIED = {"rc": 1, "stdout": "", "stderr": "dmesg: read kernel buffer failed: Operation not permitted\n"}


def fixture(name: str) -> str:
    return (KERNLOG / name).read_text()


def epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def runner(journal=None, dmesg=None) -> ReplayRunner:
    r = ReplayRunner()
    for argv, answer in ((JOURNAL, journal), (DMESG, dmesg)):
        if answer is not None:
            answer = {"rc": 0, "stderr": "", "stdout": answer} if isinstance(answer, str) else answer
            r.add(argv, answer["rc"], answer["stdout"], answer["stderr"])
    return r


# --- reading and parsing the kernel log -----------------------------------------------------


def test_parse_real_journal_short_iso():
    records = kernlog.parse(fixture("journal-debian12.txt"), journal=True)
    assert len(records) == 5
    assert records[0].time == epoch("2026-11-24T00:07:20")
    assert records[0].text == "process_api (1): drop_caches: 10"  # "vm kernel: " removed


def test_parse_real_dmesg_iso():
    records = kernlog.parse(fixture("dmesg-iso-debian12.txt"), journal=False)
    assert len(records) == 70
    assert records[0].text == "rcu: Hierarchical SRCU implementation."
    assert records[0].time == pytest.approx(epoch("2026-11-23T23:51:58") + 0.270578)


@pytest.mark.parametrize("stamp, utc", [
    ("2026-11-22T06:41:02+0000", "2026-11-22T06:41:02"),
    ("2026-11-22T08:41:02+0200", "2026-11-22T06:41:02"),
    ("2026-11-22T01:41:02-05:00", "2026-11-22T06:41:02"),
    ("2026-11-22T06:41:02Z", "2026-11-22T06:41:02"),
])
def test_time_zones(stamp, utc):
    (rec,) = kernlog.parse(f"{stamp} msg\n", journal=False)
    assert rec.time == epoch(utc) and rec.text == "msg"


def test_indented_continuation_lines_join_their_record():
    records = kernlog.parse(fixture("journal-hgx-xid.txt"), journal=True)
    joined = [r.text for r in records if "The NVIDIA GPU 0000:b3:00.0" in r.text]
    assert joined == ["NVRM: The NVIDIA GPU 0000:b3:00.0 NVRM: (PCI ID: 10de:26b5) installed in this system has "
                      "NVRM: fallen off the bus and is not responding to commands."]


def test_lines_without_time_are_kept_with_time_unknown():
    (rec,) = kernlog.parse("[  113.669216] NVRM: GPU Board Serial Number: 1651522000466\n", journal=False)
    assert rec.time is None and "Serial" in rec.text


def test_read_prefers_the_journal_with_a_fixed_argv(tmp_path):
    r = runner(journal=fixture("journal-debian12.txt"))
    log = kernlog.read(make_host(tmp_path, h100(), runner=r))
    assert log.source == "journalctl" and len(log.records) == 5
    assert r.calls == [["journalctl", "-k", "-o", "short-iso", "--no-pager", "-q", "-n", "50000"]]


def test_read_falls_back_to_dmesg_when_the_journal_has_no_kernel_lines(tmp_path):
    r = runner(journal=NO_JOURNAL, dmesg=fixture("dmesg-iso-debian12.txt"))
    log = kernlog.read(make_host(tmp_path, h100(), runner=r))
    assert log.source == "dmesg" and len(log.records) == 70
    assert r.calls == [JOURNAL, ["dmesg", "--time-format=iso"]]


def test_read_denied(tmp_path):
    log = kernlog.read(make_host(tmp_path, h100(), runner=runner(journal=NO_JOURNAL, dmesg=DMESG_DENIED)))
    assert log.source is None and log.denied
    assert log.error == "journalctl: no kernel messages; dmesg: read kernel buffer failed: Operation not permitted"


def test_read_without_either_tool(tmp_path):
    log = kernlog.read(make_host(tmp_path, h100(), runner=ReplayRunner()))
    assert log.source is None and not log.denied
    assert "journalctl" in log.error and "dmesg" in log.error


def test_read_timeout_is_reported(tmp_path):
    r = ReplayRunner()
    r.add(JOURNAL, -9, "", "", timed_out=True)
    r.add(DMESG, -9, "", "", timed_out=True)
    log = kernlog.read(make_host(tmp_path, h100(), runner=r))
    assert log.source is None and "timed out" in log.error


def test_the_log_is_read_once_per_run(tmp_path):
    r = runner(journal=fixture("journal-hgx-xid.txt"))
    host = make_host(tmp_path, hgx(), runner=r)
    run(xid_events, host)
    run(xid_events, host)
    assert r.calls == [JOURNAL]


# --- parsing Xid lines ----------------------------------------------------------------------


@pytest.mark.parametrize("line, address, xid, pid, name", [
    # NVIDIA's Xid documentation example (old driver format, no "PCI:").
    ("NVRM: Xid (0000:03:00): 14, Channel 00000001", "0000:03:00", 14, None, None),
    # open-gpu-kernel-modules#461 (ARM64, domain 0004).
    ("NVRM: Xid (PCI:0004:01:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
     "0004:01:00", 79, None, None),
    ("NVRM: Xid (PCI:0004:01:00): 119, pid=430, name=nv_queue, Timeout waiting for RPC from GSP!",
     "0004:01:00", 119, 430, "nv_queue"),
    # open-gpu-kernel-modules#1030: a newer kernel's caller id before NVRM.
    ("[ T1946] NVRM: Xid (PCI:0000:2b:00): 31, pid=1942, name=llama-bench, channel 0x00000002, intr 00000000.",
     "0000:2b:00", 31, 1942, "llama-bench"),
    # NVIDIA/TensorRT-LLM#4816 (B200, a three-digit Xid).
    ("NVRM: Xid (PCI:0000:5f:00): 145, RLW_REMAP Nonfatal XC0 i0 Link 02", "0000:5f:00", 145, None, None),
])
def test_parse_xid_lines(line, address, xid, pid, name):
    events, unreadable = parse_events(kernlog.parse(f"2026-11-22T10:00:00+0000 h kernel: {line}\n", journal=True))
    assert unreadable == []
    (e,) = events
    assert (e.address, e.xid, e.pid, e.name) == (address, xid, pid, name)


def test_pci_address_forms():
    assert pci_address("00000000:18:00.0") == "0000:18:00"
    assert pci_address("0000:DB:00") == "0000:db:00"


def test_fallen_off_notice_next_to_xid_79_is_one_event():
    events, _ = parse_events(kernlog.parse(fixture("journal-hgx-xid.txt"), journal=True))
    on_2a = [e for e in events if e.address == "0000:2a:00"]
    assert [(e.xid, e.inferred) for e in on_2a] == [(79, False)]
    on_b3 = [e for e in events if e.address == "0000:b3:00"]
    assert [(e.xid, e.inferred) for e in on_b3] == [(79, True)]


# --- the check ------------------------------------------------------------------------------


def test_xid_on_an_hgx_node(tmp_path):
    host = make_host(tmp_path, hgx(), runner=runner(journal=fixture("journal-hgx-xid.txt")))
    results = by_subject(run(xid_events, host))
    got = {s: r.status.value for s, r in results.items()}
    assert got == {
        "GPU0": "PASS",  # Xid 13 + 31: a user program's fault
        "GPU1": "FAIL",  # Xid 79
        "GPU2": "PASS",  # Xid 48 three days ago, outside 24 h
        "GPU3": "FAIL",  # Xid 63 row remap
        "GPU4": "FAIL",  # Xid 74 NVLink
        "GPU5": "WARN",  # Xid 38, not on the critical list
        "GPU6": "PASS",
        "GPU7": "PASS",
        "PCI 0000:b3:00": "FAIL",  # fell off the bus (no Xid line); NVML no longer lists it
        "kernel log": "WARN",  # the line cut inside the PCI address
    }
    assert "only application Xids" in results["GPU0"].message and "pid 108743 python" in results["GPU0"].message
    assert results["GPU1"].observed == {79: 1}
    assert "Xid 79 (GPU has fallen off the bus) x1, last 2026-11-23 06:41:02Z" in results["GPU1"].message
    assert "1 older event(s) outside the window" in results["GPU2"].message
    assert "NVRM: Xid (PCI:0000:db:0" in results["kernel log"].message
    assert "from a 'fallen off the bus' notice" in results["PCI 0000:b3:00"].message


def test_xid_window_is_the_configs(tmp_path):
    host = make_host(tmp_path, hgx(), runner=runner(journal=fixture("journal-hgx-xid.txt")))
    results = by_subject(run(xid_events, host, config=Config(xid_window_hours=96)))
    assert results["GPU2"].status.value == "FAIL" and "double-bit ECC" in results["GPU2"].message


def test_xid_119_storm_on_the_vm_gpu(tmp_path):
    host = make_host(tmp_path, h100(), runner=runner(journal=NO_JOURNAL, dmesg=fixture("dmesg-iso-vm-xid119.txt")))
    r = only(run(xid_events, host))
    assert r.status.value == "FAIL" and r.subject == "GPU0" and r.observed == {119: 4}
    assert "Xid 119 (GSP RPC timeout) x4, last 2026-11-23 21:14:07Z" in r.message and "(last 24 h, dmesg, this boot)" in r.message


def test_xid_storm_outside_a_short_window_passes(tmp_path):
    host = make_host(tmp_path, h100(), runner=runner(journal=NO_JOURNAL, dmesg=fixture("dmesg-iso-vm-xid119.txt")))
    r = only(run(xid_events, host, config=Config(xid_window_hours=1)))
    assert r.status.value == "PASS" and "5 older event(s)" in r.message


@pytest.mark.parametrize("journal, dmesg", [
    (fixture("journal-debian12.txt"), None),
    (NO_JOURNAL, fixture("dmesg-iso-debian12.txt")),
])
def test_xid_clean_real_logs_pass(tmp_path, journal, dmesg):
    r = only(run(xid_events, make_host(tmp_path, h100(), runner=runner(journal, dmesg))))
    assert r.status.value == "PASS" and r.message.startswith("no Xid (last 24 h, ")


def test_xid_log_without_time_counts_as_recent(tmp_path):
    raw = "[  113.669216] NVRM: Xid (PCI:0000:00:06): 119, pid='<unknown>', name=<unknown>, Timeout waiting for RPC from GSP! Expected function FREE (0x0 0x0).\n"
    r = only(run(xid_events, make_host(tmp_path, h100(), runner=runner(journal=NO_JOURNAL, dmesg=raw))))
    assert r.status.value == "FAIL" and "time unknown" in r.message


def test_xid_unreadable_log_needs_root_when_not_root(tmp_path):
    host = make_host(tmp_path, h100(), runner=runner(NO_JOURNAL, DMESG_DENIED), is_root=False)
    r = only(run(xid_events, host))
    assert r.status.value == "SKIP" and r.message.startswith("needs root") and "Operation not permitted" in r.message


def test_xid_unreadable_log_as_root_is_an_error(tmp_path):
    r = only(run(xid_events, make_host(tmp_path, h100(), runner=runner(NO_JOURNAL, DMESG_DENIED))))
    assert r.status.value == "ERROR" and "cannot read the kernel log" in r.message


def test_xid_without_any_log_tool_is_an_error(tmp_path):
    r = only(run(xid_events, make_host(tmp_path, h100(), runner=ReplayRunner())))
    assert r.status.value == "ERROR"


def test_xid_still_judged_when_nvml_is_gone_but_the_bus_shows_the_gpu(tmp_path):
    inv = GpuInventory(available=False, error="no NVIDIA driver/NVML: Driver Not Loaded")
    host = make_host(tmp_path, inv, pci=["0000:2a:00.0", "0000:18:00.0"],
                     runner=runner(journal=fixture("journal-hgx-xid.txt")))
    results = by_subject(run(xid_events, host))
    assert results["PCI 0000:2a:00"].status.value == "FAIL"
    assert results["PCI 0000:18:00"].status.value == "PASS"


class HungSource(GpuSource):
    def inventory(self, timeout=None):
        raise TimeoutError("NVML did not answer within 8.0s")


def test_xid_still_judged_when_nvml_hangs(tmp_path):
    base = make_host(tmp_path, None, pci=["0000:2a:00.0"], runner=runner(journal=fixture("journal-hgx-xid.txt")))
    host = Host(sys=base.sys, gpu=HungSource(), runner=base.runner, facts=base.facts)
    results = by_subject(run(xid_events, host))
    assert results["PCI 0000:2a:00"].status.value == "FAIL"


def test_xid_on_a_host_without_gpus_runs_no_command(tmp_path):
    r = runner(journal=fixture("journal-hgx-xid.txt"))
    host = make_host(tmp_path, None, runner=r)
    assert statuses(run(xid_events, host)) == ["SKIP"]
    assert r.calls == []


def test_event_detail_drops_pid_and_name():
    text = ("2026-11-23T10:00:00+0000 h kernel: NVRM: Xid (PCI:0000:07:00): 48, pid='<unknown>', name=<unknown>, "
            "An uncorrectable double bit error (DBE) has been detected on GPU in the framebuffer at physAddr "
            "0x7fdf0de80 partition 5, subpartition 1\n"
            "2026-11-23T10:00:01+0000 h kernel: NVRM: Xid (PCI:0000:5f:00): 145, RLW_REMAP Nonfatal XC0 i0 Link 02\n")
    (dbe, remap), _ = parse_events(kernlog.parse(text, journal=True))
    assert dbe.detail.startswith("An uncorrectable double bit error (DBE)")  # NVIDIA/gpu-operator#1146
    assert remap.detail == "RLW_REMAP Nonfatal XC0 i0 Link 02"


def test_unknown_xid_is_described_by_the_drivers_words(tmp_path):
    line = "2026-11-23T10:00:01+0000 h kernel: NVRM: Xid (PCI:0000:18:00): 145, RLW_REMAP Nonfatal XC0 i0 Link 02\n"
    results = by_subject(run(xid_events, make_host(tmp_path, hgx(1), runner=runner(journal=line))))
    r = results["GPU0"]
    assert r.status.value == "WARN" and "Xid 145 (RLW_REMAP Nonfatal XC0 i0 Link 02) x1" in r.message


# --- Xid 154, NVML's recovery action, and Xids from before a reset or a driver load ---------


def xid154_host(tmp_path, recovery=None):
    """The HGX layout with journal-hgx-xid154.txt; recovery: {GPU index: NVML recovery action}."""
    inv = hgx()
    for index, action in (recovery or {}).items():
        inv = change(inv, index, recovery_action=action)
    return make_host(tmp_path, inv, runner=runner(journal=fixture("journal-hgx-xid154.txt")))


def test_xid_154_asking_for_a_reset_or_reboot_fails(tmp_path):
    # A recording without NVML's recovery action (None): judged on the log alone.
    results = by_subject(run(xid_events, xid154_host(tmp_path)))
    assert {s: r.status.value for s, r in results.items()} == {
        "GPU0": "FAIL", "GPU1": "FAIL", "GPU2": "FAIL", "GPU3": "PASS", "GPU4": "PASS", "GPU5": "FAIL",
        "GPU6": "PASS", "GPU7": "PASS"}
    assert "critical Xid 154 (GPU recovery action changed) x1" in results["GPU2"].message
    assert "Node Reboot Required" not in results["GPU3"].message  # cleared: back to none
    assert results["GPU3"].message.startswith("only Xids that need no service: Xid 154")


def test_nvml_recovery_action_pending_fails_even_without_a_log_line(tmp_path):
    results = by_subject(run(xid_events, xid154_host(tmp_path, {1: 1, 6: 2})))
    assert results["GPU1"].status.value == "FAIL"
    assert results["GPU1"].message.startswith("NVML recovery action: GPU reset required; Xid 154 (GPU recovery")
    assert results["GPU6"].status.value == "FAIL" and results["GPU6"].message.startswith(
        "NVML recovery action: node reboot required")  # nothing in the log, the driver still says so
    assert results["GPU6"].observed == {"recovery_action": 2}


def test_xid_before_an_operators_reset_no_longer_fails(tmp_path):
    # GPU0 and GPU5 were reset after their Xid 48 + 154: NVML reports no recovery action now.
    results = by_subject(run(xid_events, xid154_host(tmp_path, {0: 0, 5: 0, 2: 0})))
    r = results["GPU0"]
    assert r.status.value == "WARN" and "dealt with: NVML reports no recovery action pending since" in r.message
    assert "Xid 48 (double-bit ECC error) x1" in r.message
    # A critical Xid after the reset still fails.
    assert results["GPU5"].status.value == "FAIL" and "Xid 48 (double-bit ECC error) x1, last 2026-11-23 06:00:00Z" \
        in results["GPU5"].message
    assert results["GPU2"].status.value == "WARN"  # the reboot it asked for happened (driver says none)


def test_xid_before_the_driver_loaded_is_not_judged(tmp_path):
    r = by_subject(run(xid_events, xid154_host(tmp_path)))["GPU4"]
    assert r.status.value == "PASS" and r.message == \
        "no Xid (last 24 h, journalctl, this boot); 1 event(s) before the driver last loaded"


def test_recovery_action_unreadable_is_said(tmp_path):
    inv = change(hgx(1), 0, field_errors={"recovery_action": "not available in this NVML: no field"})
    r = only(run(xid_events, make_host(tmp_path, inv, runner=runner(journal=fixture("journal-debian12.txt")))))
    assert r.status.value == "PASS" and "recovery action not read: not available in this NVML" in r.message


def test_pending_recovery_action_fails_even_when_the_log_is_unreadable(tmp_path):
    inv = change(hgx(2), 1, recovery_action=2)
    host = make_host(tmp_path, inv, runner=runner(journal=NO_JOURNAL, dmesg=DMESG_DENIED), is_root=False)
    results = run(xid_events, host)
    assert [(r.subject, r.status.value) for r in results] == [("GPU1", "FAIL"), (None, "SKIP")]
    assert results[0].message == "NVML recovery action: node reboot required"


@pytest.mark.parametrize(("xid", "critical"), [
    (48, True), (63, True), (64, True), (74, True), (79, True), (92, True), (95, True), (119, True), (120, True),
    (13, False), (31, False), (43, False), (45, False), (94, False), (38, False),
])
def test_which_xids_are_critical(xid, critical):
    from gpunode.checks.xid import XidEvent, is_critical

    assert is_critical(XidEvent(None, "0000:18:00", xid)) is critical


# NVIDIA's Xid catalog (docs.nvidia.com/deploy/xid-errors): each Xid the check names, what it is
# called in the message, and how it is judged.
CATALOG = [
    (13, "graphics engine exception", "PASS"), (31, "GPU memory page fault", "PASS"),
    (43, "GPU stopped processing", "PASS"), (45, "preemptive cleanup", "PASS"),
    (48, "double-bit ECC error", "FAIL"), (56, "display engine error", "FAIL"),
    (57, "video memory interface error", "FAIL"), (58, "unstable video memory interface", "FAIL"),
    (62, "internal micro-controller halt", "FAIL"), (63, "ECC page retirement or row remap recorded", "FAIL"),
    (64, "ECC page retirement or row remap failed", "FAIL"), (65, "video processor exception", "FAIL"),
    (68, "NVDEC0 exception", "FAIL"), (69, "graphics engine class error", "FAIL"), (73, "NVENC2 error", "FAIL"),
    (74, "NVLink error", "FAIL"), (79, "GPU has fallen off the bus", "FAIL"),
    (80, "corrupted data sent to the GPU", "FAIL"), (81, "VGA subsystem error", "FAIL"),
    (92, "high single-bit ECC error rate", "FAIL"), (94, "contained ECC error", "WARN"),
    (95, "uncontained ECC error", "FAIL"), (119, "GSP RPC timeout", "FAIL"), (120, "GSP error", "FAIL"),
]


@pytest.mark.parametrize("xid, meaning, status", CATALOG, ids=lambda v: str(v))
def test_each_catalogued_xid_is_named_and_classified(tmp_path, xid, meaning, status):
    line = f"2026-11-23T10:00:00+0000 h kernel: NVRM: Xid (PCI:0000:18:00): {xid}, pid=77, name=job, driver words\n"
    r = only(run(xid_events, make_host(tmp_path, hgx(1), runner=runner(journal=line))))
    assert r.status.value == status and f"Xid {xid} ({meaning}) x1, last 2026-11-23 10:00:00Z pid 77 job" in r.message
    assert "driver words" not in r.message  # the catalog's name, not the driver's free text


def test_an_xid_logged_in_the_same_second_as_the_driver_load_is_judged(tmp_path):
    # journalctl short-iso has one-second stamps: an Xid stamped with the load line's second came
    # from the driver that just loaded (the old one was unloaded before), so it counts.
    log = ("2026-11-23T10:00:00+0000 h kernel: NVRM: loading NVIDIA UNIX Open Kernel Module for x86_64  580.159.04\n"
           "2026-11-23T10:00:00+0000 h kernel: NVRM: Xid (PCI:0000:18:00): 79, GPU has fallen off the bus.\n")
    r = only(run(xid_events, make_host(tmp_path, hgx(1), runner=runner(journal=log))))
    assert r.status.value == "FAIL" and "Xid 79 (GPU has fallen off the bus) x1" in r.message
    assert "before the driver last loaded" not in r.message


def test_the_log_is_read_while_nvml_answers(tmp_path):
    """The gate's NVML pass takes tens of ms: with GPUs on the bus the Xid check reads the log
    before it waits for NVML, so the two overlap; without any GPU on the bus it reads nothing."""
    order = []
    inv = hgx(2)

    class Recording(GpuSource):
        def inventory(self, timeout=None):
            order.append("nvml")
            return inv

    class LogRunner(ReplayRunner):
        def run(self, argv, *args, **kwargs):
            order.append(argv[0])
            return super().run(argv, *args, **kwargs)

    r = LogRunner()
    r.add(JOURNAL, 0, fixture("journal-debian12.txt"), "")
    host = make_host(tmp_path, inv, runner=r)
    results = run(xid_events, Host(host.sys, Recording(), host.runner, host.facts))
    assert order[:2] == ["journalctl", "nvml"] and statuses(results) == ["PASS", "PASS"]
    order.clear()
    host = make_host(tmp_path / "nobus", inv, runner=r, pci=[])
    empty = GpuInventory(available=True, gpus=[])

    class NoGpus(Recording):
        def inventory(self, timeout=None):
            order.append("nvml")
            return empty

    results = run(xid_events, Host(host.sys, NoGpus(), host.runner, host.facts))
    assert order == ["nvml"] and statuses(results) == ["SKIP"]
