"""The NVML reader walks one table of reads (issue 21 item 5): READ_NAMES is derived from it, and
the pass over a fake NVML makes the same calls, in the same order, and fills the same GpuInfo as
the reader before the table (tests/fixtures/nvml/fake-read-golden.json was recorded from it)."""

from __future__ import annotations

import ctypes
import json
from dataclasses import asdict
from types import SimpleNamespace

import pytest

import testkit
from gpunode.host.gpu import nvml as reader
from gpunode.host.gpu.source import GATE_UNREAD

GOLDEN = testkit.FIXTURES / "nvml" / "fake-read-golden.json"


class FakeError(Exception):
    def __init__(self, value):
        super().__init__(f"NVML error {value}")
        self.value = value


class FabricInfo(ctypes.Structure):
    _fields_ = [("state", ctypes.c_uint), ("status", ctypes.c_uint)]


Obj = SimpleNamespace  # an NVML struct: only the fields the reader reads


ANSWERS = {
    "nvmlDeviceGetName": lambda h: b"NVIDIA H100 80GB HBM3",
    "nvmlDeviceGetUUID": lambda h: "GPU-0a1b",
    "nvmlDeviceGetSerial": lambda h: b"1650923000123",
    "nvmlDeviceGetPciInfo_v3": lambda h: Obj(busId=b"00000000:18:00.0", pciDeviceId=0x233010DE,
                                             pciSubSystemId=0x16C110DE),
    "nvmlDeviceGetVbiosVersion": lambda h: "96.00.74.00.01",
    "nvmlDeviceGetBoardPartNumber": lambda h: b"692-2G520-0200-000",
    "nvmlDeviceGetArchitecture": lambda h: 9,
    "nvmlDeviceGetPersistenceMode": lambda h: 1,
    "nvmlDeviceGetEccMode": lambda h: (1, 0),
    "nvmlDeviceGetTotalEccErrors": lambda h, kind, counter: 10 * kind + counter + 1,
    "nvmlDeviceGetRetiredPages": lambda h, cause: list(range(cause + 1)),
    "nvmlDeviceGetRetiredPagesPendingStatus": lambda h: 0,
    "nvmlDeviceGetRemappedRows": lambda h: (3, 1, 0, 1),
    "nvmlDeviceGetCurrentClocksEventReasons": lambda h: 0x4,
    "nvmlDeviceGetSupportedClocksEventReasons": lambda h: 0x1FF,
    "nvmlDeviceGetCurrentClocksThrottleReasons": lambda h: 0x8,  # the name before nvidia-ml-py 12
    "nvmlDeviceGetPerformanceState": lambda h: 0,
    "nvmlDeviceGetClockInfo": lambda h, which: 1000 + which,
    "nvmlDeviceGetMaxClockInfo": lambda h, which: 2000 + which,
    "nvmlDeviceGetApplicationsClock": lambda h, which: 3000 + which,
    "nvmlDeviceGetDefaultApplicationsClock": lambda h, which: 4000 + which,
    "nvmlDeviceGetPowerUsage": lambda h: 123456,
    "nvmlDeviceGetEnforcedPowerLimit": lambda h: 700000,
    "nvmlDeviceGetPowerManagementDefaultLimit": lambda h: 700000,
    "nvmlDeviceGetPowerManagementLimitConstraints": lambda h: (200000, 700000),
    "nvmlDeviceGetTemperature": lambda h, sensor: 41,
    "nvmlDeviceGetTemperatureThreshold": lambda h, which: 80 + which,
    "nvmlDeviceGetCurrPcieLinkGeneration": lambda h: 5,
    "nvmlDeviceGetMaxPcieLinkGeneration": lambda h: 5,
    "nvmlDeviceGetGpuMaxPcieLinkGeneration": lambda h: 5,
    "nvmlDeviceGetCurrPcieLinkWidth": lambda h: 16,
    "nvmlDeviceGetMaxPcieLinkWidth": lambda h: 16,
    "nvmlDeviceGetPcieReplayCounter": lambda h: 0,
    "nvmlDeviceGetMemoryBusWidth": lambda h: 5120,
    "nvmlDeviceGetNumGpuCores": lambda h: 16896,
    "nvmlDeviceGetMigMode": lambda h: (1, 1),
    "nvmlDeviceGetGpuInstanceProfileInfo": lambda h, profile: (_ for _ in ()).throw(FakeError(2)),
    "nvmlDeviceGetComputeMode": lambda h: 3,
    "nvmlDeviceGetMemoryInfo": lambda h, version=None: Obj(total=80 << 30, used=1 << 30, reserved=1 << 20),
    "nvmlDeviceGetComputeRunningProcesses": lambda h: [Obj(pid=10, usedGpuMemory=100)],
    "nvmlDeviceGetGraphicsRunningProcesses": lambda h: [Obj(pid=10), Obj(pid=11, usedGpuMemory=5)],
    "nvmlSystemGetProcessName": lambda pid: f"proc{pid}".encode(),
    "nvmlDeviceGetNvLinkState": lambda h, link: 1 if link < 2 else (_ for _ in ()).throw(FakeError(2)),
    "nvmlDeviceGetNvLinkVersion": lambda h, link: 4,
    "nvmlDeviceGetNvLinkRemotePciInfo_v2": lambda h, link: Obj(busId=b"00000000:05:00.0"),
    "nvmlDeviceGetNvLinkErrorCounter": lambda h, link, counter: 10 * link + counter,
    "nvmlDeviceGetFieldValues": lambda h, fields: [Obj(nvmlReturn=0, value=Obj(uiVal=2))],
    "nvmlDeviceGetGpuFabricInfo": lambda h, ref: _fill_fabric(ref),
}


