"""The live GPU source: the only module that imports pynvml (package nvidia-ml-py), lazily.

One pass reads every field checks need into GpuInventory. NotSupported -> None; any other
NVML error on one field is kept in field_errors; a GPU that cannot be opened gets `error`.
A caller that judges only some fields (the gate) names the reads it leaves out (`unread`, by
the names below): the first call of each NVML getter in a process costs 0.5-2.5 ms on an H200.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from typing import Any

from gpunode.host.gpu.model import GpuInfo, GpuInventory, GpuProcess, NvLink, gpu_label

NVLINK_MAX_LINKS = 18
FABRIC_STATES = {0: "not_supported", 1: "not_started", 2: "in_progress", 3: "completed"}
COMPUTE_MODES = {0: "default", 1: "exclusive_thread", 2: "prohibited", 3: "exclusive_process"}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Reader:
    """Calls NVML functions for one GPU, sorting NotSupported from real errors."""

    def __init__(self, nvml, info: GpuInfo, unread: frozenset[str] = frozenset()):
        self.nvml = nvml
        self.info = info
        self.unread = unread

    def get(self, name: str, fn: Callable[[], Any]) -> Any:
        if name in self.unread:
            return None
        try:
            return fn()
        except self.nvml.NVMLError as exc:
            if _is_not_supported(self.nvml, exc):
                return None
            self.info.field_errors[name] = _text(str(exc))
            return None
        except (AttributeError, TypeError) as exc:  # an older library lacks the call
            self.info.field_errors.setdefault(name, f"not available in this NVML: {exc}")
            return None


def _is_not_supported(nvml, exc) -> bool:
    value = getattr(exc, "value", None)
    return value in (
        nvml.NVML_ERROR_NOT_SUPPORTED,
        getattr(nvml, "NVML_ERROR_FUNCTION_NOT_FOUND", -1),
        getattr(nvml, "NVML_ERROR_NOT_FOUND", -1),
    )


def preload() -> None:
    """Import pynvml in the calling thread, before the NVML pass starts in its worker thread:
    two threads importing at once can each hold a module lock the other needs, and Python
    then hands one of them a half-made module ("partially initialized module 'typing'")."""
    try:
        import pynvml  # noqa: F401
    except ImportError:
        pass  # collect() says so


class NvmlGpuSource:
    """Reads the live GPUs through NVML. `unread`: names of reads to leave out (READ_NAMES)."""

    def __init__(self, unread: frozenset[str] = frozenset()):
        self.unread = frozenset(unread)

    def collect(self, on_read: Callable[[GpuInventory], None] | None = None) -> GpuInventory:
        """The inventory; `on_read` gets it before nvmlShutdown (~3.5 ms on an H200), so a
        waiting reader need not wait for the shutdown too."""
        started = time.monotonic()
        try:
            import pynvml as nvml
        except ImportError as exc:  # pragma: no cover - a dependency, but keep going without it
            return GpuInventory(available=False, error=f"nvidia-ml-py not installed: {exc}")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return GpuInventory(available=False, error=f"no NVIDIA driver/NVML: {_text(str(exc))}")
        except OSError as exc:
            return GpuInventory(available=False, error=f"no NVIDIA driver/NVML: {exc}")
        try:
            try:
                inv = GpuInventory(available=True)
                inv.driver_version = _safe(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
                inv.nvml_version = _safe(lambda: _text(nvml.nvmlSystemGetNVMLVersion()))
                cuda = _safe(nvml.nvmlSystemGetCudaDriverVersion_v2)
                if cuda:
                    inv.cuda_driver_version = f"{cuda // 1000}.{(cuda % 1000) // 10}"
                count = nvml.nvmlDeviceGetCount()
                inv.gpus = [_read_gpu(nvml, i, self.unread) for i in range(count)]
            except nvml.NVMLError as exc:
                inv = GpuInventory(available=False, error=f"NVML failed: {_text(str(exc))}")
            inv.collect_s = round(time.monotonic() - started, 4)
            if on_read is not None:
                on_read(inv)
        finally:
            _safe(nvml.nvmlShutdown)
        return inv


def _safe(fn):
    try:
        return fn()
    except Exception:  # noqa: BLE001 - optional facts
        return None


def _read_gpu(nvml, index: int, unread: frozenset[str] = frozenset()) -> GpuInfo:
    info = GpuInfo(index=index)
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
    except nvml.NVMLError as exc:
        info.error = f"cannot open GPU{index}: {_text(str(exc))}"  # the subject's one spelling (model.gpu_label)
        return info
    r = _Reader(nvml, info, unread)
    for read in READS:
        read.run(nvml, handle, r)
    return info


class _Read:
    """One NVML getter of a GPU: `name` (in READ_NAMES) lets a caller leave it out, `call(nvml,
    handle)` reads, `keep(info, answer)` stores the answer (None: not supported, failed or left
    out); `when(info)`, if given, says whether this GPU has it (ECC counters only with ECC on)."""

    __slots__ = ("name", "call", "keep", "when")

    def __init__(self, name: str, call: Callable[[Any, Any], Any], keep: Callable[[GpuInfo, Any], None],
                 when: Callable[[GpuInfo], Any] | None = None):
        self.name, self.call, self.keep, self.when = name, call, keep, when

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,)

    def run(self, nvml, handle, r: _Reader) -> None:
        if self.when is None or self.when(r.info):
            self.keep(r.info, r.get(self.name, lambda: self.call(nvml, handle)))


class _Walk:
    """Reads that call several getters themselves (processes, NVLinks), under `names`."""

    __slots__ = ("names", "run")

    def __init__(self, names: tuple[str, ...], run: Callable[[Any, Any, _Reader], None]):
        self.names, self.run = names, run


def _to(field: str, convert: Callable[[Any], Any] | None = None) -> Callable[[GpuInfo, Any], None]:
    """keep: the answer into `field`, through `convert` unless it is None."""
    def keep(info: GpuInfo, value: Any) -> None:
        setattr(info, field, value if value is None or convert is None else convert(value))
    return keep


def _spread(*fields: str, convert: Callable[[Any], Any] | None = None) -> Callable[[GpuInfo, Any], None]:
    """keep: a tuple answer into `fields`, one item each; nothing when there is no answer."""
    def keep(info: GpuInfo, value: Any) -> None:
        if value is not None:
            for field, item in zip(fields, value, strict=False):  # the first items, as NVML's tuples grow
                setattr(info, field, item if convert is None else convert(item))
    return keep


def _keep_pci(info: GpuInfo, pci: Any) -> None:
    if pci is not None:
        info.pci_bus_id = _text(pci.busId)
        info.pci_device_id = int(pci.pciDeviceId)
        info.pci_subsystem_id = int(pci.pciSubSystemId)


def _keep_remapped_rows(info: GpuInfo, rows: Any) -> None:
    if rows is not None:
        info.remap_correctable, info.remap_uncorrectable = int(rows[0]), int(rows[1])
        info.remap_pending, info.remap_failure = bool(rows[2]), bool(rows[3])


def _ecc_count(kind: str, counter: str) -> Callable[[Any, Any], Any]:
    return lambda nvml, h: nvml.nvmlDeviceGetTotalEccErrors(h, getattr(nvml, f"NVML_MEMORY_ERROR_TYPE_{kind}"),
                                                            getattr(nvml, f"NVML_{counter}_ECC"))


def _ecc_on(info: GpuInfo) -> bool:
    return bool(info.ecc_mode_current)


def _retired(cause: str) -> Callable[[Any, Any], Any]:
    return lambda nvml, h: nvml.nvmlDeviceGetRetiredPages(h, getattr(nvml, f"NVML_PAGE_RETIREMENT_CAUSE_{cause}"))


def _clock(getter: str, clock: str) -> Callable[[Any, Any], Any]:
    return lambda nvml, h: getattr(nvml, getter)(h, getattr(nvml, f"NVML_CLOCK_{clock}"))


def _threshold(which: str) -> Callable[[Any, Any], Any]:
    return lambda nvml, h: nvml.nvmlDeviceGetTemperatureThreshold(h, getattr(nvml, f"NVML_TEMPERATURE_THRESHOLD_{which}"))


def _plain(getter: str) -> Callable[[Any, Any], Any]:
    return lambda nvml, h: getattr(nvml, getter)(h)


def _walk_processes(nvml, handle, r: _Reader) -> None:
    r.info.processes = _processes(nvml, handle, r)


def _walk_nvlinks(nvml, handle, r: _Reader) -> None:
    r.info.nvlinks = _nvlinks(nvml, handle, r, details="nvlink_details" not in r.unread)


def _watts(milliwatts) -> float | None:
    return None if milliwatts is None else round(milliwatts / 1000.0, 1)


def _clock_events(nvml, handle, supported: bool = False) -> int:
    """The active clock event reasons (or, supported=True, those this driver can report); the
    *Throttle* names are what nvidia-ml-py called them before 12.x."""
    which = "Supported" if supported else "Current"
    getter = getattr(nvml, f"nvmlDeviceGet{which}ClocksEventReasons", None)
    if getter is None:
        getter = getattr(nvml, f"nvmlDeviceGet{which}ClocksThrottleReasons")
    return getter(handle)


def _memory(nvml, handle) -> tuple[int, int, int | None]:
    try:
        mem = nvml.nvmlDeviceGetMemoryInfo(handle, version=nvml.nvmlMemory_v2)
        return int(mem.total), int(mem.used), int(mem.reserved)
    except (nvml.NVMLError, AttributeError, TypeError):
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        return int(mem.total), int(mem.used), None


def _processes(nvml, handle, r: _Reader) -> list[GpuProcess]:
    found: dict[int, GpuProcess] = {}
    for kind, fn in (
        ("compute", nvml.nvmlDeviceGetComputeRunningProcesses),
        ("graphics", nvml.nvmlDeviceGetGraphicsRunningProcesses),
    ):
        for proc in r.get(f"processes_{kind}", lambda fn=fn: fn(handle)) or []:
            used = getattr(proc, "usedGpuMemory", None)
            name = _safe(lambda proc=proc: _text(nvml.nvmlSystemGetProcessName(proc.pid)))
            found.setdefault(int(proc.pid), GpuProcess(int(proc.pid), kind, used, name))
    return list(found.values())


def _nvlinks(nvml, handle, r: _Reader, details: bool = True) -> list[NvLink]:
    """Each link's state and version; with `details`, its peer and error counters too."""
    links = []
    for link in range(NVLINK_MAX_LINKS):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(handle, link)
        except nvml.NVMLError as exc:
            if _is_not_supported(nvml, exc) or getattr(exc, "value", None) == nvml.NVML_ERROR_INVALID_ARGUMENT:
                break  # past the last link, or no NVLink at all
            r.info.field_errors[f"nvlink{link}"] = _text(str(exc))
            break
        entry = NvLink(link=link, active=bool(state))
        entry.version = _safe(lambda link=link: int(nvml.nvmlDeviceGetNvLinkVersion(handle, link)))
        links.append(entry)
        if not details:
            continue
        remote = _safe(lambda link=link: nvml.nvmlDeviceGetNvLinkRemotePciInfo_v2(handle, link))
        entry.remote_bus_id = _text(remote.busId) if remote is not None else None
        for attr, counter in (
            ("replay_errors", 0),
            ("recovery_errors", 1),
            ("crc_flit_errors", 2),
            ("crc_data_errors", 3),
        ):
            value = _safe(lambda link=link, counter=counter: nvml.nvmlDeviceGetNvLinkErrorCounter(handle, link, counter))
            setattr(entry, attr, None if value is None else int(value))
    return links


