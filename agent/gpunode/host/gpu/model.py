"""What gpunode knows about the GPUs of a host: plain dataclasses that round-trip through JSON.

A field is None when NVML says NotSupported (or the driver is too old to have it); when a
field failed for another reason, `field_errors[name]` says why, and checks reading it ERROR.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar


def gpu_label(index) -> str:
    """The one spelling of a GPU as a subject in every output: GPU0 (as nvidia-smi numbers them)."""
    return f"GPU{index}"

# Clock event ("throttle") reason bits, as in nvml.h nvmlClocksEventReason*.
CLOCK_EVENT_BITS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
}


# nvmlDeviceGpuRecoveryAction_t (nvml.h); the words Xid 154 prints for the same codes.
RECOVERY_ACTIONS = {
    0: "none",
    1: "GPU reset required",
    2: "node reboot required",
    3: "drain P2P",
    4: "drain and reset",
    5: "recover IMEX domain",
    6: "bus reset",
    7: "system reboot",
}


def clock_event_names(mask: int | None) -> list[str]:
    if mask is None:
        return []
    return [name for bit, name in CLOCK_EVENT_BITS.items() if mask & bit]


@dataclass
class GpuProcess:
    """A process holding a GPU, as NVML lists it."""

    pid: int
    kind: str  # compute | graphics
    used_memory_bytes: int | None = None
    name: str | None = None


@dataclass
class NvLink:
    """One NVLink of a GPU: state, version, peer and error counters."""

    link: int
    active: bool | None
    version: int | None = None
    remote_bus_id: str | None = None
    replay_errors: int | None = None
    recovery_errors: int | None = None
    crc_flit_errors: int | None = None
    crc_data_errors: int | None = None


@dataclass
class GpuInfo:
    """Everything one NVML pass read of one GPU; None: not supported or not read."""

    index: int
    name: str | None = None
    uuid: str | None = None
    serial: str | None = None
    pci_bus_id: str | None = None  # 00000000:18:00.0, as NVML prints it
    pci_device_id: int | None = None  # NVML's combined id: device << 16 | vendor
    pci_subsystem_id: int | None = None
    vbios_version: str | None = None
    board_part_number: str | None = None
    architecture: int | None = None
    persistence_mode: bool | None = None
    ecc_mode_current: bool | None = None
    ecc_mode_pending: bool | None = None
    ecc_uncorrected_volatile: int | None = None
    ecc_uncorrected_aggregate: int | None = None
    ecc_corrected_volatile: int | None = None
    ecc_corrected_aggregate: int | None = None
    retired_pages_sbe: int | None = None
    retired_pages_dbe: int | None = None
    retired_pages_pending: bool | None = None
    remap_correctable: int | None = None
    remap_uncorrectable: int | None = None
    remap_pending: bool | None = None
    remap_failure: bool | None = None
    clock_event_reasons: int | None = None
    # Which of those reasons this driver can report (nvmlDeviceGetSupportedClocksEventReasons):
    # tells "no user-defined clock limit" from "the driver cannot say". None in old recordings.
    clock_event_reasons_supported: int | None = None
    performance_state: int | None = None
    sm_clock_mhz: int | None = None
    mem_clock_mhz: int | None = None
    sm_clock_max_mhz: int | None = None
    mem_clock_max_mhz: int | None = None
    sm_app_clock_mhz: int | None = None
    mem_app_clock_mhz: int | None = None
    sm_app_clock_default_mhz: int | None = None
    mem_app_clock_default_mhz: int | None = None
    power_usage_w: float | None = None
    power_limit_w: float | None = None
    power_default_limit_w: float | None = None
    power_min_limit_w: float | None = None
    power_max_limit_w: float | None = None
    temperature_c: int | None = None
    temperature_slowdown_c: int | None = None
    temperature_shutdown_c: int | None = None
    temperature_gpu_max_c: int | None = None
    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None  # what the link (GPU and slot) can do
    pcie_gen_gpu_max: int | None = None  # what the GPU can do
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    pcie_replay_counter: int | None = None
    memory_bus_width_bits: int | None = None  # 5120 on H100 SXM: HBM bandwidth = width x clock x 2
    cuda_cores: int | None = None  # SMs x cores per SM (128 on Hopper and Blackwell)
    mig_mode_current: bool | None = None
    mig_mode_pending: bool | None = None
    compute_mode: str | None = None  # default | exclusive_process | prohibited
    # MIG GPU instances [{id, profile: "1g.10gb", profile_id, start, size}]; None when MIG is off
    mig_instances: list[dict] | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None  # excluding driver-reserved memory where NVML allows
    memory_reserved_bytes: int | None = None
    processes: list[GpuProcess] = field(default_factory=list)
    nvlinks: list[NvLink] = field(default_factory=list)
    # What the driver says the GPU needs now (NVML_FI_DEV_GET_GPU_RECOVERY_ACTION, driver 550+):
    # 0 none, 1 GPU reset, 2 node reboot, 3 drain P2P, 4 drain and reset (RECOVERY_ACTIONS).
    recovery_action: int | None = None
    fabric_state: str | None = None  # not_supported | not_started | in_progress | completed
    fabric_status: str | None = None  # the NVML return of the fabric registration, "success" when fine
    field_errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the whole GPU could not be read
    # Fields a recorded document held with the wrong type (`remap_failure: "yes"`): the recording
    # is damaged there, and a check that read one never passes (gpu_common.each_gpu).
    damaged: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_dict(cls, data: object, position: int = 0) -> GpuInfo:
        """A recorded GPU (snapshot gpus.json). A field that is missing reads as not reported
        (None); a field of the wrong type is None with a field_errors entry, so the checks
        that read it ERROR while the others still judge what the document does show (a
        failed row remap must FAIL even when another field is broken)."""
        if not isinstance(data, dict):
            return cls(index=position, error=f"recorded GPU entry is a {type(data).__name__}, not an object")
        info = cls(index=position)
        errors: dict[str, str] = {}
        for f in fields(cls):
            if f.name not in data or f.name in ("processes", "nvlinks", "field_errors"):
                continue
            value = data[f.name]
            if value is None or _has_type(value, f.type):
                setattr(info, f.name, value)
            else:
                errors[f.name] = f"recorded value {value!r:.40} is not {f.type}"
        wrong_types = set(errors)
        info.processes = _records(GpuProcess, data.get("processes"), "processes", errors)
        info.nvlinks = _records(NvLink, data.get("nvlinks"), "nvlinks", errors)
        info.damaged = frozenset(wrong_types | ({"processes", "nvlinks"} & set(errors)))
        recorded = data.get("field_errors") or {}
        if isinstance(recorded, dict):
            errors.update({str(k): str(v) for k, v in recorded.items()})
        info.field_errors = errors
        return info

    @property
    def label(self) -> str:
        return gpu_label(self.index)

    @property
    def pci_device(self) -> str | None:
        """The 16-bit PCI device id as 0x2330."""
        return None if self.pci_device_id is None else f"0x{(self.pci_device_id >> 16) & 0xFFFF:04x}"

    @property
    def sysfs_bdf(self) -> str | None:
        """NVML's 00000000:18:00.0 -> sysfs's 0000:18:00.0."""
        if not self.pci_bus_id:
            return None
        domain, _, rest = self.pci_bus_id.lower().partition(":")
        return f"{domain[-4:]}:{rest}"


class _ReadsSeen(GpuInfo):
    """A GpuInfo that remembers which fields were read (see watch_reads)."""

    def __getattribute__(self, name: str):
        if not name.startswith("_"):
            object.__getattribute__(self, "_seen").add(name)
        return object.__getattribute__(self, name)


def watch_reads(gpu: GpuInfo) -> tuple[GpuInfo, set[str]]:
    """A copy of `gpu` (a GpuInfo still) that notes every field read, and that set."""
    watched = copy.copy(gpu)
    seen: set[str] = set()
    watched.__class__ = _ReadsSeen
    watched.__dict__["_seen"] = seen
    return watched, seen


@dataclass
class GpuInventory:
    """Everything read from NVML in one pass."""

    available: bool
    error: str | None = None  # why NVML is unavailable (no driver, init failed)
    driver_version: str | None = None
    cuda_driver_version: str | None = None  # "13.0"
    nvml_version: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)
    collect_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """Identity of the GPUs for reports and baseline selection (audit/bench meta["gpus"])."""
        return {
            "available": self.available,
            "error": self.error,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "count": len(self.gpus),
            "devices": [{"index": g.index, "name": g.name, "uuid": g.uuid, "pci_bus_id": g.pci_bus_id,
                         "pci_device": g.pci_device} for g in self.gpus],
        }

    def duplicates(self) -> list[tuple[GpuInfo, GpuInfo, str]]:
        """Entries that name a GPU an earlier entry already named (same UUID or same PCI bus
        id), each with that first entry and what they share. NVML never lists a GPU twice; a
        recording that does would count one GPU as two and hide a missing one."""
        first: dict[tuple[str, str], GpuInfo] = {}
        out = []
        for gpu in self.gpus:
            keys = [("UUID", gpu.uuid)] if gpu.uuid else []
            if gpu.sysfs_bdf:
                keys.append(("PCI bus id", gpu.sysfs_bdf))
            seen = next(((first[k], k[0]) for k in keys if k in first), None)
            if seen is not None:
                out.append((gpu, *seen))
            for k in keys:
                first.setdefault(k, gpu)
        return out

    @classmethod
    def from_json(cls, data: dict) -> GpuInventory:
        recorded = data.get("gpus") or []
        if not isinstance(recorded, list):
            raise ValueError(f"gpus: expected a list, got a {type(recorded).__name__}")
        gpus = [GpuInfo.from_dict(g, i) for i, g in enumerate(recorded)]
        inventory = cls(available=bool(gpus), gpus=gpus)  # recorded GPUs: NVML answered
        for f in fields(cls):
            value = data.get(f.name)
            if f.name != "gpus" and value is not None and _has_type(value, f.type):
                setattr(inventory, f.name, value)
        return inventory


# Annotation text -> the JSON types a recorded value may have (bool is not a number here).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "int": (int,), "int | None": (int,), "float | None": (int, float), "bool": (bool,), "bool | None": (bool,),
    "str | None": (str,), "list[dict] | None": (list,),
}


def _has_type(value: object, annotation: object) -> bool:
    allowed = _JSON_TYPES.get(str(annotation))
    if allowed is None:
        return True
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)


def _records(kind: type, data: object, name: str, errors: dict[str, str]) -> list:
    """Recorded processes or NVLinks: entries that cannot be read are left out and noted under
    `name` in field_errors (checks needing them ERROR: a lost process must not read as none)."""
    if data is None:
        return []
    if not isinstance(data, list):
        errors[name] = f"recorded {name} is a {type(data).__name__}, not a list"
        return []
    out = []
    names = {f.name for f in fields(kind)}
    for entry in data:
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"a {type(entry).__name__}, not an object")
            out.append(kind(**{k: v for k, v in entry.items() if k in names}))
        except TypeError as exc:
            errors[name] = f"a recorded entry of {name} cannot be read: {exc}"
    return out
