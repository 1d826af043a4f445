"""The gate leaves out the NVML reads no gate check judges (host.gpu.source.GATE_UNREAD). Proved two
ways on recorded GPUs (the H100 and H200 inventories, an HGX layout, faulty variants): every
gate check, the profiles' gate settings included, reads none of the left-out fields, and blanking
them changes no result."""

from __future__ import annotations

import re
from dataclasses import fields, replace
from pathlib import Path

import gpu_fixtures
import pytest

import testkit
from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.audit.run import choose_checks
from gpunode.config import Config
from gpunode.host.gpu import nvml as reader
from gpunode.host.gpu.model import GpuInfo, GpuInventory, GpuProcess, NvLink
from gpunode.host.gpu.source import GATE_UNREAD
from gpunode.tune.profiles import load_profile

# What each read the gate may leave out fills in (reads named as in nvml.READ_NAMES).
FILLS = {
    "power_limit_constraints": ("power_min_limit_w", "power_max_limit_w"),
    "nvlink_details": ("remote_bus_id", "replay_errors", "recovery_errors", "crc_flit_errors",
                       "crc_data_errors"),
}


def filled(reads) -> set[str]:
    return {attr for name in reads for attr in FILLS.get(name, (name,))}


def inventories() -> dict[str, GpuInventory]:
    h100 = gpu_fixtures.h100()
    hgx = gpu_fixtures.hgx()
    found = {"h100": h100, "hgx8": hgx}
    for name in ("h200-1gpu", "h200-1gpu-capabilities", "h100-sxm-1gpu"):
        found[name] = testkit.fixture_host(name).gpu.inventory()
    found["hgx-faults"] = replace(hgx, gpus=[
        replace(hgx.gpus[0], clock_event_reasons=0x8 | 0x40, temperature_c=95, ecc_uncorrected_volatile=3),
        replace(hgx.gpus[1], nvlinks=gpu_fixtures.nvlinks(active=False), fabric_state="in_progress"),
        replace(hgx.gpus[2], processes=[GpuProcess(4242, "compute", 2 << 30, "python")],
                memory_used_bytes=3 << 30, remap_pending=True, pcie_width_current=8),
        replace(hgx.gpus[3], sm_app_clock_mhz=1000, recovery_action=2, persistence_mode=False),
        *hgx.gpus[4:],
    ])
    return found


class Tracked:
    """Records the dataclass fields the checks read from GpuInfo and NvLink objects."""

    def __init__(self) -> None:
        self.read: set[str] = set()

    def wrap(self, inv: GpuInventory) -> GpuInventory:
        seen = self.read

        def tracking(cls):
            names = {f.name for f in fields(cls)}

            class Recording(cls):  # type: ignore[misc, valid-type]
                def __getattribute__(self, name):
                    if name in names:
                        seen.add(name)
                    return super().__getattribute__(name)

            return Recording

        gpu_cls, link_cls = tracking(GpuInfo), tracking(NvLink)

        def copy(obj, cls):
            return cls(**{f.name: getattr(obj, f.name) for f in fields(obj)})

        gpus = []
        for g in inv.gpus:
            links = [copy(link, link_cls) for link in g.nvlinks]
            gpus.append(copy(replace(g, nvlinks=links), gpu_cls))
        self.read.clear()
        return replace(inv, gpus=gpus)


def gate_results(tmp_path, inv: GpuInventory, profile_name: str):
    profile = load_profile(profile_name)
    checks = choose_checks(profile, tags=["gate"])
    host = gpu_fixtures.make_host(tmp_path, inv)
    ctx = AuditContext(host=host, profile=profile, config=Config(expected_gpus=len(inv.gpus)))
    return run_checks(checks, ctx, check_timeout=10)


def blank(inv: GpuInventory, reads) -> GpuInventory:
    """The inventory as a read that left `reads` out returns it."""
    attrs = filled(reads)
    gpus = []
    for g in inv.gpus:
        links = [replace(link, **{a: None for a in attrs if hasattr(link, a) and a not in ("link", "active")})
                 for link in g.nvlinks]
        gpus.append(replace(g, nvlinks=links, **{a: None for a in attrs if a in GpuInfo.__dataclass_fields__}))
    return replace(inv, gpus=gpus)


def fields_read_by_gate(tmp_path) -> set[str]:
    tracked = Tracked()
    read: set[str] = set()
    for name, inv in inventories().items():
        for profile in ("training", "inference"):
            gate_results(tmp_path / name / profile, tracked.wrap(inv), profile)
            read |= tracked.read
    return read


def test_gate_checks_read_none_of_the_fields_the_gate_leaves_out(tmp_path):
    read = fields_read_by_gate(tmp_path)
    assert read, "the tracking saw no reads: the test would prove nothing"
    assert {"temperature_slowdown_c", "clock_event_reasons", "ecc_uncorrected_volatile", "active"} <= read
    assert not read & filled(GATE_UNREAD), sorted(read & filled(GATE_UNREAD))