def _recovery_action(nvml, handle) -> int:
    """The driver's GPU recovery action through the field-value API (no dedicated getter in
    nvidia-ml-py); a driver without the field answers NotSupported (-> None)."""
    field = nvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION  # AttributeError: an nvidia-ml-py older than the field
    value = nvml.nvmlDeviceGetFieldValues(handle, [field])[0]
    if value.nvmlReturn != nvml.NVML_SUCCESS:
        raise nvml.NVMLError(value.nvmlReturn)
    return int(value.value.uiVal)


def _fabric(nvml, handle) -> tuple[str, str]:
    info = nvml.c_nvmlGpuFabricInfo_t()
    nvml.nvmlDeviceGetGpuFabricInfo(handle, ctypes.byref(info))  # a pointer: by value, NVML writes through garbage
    state = FABRIC_STATES.get(int(info.state), str(info.state))
    status = "success" if int(info.status) == nvml.NVML_SUCCESS else f"nvml_error_{int(info.status)}"
    return state, status


# Every read of one GPU, in the order the reader makes them: adding a read is one entry here.
READS: tuple[_Read | _Walk, ...] = (
    _Read("name", lambda nvml, h: _text(nvml.nvmlDeviceGetName(h)), _to("name")),
    _Read("uuid", lambda nvml, h: _text(nvml.nvmlDeviceGetUUID(h)), _to("uuid")),
    _Read("serial", lambda nvml, h: _text(nvml.nvmlDeviceGetSerial(h)), _to("serial")),
    _Read("pci", _plain("nvmlDeviceGetPciInfo_v3"), _keep_pci),
    _Read("vbios_version", lambda nvml, h: _text(nvml.nvmlDeviceGetVbiosVersion(h)), _to("vbios_version")),
    _Read("board_part_number", lambda nvml, h: _text(nvml.nvmlDeviceGetBoardPartNumber(h)),
          _to("board_part_number")),
    _Read("architecture", lambda nvml, h: int(nvml.nvmlDeviceGetArchitecture(h)), _to("architecture")),
    _Read("persistence_mode", _plain("nvmlDeviceGetPersistenceMode"), _to("persistence_mode", bool)),
    _Read("ecc_mode", _plain("nvmlDeviceGetEccMode"), _spread("ecc_mode_current", "ecc_mode_pending", convert=bool)),
    _Read("ecc_uncorrected_volatile", _ecc_count("UNCORRECTED", "VOLATILE"), _to("ecc_uncorrected_volatile"), _ecc_on),
    _Read("ecc_uncorrected_aggregate", _ecc_count("UNCORRECTED", "AGGREGATE"), _to("ecc_uncorrected_aggregate"),
          _ecc_on),
    _Read("ecc_corrected_volatile", _ecc_count("CORRECTED", "VOLATILE"), _to("ecc_corrected_volatile"), _ecc_on),
    _Read("ecc_corrected_aggregate", _ecc_count("CORRECTED", "AGGREGATE"), _to("ecc_corrected_aggregate"), _ecc_on),
    _Read("retired_pages_sbe", _retired("MULTIPLE_SINGLE_BIT_ECC_ERRORS"), _to("retired_pages_sbe", len)),
    _Read("retired_pages_dbe", _retired("DOUBLE_BIT_ECC_ERROR"), _to("retired_pages_dbe", len)),
    _Read("retired_pages_pending", _plain("nvmlDeviceGetRetiredPagesPendingStatus"), _to("retired_pages_pending", bool)),
    _Read("remapped_rows", _plain("nvmlDeviceGetRemappedRows"), _keep_remapped_rows),
    _Read("clock_event_reasons", lambda nvml, h: int(_clock_events(nvml, h)), _to("clock_event_reasons")),
    _Read("clock_event_reasons_supported", lambda nvml, h: int(_clock_events(nvml, h, supported=True)),
          _to("clock_event_reasons_supported")),
    _Read("performance_state", lambda nvml, h: int(nvml.nvmlDeviceGetPerformanceState(h)), _to("performance_state")),
    _Read("sm_clock_mhz", _clock("nvmlDeviceGetClockInfo", "SM"), _to("sm_clock_mhz")),
    _Read("mem_clock_mhz", _clock("nvmlDeviceGetClockInfo", "MEM"), _to("mem_clock_mhz")),
    _Read("sm_clock_max_mhz", _clock("nvmlDeviceGetMaxClockInfo", "SM"), _to("sm_clock_max_mhz")),
    _Read("mem_clock_max_mhz", _clock("nvmlDeviceGetMaxClockInfo", "MEM"), _to("mem_clock_max_mhz")),
    _Read("sm_app_clock_mhz", _clock("nvmlDeviceGetApplicationsClock", "SM"), _to("sm_app_clock_mhz")),
    _Read("mem_app_clock_mhz", _clock("nvmlDeviceGetApplicationsClock", "MEM"), _to("mem_app_clock_mhz")),
    _Read("sm_app_clock_default_mhz", _clock("nvmlDeviceGetDefaultApplicationsClock", "SM"),
          _to("sm_app_clock_default_mhz")),
    _Read("mem_app_clock_default_mhz", _clock("nvmlDeviceGetDefaultApplicationsClock", "MEM"),
          _to("mem_app_clock_default_mhz")),
    _Read("power_usage_w", _plain("nvmlDeviceGetPowerUsage"), _to("power_usage_w", _watts)),
    _Read("power_limit_w", _plain("nvmlDeviceGetEnforcedPowerLimit"), _to("power_limit_w", _watts)),
    _Read("power_default_limit_w", _plain("nvmlDeviceGetPowerManagementDefaultLimit"),
          _to("power_default_limit_w", _watts)),
    _Read("power_limit_constraints", _plain("nvmlDeviceGetPowerManagementLimitConstraints"),
          _spread("power_min_limit_w", "power_max_limit_w", convert=_watts)),
    _Read("temperature_c", lambda nvml, h: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU),
          _to("temperature_c")),
    _Read("temperature_slowdown_c", _threshold("SLOWDOWN"), _to("temperature_slowdown_c")),
    _Read("temperature_shutdown_c", _threshold("SHUTDOWN"), _to("temperature_shutdown_c")),
    _Read("temperature_gpu_max_c", _threshold("GPU_MAX"), _to("temperature_gpu_max_c")),
    _Read("pcie_gen_current", _plain("nvmlDeviceGetCurrPcieLinkGeneration"), _to("pcie_gen_current")),
    _Read("pcie_gen_max", _plain("nvmlDeviceGetMaxPcieLinkGeneration"), _to("pcie_gen_max")),
    _Read("pcie_gen_gpu_max", _plain("nvmlDeviceGetGpuMaxPcieLinkGeneration"), _to("pcie_gen_gpu_max")),
    _Read("pcie_width_current", _plain("nvmlDeviceGetCurrPcieLinkWidth"), _to("pcie_width_current")),
    _Read("pcie_width_max", _plain("nvmlDeviceGetMaxPcieLinkWidth"), _to("pcie_width_max")),
    _Read("pcie_replay_counter", _plain("nvmlDeviceGetPcieReplayCounter"), _to("pcie_replay_counter")),
    # what `gpunode expect` derives HBM bandwidth and GEMM peaks from (not judged by any check)
    _Read("memory_bus_width_bits", lambda nvml, h: int(nvml.nvmlDeviceGetMemoryBusWidth(h)),
          _to("memory_bus_width_bits")),
    _Read("cuda_cores", lambda nvml, h: int(nvml.nvmlDeviceGetNumGpuCores(h)), _to("cuda_cores")),
    _Read("mig_mode", _plain("nvmlDeviceGetMigMode"), _spread("mig_mode_current", "mig_mode_pending", convert=bool)),
    _Read("mig_instances", lambda nvml, h: read_mig_instances(nvml, h), _to("mig_instances"),
          lambda info: info.mig_mode_current),
    _Read("compute_mode", _plain("nvmlDeviceGetComputeMode"),
          _to("compute_mode", lambda mode: COMPUTE_MODES.get(int(mode), str(mode)))),
    _Read("memory", lambda nvml, h: _memory(nvml, h),
          _spread("memory_total_bytes", "memory_used_bytes", "memory_reserved_bytes")),
    _Walk(("processes_compute", "processes_graphics"), _walk_processes),
    _Walk(("nvlink_details",), _walk_nvlinks),
    _Read("recovery_action", lambda nvml, h: _recovery_action(nvml, h), _to("recovery_action")),
    _Read("fabric", lambda nvml, h: _fabric(nvml, h), _spread("fabric_state", "fabric_status")),
)
# The names a caller may leave out (`unread`), derived from the table so the two cannot drift.
READ_NAMES = frozenset(name for read in READS for name in read.names)


