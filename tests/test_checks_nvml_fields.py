"""The NVML fields the checks added (recovery action, supported clock event reasons), read through
a stand-in for pynvml that answers as nvidia-ml-py 13 does: success, NotSupported, an old library."""

from types import SimpleNamespace

import pynvml
import pytest

from gpunode.host.gpu import nvml as reader
from gpunode.host.gpu.model import GpuInfo, GpuInventory


def fake_nvml(field_return=pynvml.NVML_SUCCESS, action=1, events=True):
    value = pynvml.c_nvmlFieldValue_t()
    value.fieldId = pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    value.nvmlReturn = field_return
    value.value.uiVal = action
    calls = []

    def field_values(handle, ids):
        calls.append(ids)
        return [value]

    nvml = SimpleNamespace(
        NVML_SUCCESS=pynvml.NVML_SUCCESS, NVMLError=pynvml.NVMLError,
        NVML_ERROR_NOT_SUPPORTED=pynvml.NVML_ERROR_NOT_SUPPORTED,
        NVML_ERROR_FUNCTION_NOT_FOUND=pynvml.NVML_ERROR_FUNCTION_NOT_FOUND,
        NVML_ERROR_NOT_FOUND=pynvml.NVML_ERROR_NOT_FOUND,
        NVML_FI_DEV_GET_GPU_RECOVERY_ACTION=pynvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION,
        nvmlDeviceGetFieldValues=field_values,
    )
    if events:
        nvml.nvmlDeviceGetSupportedClocksEventReasons = lambda h: 0x1FF
        nvml.nvmlDeviceGetCurrentClocksEventReasons = lambda h: 0x1
    else:  # nvidia-ml-py before 12.535 named them *Throttle*
        nvml.nvmlDeviceGetSupportedClocksThrottleReasons = lambda h: 0xFF
        nvml.nvmlDeviceGetCurrentClocksThrottleReasons = lambda h: 0x3
    return nvml, calls


def test_recovery_action_through_the_field_value_api():
    nvml, calls = fake_nvml(action=2)
    info = GpuInfo(index=0)
    assert reader._Reader(nvml, info).get("recovery_action", lambda: reader._recovery_action(nvml, "h")) == 2
    assert calls == [[230]] and info.field_errors == {}


def test_recovery_action_not_supported_is_none_other_errors_are_kept():
    nvml, _ = fake_nvml(field_return=pynvml.NVML_ERROR_NOT_SUPPORTED)
    info = GpuInfo(index=0)
    assert reader._Reader(nvml, info).get("recovery_action", lambda: reader._recovery_action(nvml, "h")) is None
    assert info.field_errors == {}
    nvml, _ = fake_nvml(field_return=pynvml.NVML_ERROR_GPU_IS_LOST)
    reader._Reader(nvml, info).get("recovery_action", lambda: reader._recovery_action(nvml, "h"))
    assert "recovery_action" in info.field_errors


def test_recovery_action_with_an_nvidia_ml_py_without_the_field():
    nvml, _ = fake_nvml()
    del nvml.NVML_FI_DEV_GET_GPU_RECOVERY_ACTION
    info = GpuInfo(index=0)
    assert reader._Reader(nvml, info).get("recovery_action", lambda: reader._recovery_action(nvml, "h")) is None
    assert info.field_errors["recovery_action"].startswith("not available in this NVML")


@pytest.mark.parametrize(("events", "current", "supported"), [(True, 0x1, 0x1FF), (False, 0x3, 0xFF)])
def test_clock_event_reasons_current_and_supported(events, current, supported):
    nvml, _ = fake_nvml(events=events)
    assert reader._clock_events(nvml, "h") == current
    assert reader._clock_events(nvml, "h", supported=True) == supported


def test_new_fields_round_trip_and_old_recordings_replay_as_none():
    inv = GpuInventory(available=True, gpus=[GpuInfo(index=0, recovery_action=1, clock_event_reasons_supported=0x1FF)])
    again = GpuInventory.from_json(inv.to_json())
    assert again.gpus[0].recovery_action == 1 and again.gpus[0].clock_event_reasons_supported == 0x1FF
    old = GpuInventory.from_json({"available": True, "gpus": [{"index": 0, "name": "NVIDIA H200"}]})
    assert old.gpus[0].recovery_action is None and old.gpus[0].clock_event_reasons_supported is None