def test_the_tracking_catches_a_field_a_gate_check_needs(tmp_path):
    """The guard against a GATE_UNREAD that grew too far: the fields these reads fill are judged
    by the gate, so leaving any of the reads out would show in the test above."""
    read = fields_read_by_gate(tmp_path)
    needed = {"temperature_slowdown_c": "temperature_slowdown_c", "remapped_rows": "remap_pending",
              "sm_app_clock_mhz": "sm_app_clock_mhz", "processes_compute": "processes", "fabric": "fabric_state"}
    assert {name: field in read for name, field in needed.items()} == dict.fromkeys(needed, True)


@pytest.mark.parametrize("profile", ["training", "inference"])
def test_blanking_the_left_out_fields_changes_no_gate_result(tmp_path, profile):
    for name, inv in inventories().items():
        full = gate_results(tmp_path / name / "full", inv, profile)
        lean = gate_results(tmp_path / name / "lean", blank(inv, GATE_UNREAD), profile)
        key = [(r.id, r.subject, r.status, r.message) for r in full]
        assert key == [(r.id, r.subject, r.status, r.message) for r in lean], name
        if name == "hgx-faults":  # the faults are judged, so the comparison covers failing verdicts too
            assert {r.status.value for r in full} - {"PASS", "SKIP"}, name


def test_blanking_a_judged_field_does_change_results(tmp_path):
    """The comparison above can fail: blanking what the gate judges shows up."""
    inv = inventories()["hgx-faults"]
    full = gate_results(tmp_path / "full", inv, "training")
    lean = gate_results(tmp_path / "lean", blank(inv, ["temperature_c", "clock_event_reasons"]), "training")
    assert [(r.id, r.status) for r in full] != [(r.id, r.status) for r in lean]


def test_gate_unread_names_real_reads_and_the_list_matches_the_reader():
    assert GATE_UNREAD <= reader.READ_NAMES
    source = Path(reader.__file__).read_text(encoding="utf-8")
    named = set(re.findall(r'_Read\("([a-z_]+)"', source)) | {"processes_compute", "processes_graphics",
                                                                "nvlink_details"}
    assert named == reader.READ_NAMES


def test_a_left_out_read_is_never_called():
    def never():
        raise AssertionError("called")

    info = GpuInfo(index=0)
    r = reader._Reader(object(), info, frozenset({"serial"}))
    assert r.get("serial", never) is None and info.field_errors == {}


def test_nvlinks_without_details_read_only_the_state():
    calls = []

    class FakeNvml:
        NVMLError = RuntimeError
        NVML_ERROR_NOT_SUPPORTED = 3
        NVML_ERROR_INVALID_ARGUMENT = 2

        def nvmlDeviceGetNvLinkState(self, handle, link):
            calls.append(("state", link))
            if link >= 2:
                raise FakeError(2)
            return 1

        def __getattr__(self, name):
            def call(*args):
                calls.append((name, args))
                return Answer()
            return call

    class Answer:
        busId = b"00000000:00:00.0"

        def __int__(self):
            return 0

    class FakeError(RuntimeError):
        def __init__(self, value):
            super().__init__(value)
            self.value = value

    FakeNvml.NVMLError = FakeError
    nvml = FakeNvml()
    info = GpuInfo(index=0)
    links = reader._nvlinks(nvml, "h", reader._Reader(nvml, info), details=False)
    assert [(link.link, link.active, link.version, link.replay_errors) for link in links] == [
        (0, True, 0, None), (1, True, 0, None)]
    assert [c[0] for c in calls] == ["state", "nvmlDeviceGetNvLinkVersion", "state", "nvmlDeviceGetNvLinkVersion",
                                     "state"]
    calls.clear()
    links = reader._nvlinks(nvml, "h", reader._Reader(nvml, info), details=True)
    assert len(links) == 2 and len(calls) > 5 and links[0].replay_errors == 0


def test_live_source_refuses_an_unknown_read():
    from gpunode.host.gpu.source import LiveGpuSource

    with pytest.raises(ValueError, match="no such NVML read: sreial"):
        LiveGpuSource(unread=frozenset({"sreial"}))


def test_readers_get_the_inventory_before_nvml_shuts_down(monkeypatch):
    """nvmlShutdown costs ~3.5 ms on an H200: waiting checks need not wait for it."""
    import pynvml

    from gpunode.host.gpu.source import LiveGpuSource

    order = []
    monkeypatch.setattr(pynvml, "nvmlInit", lambda: order.append("init"))
    monkeypatch.setattr(pynvml, "nvmlSystemGetDriverVersion", lambda: "580.159.04")
    monkeypatch.setattr(pynvml, "nvmlDeviceGetCount", lambda: 0)
    source = LiveGpuSource()
    monkeypatch.setattr(pynvml, "nvmlShutdown", lambda: order.append(
        "shutdown after publish" if source._done.is_set() else "shutdown first"))
    inv = source.inventory(timeout=10)
    assert inv.available and inv.driver_version == "580.159.04" and inv.gpus == []
    source._thread.join(10)
    assert order == ["init", "shutdown after publish"]