# ============================================================================================
# Write side (gpunode apply / rollback only). Everything below changes GPU state; the read
# code above never calls it. See gpunode.host.gpu.control for the interface.
# ============================================================================================

_COMPUTE_MODE_IDS = {name: mode for mode, name in COMPUTE_MODES.items()}


def read_mig_instances(nvml, handle) -> list[dict]:
    """The GPU instances of a GPU in MIG mode, with their profile names ("1g.10gb")."""
    instances = []
    for profile in range(getattr(nvml, "NVML_GPU_INSTANCE_PROFILE_COUNT", 0)):
        try:
            info = nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
        except nvml.NVMLError:
            continue  # this profile does not exist on this GPU
        name = _text(getattr(info, "name", b"")).replace("MIG ", "").strip() or f"profile{profile}"
        count = ctypes.c_uint(0)
        array = (nvml.c_nvmlGpuInstance_t * max(int(info.instanceCount), 1))()
        nvml.nvmlDeviceGetGpuInstances(handle, int(info.id), array, ctypes.byref(count))
        for i in range(count.value):
            gi = nvml.nvmlGpuInstanceGetInfo(array[i])
            instances.append({"id": int(gi.id), "profile": name, "profile_id": int(info.id),
                              "start": int(gi.placement.start), "size": int(gi.placement.size)})
    return sorted(instances, key=lambda i: i["id"])


