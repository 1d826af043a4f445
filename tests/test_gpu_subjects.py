"""One spelling of a GPU as a subject in every output: GPU0, as the audit, gate, bench and diag
print it (gpunode.host.gpu.model.gpu_label), never gpu0, GPU 0 or gpu[0]."""

from __future__ import annotations

import sys

import pytest
from test_telemetry import _fake_pynvml


@pytest.fixture
def one_gpu_unopenable(monkeypatch):
    import pynvml

    fake = _fake_pynvml()
    handles = fake.nvmlDeviceGetHandleByIndex

    def handle(i):
        if i == 1:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return handles(i)

    fake.nvmlDeviceGetHandleByIndex = handle
    monkeypatch.setitem(sys.modules, "pynvml", fake)


def test_telemetry_names_a_gpu_it_cannot_watch_gpu1(one_gpu_unopenable):
    from gpunode.host.gpu.nvml import NvmlTelemetrySource

    src = NvmlTelemetrySource(xid_events=False)
    src.open()
    try:
        assert "GPU1" in src.unavailable() and "gpu1" not in src.unavailable()
    finally:
        src.close()


def test_the_label_is_the_audit_subject():
    from gpunode.host.gpu.model import GpuInfo, gpu_label

    assert gpu_label(3) == "GPU3" == GpuInfo(index=3).label