def _fill_fabric(ref):
    ref._obj.state, ref._obj.status = 3, 0


class FakeNvml:
    """Answers every getter the reader calls and records the calls, in order."""

    NVMLError = FakeError
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_SUCCESS = 0
    NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_MEMORY_ERROR_TYPE_CORRECTED = 1, 0
    NVML_VOLATILE_ECC, NVML_AGGREGATE_ECC = 0, 1
    NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS = 0
    NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR = 1
    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2
    NVML_TEMPERATURE_GPU = 0
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 0, 1
    NVML_TEMPERATURE_THRESHOLD_GPU_MAX = 3
    NVML_GPU_INSTANCE_PROFILE_COUNT = 1
    NVML_FI_DEV_GET_GPU_RECOVERY_ACTION = 251
    nvmlMemory_v2 = 0x2000028
    c_nvmlGpuFabricInfo_t = FabricInfo

    def __init__(self, fail: dict[str, object] | None = None, answers: dict | None = None):
        self.calls: list[list] = []
        self.fail = fail or {}
        self.answers = {**ANSWERS, **(answers or {})}

    def nvmlDeviceGetHandleByIndex(self, index):
        self.calls.append(["nvmlDeviceGetHandleByIndex", index])
        return f"handle{index}"

    def __getattr__(self, name):
        if not name.startswith("nvml"):
            raise AttributeError(name)
        if self.fail.get(name) == "missing" or name not in self.answers:
            raise AttributeError(name)  # an nvidia-ml-py without the getter
        answer = self.answers[name]

        def call(*args, **kwargs):
            self.calls.append([name, *[a for a in args if not str(a).startswith(("handle", "<cparam"))],
                               *sorted(kwargs)])
            if name in self.fail:
                raise FakeError(self.fail[name])
            return answer(*args, **kwargs)

        return call


CASES = {
    "all": ({}, {}, frozenset()),
    "gate": ({}, {}, GATE_UNREAD),
    "ecc and mig off": ({}, {"nvmlDeviceGetEccMode": lambda h: (0, 1), "nvmlDeviceGetMigMode": lambda h: (0, 0)},
                        frozenset()),
    "failures": ({"nvmlDeviceGetSerial": 3, "nvmlDeviceGetPciInfo_v3": 999, "nvmlDeviceGetEccMode": 3,
                  "nvmlDeviceGetRemappedRows": 15, "nvmlDeviceGetPowerManagementLimitConstraints": 3,
                  "nvmlDeviceGetMigMode": 999, "nvmlDeviceGetMemoryBusWidth": "missing",
                  "nvmlDeviceGetGpuFabricInfo": 999, "nvmlDeviceGetComputeRunningProcesses": 999,
                  "nvmlDeviceGetCurrentClocksEventReasons": "missing", "nvmlDeviceGetFieldValues": 3,
                  "nvmlDeviceGetComputeMode": 3},
                 {}, frozenset({"uuid", "memory", "nvlink_details", "processes_graphics"})),
}


def read(case: str) -> dict:
    fail, answers, unread = CASES[case]
    nvml = FakeNvml(fail, answers)
    info = reader._read_gpu(nvml, 0, unread)
    return {"calls": nvml.calls, "info": asdict(info), "error_order": list(info.field_errors)}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_read_pass_is_the_one_recorded(case):
    assert read(case) == json.loads(GOLDEN.read_text())[case]


def test_a_gpu_that_cannot_be_opened():
    class Closed(FakeNvml):
        def nvmlDeviceGetHandleByIndex(self, index):
            raise FakeError(999)

    info = reader._read_gpu(Closed(), 3)
    assert info.error == "cannot open GPU3: NVML error 999" and info.name is None


def test_read_names_are_the_table_and_gate_unread_is_in_it():
    names = [name for read in reader.READS for name in read.names]
    assert len(names) == len(set(names)), "a read named twice"
    assert frozenset(names) == reader.READ_NAMES and GATE_UNREAD <= reader.READ_NAMES
    every = read("all")
    assert every["info"]["field_errors"] == {}


def test_every_read_can_be_left_out():
    """Each name of the table guards a call: leaving it out makes fewer NVML calls."""
    full = len(read("all")["calls"])
    for name in sorted(reader.READ_NAMES):
        nvml = FakeNvml()
        reader._read_gpu(nvml, 0, frozenset({name}))
        assert len(nvml.calls) < full, name


if __name__ == "__main__":  # records the golden file (from the reader before the table)
    GOLDEN.write_text(json.dumps({case: read(case) for case in CASES}, indent=1, sort_keys=True) + "\n")