class NvmlGpuControl:
    """gpunode.host.gpu.control.GpuControl over NVML (needs root for every write)."""

    def __init__(self):
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()

    def close(self) -> None:
        _safe(self.nvml.nvmlShutdown)

    def _handle(self, index: int):
        return self.nvml.nvmlDeviceGetHandleByIndex(index)

    def _call(self, what: str, fn):
        from gpunode.host.gpu.control import GpuControlError

        try:
            return fn()
        except self.nvml.NVMLError as exc:
            raise GpuControlError(f"{what}: {_text(str(exc))}") from exc

    def read(self, index: int, key: str):
        nvml, h = self.nvml, self._handle(index)
        readers = {
            "persistence_mode": lambda: bool(nvml.nvmlDeviceGetPersistenceMode(h)),
            "power_limit": lambda: _watts(nvml.nvmlDeviceGetPowerManagementLimit(h)),
            "compute_mode": lambda: COMPUTE_MODES.get(int(nvml.nvmlDeviceGetComputeMode(h))),
            "ecc_mode": lambda: bool(nvml.nvmlDeviceGetEccMode(h)[1]),  # pending
            "mig_mode": lambda: bool(nvml.nvmlDeviceGetMigMode(h)[1]),  # pending
            "applications_clocks": lambda: ",".join(  # memory first, as `nvidia-smi -ac MEM,SM`
                str(nvml.nvmlDeviceGetApplicationsClock(h, c)) for c in (nvml.NVML_CLOCK_MEM, nvml.NVML_CLOCK_SM)),
        }
        return self._call(f"GPU{index} read {key}", readers[key])

    def write(self, index: int, key: str, value) -> None:
        nvml, h = self.nvml, self._handle(index)
        on = nvml.NVML_FEATURE_ENABLED if value else nvml.NVML_FEATURE_DISABLED
        writers = {
            "persistence_mode": lambda: nvml.nvmlDeviceSetPersistenceMode(h, on),
            "power_limit": lambda: nvml.nvmlDeviceSetPowerManagementLimit(h, int(round(float(value) * 1000))),
            "compute_mode": lambda: nvml.nvmlDeviceSetComputeMode(h, _COMPUTE_MODE_IDS[value]),
            "ecc_mode": lambda: nvml.nvmlDeviceSetEccMode(h, on),
            "mig_mode": lambda: nvml.nvmlDeviceSetMigMode(h, nvml.NVML_DEVICE_MIG_ENABLE if value else nvml.NVML_DEVICE_MIG_DISABLE),
            "applications_clocks": lambda: nvml.nvmlDeviceSetApplicationsClocks(h, *map(int, str(value).split(","))),
        }
        self._call(f"GPU{index} set {key}={value}", writers[key])

    def processes(self, index: int) -> list[int]:
        h = self._handle(index)
        pids = set()
        for fn in (self.nvml.nvmlDeviceGetComputeRunningProcesses, self.nvml.nvmlDeviceGetGraphicsRunningProcesses):
            pids.update(int(p.pid) for p in self._call(f"GPU{index} processes", lambda fn=fn: fn(h)))
        return sorted(pids)

    def mig_instances(self, index: int) -> list[dict]:
        return self._call(f"GPU{index} MIG instances", lambda: read_mig_instances(self.nvml, self._handle(index)))

    def _profile_id(self, handle, name: str) -> int:
        from gpunode.host.gpu.control import GpuControlError

        for profile in range(self.nvml.NVML_GPU_INSTANCE_PROFILE_COUNT):
            try:
                info = self.nvml.nvmlDeviceGetGpuInstanceProfileInfo(handle, profile)
            except self.nvml.NVMLError:
                continue
            if _text(info.name).replace("MIG ", "").strip() == name:
                return int(info.id)
        raise GpuControlError(f"this GPU has no MIG profile {name}")

    def mig_create(self, index: int, profile: str, placement: dict | None = None) -> dict:
        nvml, h = self.nvml, self._handle(index)
        pid = self._profile_id(h, profile)
        if placement is None:
            gi = self._call(f"GPU{index} create {profile}", lambda: nvml.nvmlDeviceCreateGpuInstance(h, pid))
        else:
            where = nvml.c_nvmlGpuInstancePlacement_t(int(placement["start"]), int(placement["size"]))
            gi = self._call(f"GPU{index} create {profile} at {placement['start']}",
                            lambda: nvml.nvmlDeviceCreateGpuInstanceWithPlacement(h, pid, where))
        ci_profile = self._full_ci_profile(gi)
        self._call(f"GPU{index} create compute instance",
                   lambda: nvml.nvmlGpuInstanceCreateComputeInstance(gi, ci_profile))
        info = nvml.nvmlGpuInstanceGetInfo(gi)
        return {"id": int(info.id), "profile": profile, "profile_id": pid,
                "start": int(info.placement.start), "size": int(info.placement.size)}

    def _full_ci_profile(self, gi) -> int:
        """The compute instance profile with the most slices: one CI spanning the whole GI,
        as `nvidia-smi mig -cgi ... -C` creates."""
        nvml = self.nvml
        best, best_slices = nvml.NVML_COMPUTE_INSTANCE_PROFILE_1_SLICE, 0
        for profile in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            try:
                info = nvml.nvmlGpuInstanceGetComputeInstanceProfileInfo(
                    gi, profile, nvml.NVML_COMPUTE_INSTANCE_ENGINE_PROFILE_SHARED)
            except nvml.NVMLError:
                continue
            if int(info.sliceCount) > best_slices:
                best, best_slices = int(info.id), int(info.sliceCount)
        return best

    def mig_destroy(self, index: int, instance_id: int) -> None:
        nvml, h = self.nvml, self._handle(index)
        gi = self._call(f"GPU{index} MIG instance {instance_id}", lambda: nvml.nvmlDeviceGetGpuInstanceById(h, instance_id))
        for profile in range(nvml.NVML_COMPUTE_INSTANCE_PROFILE_COUNT):
            count = ctypes.c_uint(0)
            array = (nvml.c_nvmlComputeInstance_t * 8)()
            try:
                nvml.nvmlGpuInstanceGetComputeInstances(gi, profile, array, ctypes.byref(count))
            except nvml.NVMLError:
                continue
            for i in range(count.value):
                self._call(f"GPU{index} destroy compute instance", lambda ci=array[i]: nvml.nvmlComputeInstanceDestroy(ci))
        self._call(f"GPU{index} destroy MIG instance {instance_id}", lambda: nvml.nvmlGpuInstanceDestroy(gi))


# ============================================================================================
# Telemetry (gpunode.host.gpu.telemetry): fast repeated reads of a few counters per GPU, and
# Xid events through an NVML event set. Read-only, like the inventory above.
# ============================================================================================


class _EventSession:
    """An NVML session holding an event set (telemetry, the watcher): closed once, event set first."""

    nvml: Any = None
    events: Any = None

    def close(self) -> None:
        if self.nvml is None:
            return
        if self.events is not None:
            _safe(lambda: self.nvml.nvmlEventSetFree(self.events))
        _safe(self.nvml.nvmlShutdown)
        self.nvml = None


class NvmlTelemetrySource(_EventSession):
    """gpunode.host.gpu.telemetry.TelemetrySource over the live NVML."""

    def __init__(self, xid_events: bool = True):
        self.nvml = None
        self.xid_events = xid_events
        self.handles: dict[int, Any] = {}
        self.events = None
        self._index_of: dict[int, int] = {}
        self._missing: dict[str, str] = {}
        self._static: dict[int, dict] = {}

    def open(self) -> list[int]:
        import pynvml as nvml

        nvml.nvmlInit()
        self.nvml = nvml
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                self.handles[i] = nvml.nvmlDeviceGetHandleByIndex(i)
            except nvml.NVMLError as exc:
                self._missing[gpu_label(i)] = _text(str(exc))
        if self.xid_events:
            self._open_events()
        else:
            self._missing["xid"] = "Xid events not watched (event set turned off by the caller)"
        for i, h in self.handles.items():  # what does not change while we sample
            self._static[i] = {
                "pcie_max_gen": _safe(lambda h=h: int(nvml.nvmlDeviceGetMaxPcieLinkGeneration(h))),
                "pcie_max_width": _safe(lambda h=h: int(nvml.nvmlDeviceGetMaxPcieLinkWidth(h))),
                "ecc": bool((_safe(lambda h=h: nvml.nvmlDeviceGetEccMode(h)) or (0,))[0]),
            }
        return sorted(self.handles)

    def _open_events(self) -> None:
        nvml = self.nvml
        try:
            self.events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            self._missing["xid"] = f"no NVML event set: {_text(str(exc))}"
            return
        refused = []
        for i, h in self.handles.items():
            try:
                nvml.nvmlDeviceRegisterEvents(h, nvml.nvmlEventTypeXidCriticalError, self.events)
                self._index_of[_address(h)] = i
            except nvml.NVMLError as exc:
                refused.append(f"GPU{i}: {_text(str(exc))}")
        if refused:
            self._missing["xid"] = "Xid events not watched on " + "; ".join(refused)

    def unavailable(self) -> dict[str, str]:
        return dict(self._missing)

    def wait_events(self, timeout_s: float) -> list[dict]:
        nvml = self.nvml
        if self.events is None or not self._index_of:
            time.sleep(max(0.0, timeout_s))
            return []
        try:
            data = nvml.nvmlEventSetWait_v2(self.events, max(1, int(timeout_s * 1000)))
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != nvml.NVML_ERROR_TIMEOUT:
                time.sleep(max(0.0, timeout_s))  # keep the tick rate; the next read shows the GPU state
            return []
        gpu = self._index_of.get(_address(data.device)) if data.device else None
        return [{"gpu": gpu, "xid": int(data.eventData)}]

    def read(self, gpu: int, now: float, processes: bool):
        from gpunode.host.gpu.model import clock_event_names
        from gpunode.host.gpu.sample import Sample

        nvml, h, static = self.nvml, self.handles[gpu], self._static[gpu]

        def get(fn):
            try:
                return fn()
            except nvml.NVMLError as exc:
                if _is_not_supported(nvml, exc):
                    return None
                raise

        s = Sample(t=now, gpu=gpu, pcie_max_gen=static["pcie_max_gen"], pcie_max_width=static["pcie_max_width"])
        s.sm_clock_mhz = get(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))
        s.mem_clock_mhz = get(lambda: nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_MEM))
        s.power_w = _watts(get(lambda: nvml.nvmlDeviceGetPowerUsage(h)))
        s.power_limit_w = _watts(get(lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(h)))
        s.temp_c = get(lambda: nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU))
        s.mem_temp_c = get(lambda: _field_value(nvml, h, nvml.NVML_FI_DEV_MEMORY_TEMP))
        util = get(lambda: nvml.nvmlDeviceGetUtilizationRates(h))
        s.utilization_pct = None if util is None else float(util.gpu)
        s.clock_events = tuple(clock_event_names(get(lambda: int(_clock_events(nvml, h)))))
        s.pcie_gen = get(lambda: nvml.nvmlDeviceGetCurrPcieLinkGeneration(h))
        s.pcie_width = get(lambda: nvml.nvmlDeviceGetCurrPcieLinkWidth(h))
        s.pcie_replay = get(lambda: nvml.nvmlDeviceGetPcieReplayCounter(h))
        if static["ecc"]:
            unc, cor = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED
            s.ecc_uncorrected = get(lambda: nvml.nvmlDeviceGetTotalEccErrors(h, unc, nvml.NVML_VOLATILE_ECC))
            s.ecc_corrected = get(lambda: nvml.nvmlDeviceGetTotalEccErrors(h, cor, nvml.NVML_VOLATILE_ECC))
        rows = get(lambda: nvml.nvmlDeviceGetRemappedRows(h))
        if rows is not None:
            s.remap_uncorrectable, s.remap_pending, s.remap_failure = int(rows[1]), bool(rows[2]), bool(rows[3])
        if processes:
            s.processes = tuple((p.pid, p.name, p.used_memory_bytes) for p in _processes(nvml, h, _Reader(nvml, GpuInfo(gpu))))
        return s



def _address(handle) -> int | None:
    """A device handle's pointer value: event data names its device by the same pointer."""
    return ctypes.cast(handle, ctypes.c_void_p).value


def _field_value(nvml, handle, field_id: int):
    """One NVML field value (memory temperature has no getter of its own); None when unsupported."""
    value = nvml.nvmlDeviceGetFieldValues(handle, [field_id])[0]
    if int(value.nvmlReturn) != nvml.NVML_SUCCESS:
        return None
    return float(getattr(value.value, {0: "dVal", 1: "uiVal", 2: "ulVal", 3: "ullVal", 4: "sllVal", 5: "siVal"}.get(
        int(value.valueType), "uiVal")))


# ============================================================================================
# Events for the resident watcher (gpunode.watch.sources): one NVML event set over every GPU,
# each GPU registered for the kinds its driver supports, plus a cheap read of the compute
# processes (a foreign process shows between polls). Read-only, like everything above.
# ============================================================================================

# Event kind (gpunode.watch.events.Event.kind) -> the pynvml name of its event type; a pynvml
# without a name (older nvidia-ml-py) simply watches less, said in `unavailable`.
# Not nvmlEventTypeClock unless asked (config watch.clock_events): on an idle H100 (driver 580)
# it fires about ten times a second, and each wake costs NVML ~0.5 ms of CPU: the watcher's
# whole budget (0.5 % of a core) for a fact the polled gpu.throttle check reads every poll.
CLOCK_EVENT_TYPE = {"clock": "nvmlEventTypeClock"}
WATCH_EVENT_TYPES = {
    "xid": "nvmlEventTypeXidCriticalError",
    "ecc_sbe": "nvmlEventTypeSingleBitEccError",
    "ecc_dbe": "nvmlEventTypeDoubleBitEccError",
    "power": "nvmlEventTypePowerSourceChange",
    "recovery_action": "nvmlEventTypeGpuRecoveryAction",
}


class NvmlEventWatch(_EventSession):
    """The watcher's NVML event set. open() -> {GPU UUID: [kinds watched]}; wait(timeout_s)
    -> [{"gpu": uuid, "kind": kind, "code": int}] (empty on a timeout); processes() ->
    {uuid: [(pid, name)]} of compute processes. The caller owns the thread it waits in."""

    def __init__(self, clock_events: bool = False) -> None:
        self.nvml = None
        self.events = None
        self.types = {**WATCH_EVENT_TYPES, **(CLOCK_EVENT_TYPE if clock_events else {})}
        self.handles: dict[str, Any] = {}  # uuid -> handle
        self.bus_ids: dict[str, str] = {}  # uuid -> PCI bus id (00000000:18:00.0): kernel lines name GPUs so
        self.serials: dict[str, str] = {}  # uuid -> board serial (the policy's escalation memory is per serial)
        self._uuid_of: dict[int, str] = {}  # handle address -> uuid
        self._kind_of: dict[int, str] = {}  # event type bit -> kind
        self._missing: dict[str, str] = {}
        self._names: dict[int, str | None] = {}  # pid -> process name, of the last list

    def open(self) -> dict[str, list[str]]:
        import pynvml as nvml

        nvml.nvmlInit()
        self.nvml = nvml
        for i in range(nvml.nvmlDeviceGetCount()):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(i)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                self.handles[uuid] = handle
                self.bus_ids[uuid] = _text(nvml.nvmlDeviceGetPciInfo(handle).busId)
                serial = _safe(lambda h=handle: _text(nvml.nvmlDeviceGetSerial(h)))
                if serial:
                    self.serials[uuid] = serial
            except nvml.NVMLError as exc:
                self._missing[gpu_label(i)] = _text(str(exc))
        wanted = 0
        for kind, name in self.types.items():
            bit = getattr(nvml, name, None)
            if bit is None:
                self._missing[kind] = f"not in this nvidia-ml-py ({name})"
                continue
            self._kind_of[int(bit)] = kind
            wanted |= int(bit)
        watched: dict[str, list[str]] = {}
        try:
            self.events = nvml.nvmlEventSetCreate()
        except nvml.NVMLError as exc:
            self._missing["events"] = f"no NVML event set: {_text(str(exc))}"
            return watched
        for uuid, handle in self.handles.items():
            try:
                supported = int(nvml.nvmlDeviceGetSupportedEventTypes(handle)) & wanted
                nvml.nvmlDeviceRegisterEvents(handle, supported, self.events)
            except nvml.NVMLError as exc:
                self._missing[uuid] = f"events not watched: {_text(str(exc))}"
                continue
            self._uuid_of[_address(handle)] = uuid
            watched[uuid] = [k for bit, k in self._kind_of.items() if supported & bit]
        return watched

    def unavailable(self) -> dict[str, str]:
        return dict(self._missing)

    def wait(self, timeout_s: float) -> list[dict]:
        nvml = self.nvml
        if nvml is None or self.events is None or not self._uuid_of:
            time.sleep(max(0.0, timeout_s))
            return []
        try:
            data = nvml.nvmlEventSetWait_v2(self.events, max(1, int(timeout_s * 1000)))
        except nvml.NVMLError as exc:
            if getattr(exc, "value", None) != nvml.NVML_ERROR_TIMEOUT:
                time.sleep(max(0.0, timeout_s))  # a broken wait must not spin
            return []
        uuid = self._uuid_of.get(_address(data.device)) if data.device else None
        bits = int(data.eventType)
        kinds = [k for bit, k in self._kind_of.items() if bits & bit] or [f"type 0x{bits:x}"]
        return [{"gpu": uuid, "kind": kind, "code": int(data.eventData)} for kind in kinds]

    def processes(self) -> dict[str, list[tuple[int, str | None]]]:
        nvml = self.nvml
        found: dict[str, list[tuple[int, str | None]]] = {}
        if nvml is None:
            return found
        names: dict[int, str | None] = {}
        for uuid, handle in self.handles.items():
            procs = _safe(lambda h=handle: nvml.nvmlDeviceGetComputeRunningProcesses(h)) or []
            for p in procs:
                pid = int(p.pid)
                # a name is a driver call: asked once while the process stays on a GPU
                names[pid] = self._names[pid] if pid in self._names else _safe(
                    lambda pid=pid: _text(nvml.nvmlSystemGetProcessName(pid)))
            found[uuid] = [(int(p.pid), names[int(p.pid)]) for p in procs]
        self._names = names  # forgets the processes that ended: a reused pid is asked again
        return found

