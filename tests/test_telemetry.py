"""The shared NVML telemetry sampler: summaries, replay, foreign processes, Xid events."""

from __future__ import annotations

import json
import os
import time

from gpunode.host.gpu.telemetry import (
    ReplayTelemetrySource,
    Sample,
    TelemetrySampler,
    Trace,
    own_process_test,
    summarize,
)


def _trace(**over) -> Trace:
    rows = []
    for i in range(5):
        rows.append(Sample(t=float(i), gpu=0, sm_clock_mhz=1980 - i * 10, mem_clock_mhz=3201, power_w=600 + i,
                           power_limit_w=700, temp_c=50 + i, mem_temp_c=60, clock_events=("sw_power_cap",),
                           pcie_gen=5, pcie_width=16, pcie_max_gen=5, pcie_max_width=16, pcie_replay=3,
                           ecc_uncorrected=0, ecc_corrected=1, remap_uncorrectable=0, remap_pending=False,
                           remap_failure=False, processes=()))
    trace = Trace(samples=rows)
    for k, v in over.items():
        setattr(trace, k, v)
    return trace


def test_summary_of_a_healthy_window():
    s = summarize(_trace())
    assert s["samples"] == 5 and s["duration_s"] == 4.0 and s["gpus"] == [0]
    assert s["sm_clock_mhz"] == {"min": 1940, "median": 1960, "max": 1980}
    assert s["power_w"] == {"median": 602, "max": 604} and s["power_limit_w"] == 700
    assert s["temp_c"] == {"max": 54} and s["mem_temp_c"] == {"max": 60}
    assert s["clock_events"] == ["sw_power_cap"] and s["throttle_events"] == []
    assert s["ecc_uncorrected_delta"] == 0 and s["pcie_replay_delta"] == 0
    assert s["remap_failure"] is False and s["xid"] == [] and s["foreign_processes"] == []
    assert s["pcie"] == {"gen": 5, "width": 16, "max_gen": 5, "max_width": 16}


def test_summary_sees_throttle_new_errors_and_remap_failure():
    trace = _trace()
    trace.samples[2].clock_events = ("sw_power_cap", "hw_slowdown")
    trace.samples[4].ecc_uncorrected = 2
    trace.samples[4].pcie_replay = 10
    trace.samples[3].remap_failure = True
    s = summarize(trace)
    assert s["throttle_events"] == ["hw_slowdown"]
    assert s["ecc_uncorrected_delta"] == 2 and s["pcie_replay_delta"] == 7 and s["remap_failure"] is True


def test_summary_per_gpu_and_window():
    trace = _trace()
    trace.samples.append(Sample(t=2.5, gpu=1, power_w=100, processes=((42, "hog", 1 << 30),)))
    trace.foreign[42] = ("hog", 1 << 30)
    trace.xids.append({"t": 2.6, "gpu": 1, "xid": 79})
    assert summarize(trace, gpus=[0])["foreign_processes"] == [] and summarize(trace, gpus=[0])["xid"] == []
    one = summarize(trace, gpus=[1])
    assert one["foreign_processes"] == [{"pid": 42, "name": "hog", "used_bytes": 1 << 30}]
    assert one["xid"] == [{"t": 2.6, "gpu": 1, "xid": 79}]
    window = trace.between(since=3.0)
    assert [s.t for s in window.samples] == [3.0, 4.0] and window.xids == [] and window.foreign == {}
    assert summarize(Trace()) is None


def test_failed_reads_are_reported_not_averaged():
    trace = _trace()
    trace.samples.append(Sample(t=5.0, gpu=0, error="NVMLError_GpuIsLost: GPU is lost"))
    s = summarize(trace)
    assert s["read_errors"] == {"count": 1, "first": "NVMLError_GpuIsLost: GPU is lost"}
    assert s["samples"] == 6 and s["sm_clock_mhz"]["min"] == 1940


def test_trace_round_trips_through_json():
    trace = _trace(xids=[{"t": 1.0, "gpu": 0, "xid": 48}], foreign={7: ("python", 123)},
                   unavailable={"xid": "no event set"})
    trace.samples[0].processes = ((7, "python", 123),)
    again = Trace.from_json(json.loads(json.dumps(trace.to_json())))
    assert again.to_json() == trace.to_json()
    assert summarize(again) == summarize(trace)


def _wait_for(cond, limit=20.0):
    end = time.monotonic() + limit
    while not cond() and time.monotonic() < end:
        time.sleep(0.02)
    assert cond()


def test_sampler_thread_records_samples_xids_and_foreign_processes():
    recorded = _trace(xids=[{"t": 0.0, "gpu": 0, "xid": 79}])
    for s in recorded.samples:
        s.processes = ((os.getpid(), "me", 1), (999_999_999, "hog", 2))
    sampler = TelemetrySampler(ReplayTelemetrySource(recorded), interval_s=0.01,
                               ours=lambda pid: pid == os.getpid())
    sampler.start()
    _wait_for(lambda: len(sampler.trace().samples) >= 6)
    trace = sampler.stop()
    assert trace.xids and trace.xids[0]["xid"] == 79 and trace.xids[0]["gpu"] == 0
    assert list(trace.foreign) == [999_999_999]
    s = trace.summary()
    assert [p["pid"] for p in s["foreign_processes"]] == [999_999_999]
    assert s["samples"] >= 6
    assert sampler._thread is None  # the thread ended


def test_sampler_keeps_going_when_a_read_fails():
    class Broken(ReplayTelemetrySource):
        def read(self, gpu, now, processes):
            raise RuntimeError("GPU is lost")

    sampler = TelemetrySampler(Broken(_trace()), interval_s=0.01, ours=lambda pid: True)
    sampler.start()
    _wait_for(lambda: len(sampler.trace().samples) >= 3)
    trace = sampler.stop()
    assert all(s.error == "RuntimeError: GPU is lost" for s in trace.samples)
    assert trace.summary()["read_errors"]["count"] == len(trace.samples)


def test_sampler_without_telemetry_is_not_fatal():
    class NoNvml(ReplayTelemetrySource):
        def open(self):
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    trace = TelemetrySampler(NoNvml(Trace())).start().stop()
    assert trace.samples == [] and "libnvidia-ml" in trace.errors[0]


def test_own_process_test_follows_parents(tmp_path):
    for pid, ppid in ((10, 1), (20, 10), (30, 20), (40, 1)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "stat").write_text(f"{pid} (a (b) c) S {ppid} 0 0\n")
    ours = own_process_test(me=10, proc=tmp_path)
    assert ours(10) and ours(30) and not ours(40) and not ours(55)


# --- the live source over a stand-in for pynvml (nvidia-ml-py's names and constants) -------------

def _fake_pynvml(xid_refused=False, lost=False):
    import ctypes
    from types import SimpleNamespace

    import pynvml

    handles = [ctypes.c_void_p(0x1000), ctypes.c_void_p(0x2000)]
    events = [SimpleNamespace(device=handles[1], eventData=79)]
    mem_temp = pynvml.c_nvmlFieldValue_t()
    mem_temp.nvmlReturn, mem_temp.valueType, mem_temp.value.uiVal = pynvml.NVML_SUCCESS, 1, 71

    def not_supported(*_):
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def wait(_set, timeout_ms):
        if events:
            return events.pop()
        raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)

    def register(h, kind, s):
        if xid_refused:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def clock(h, which):
        if lost and h is handles[1]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return 1755 if which == pynvml.NVML_CLOCK_SM else 3201

    fake = SimpleNamespace(**{k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith(("NVML_", "nvmlEventType"))})
    fake.NVMLError = pynvml.NVMLError
    fake.__dict__.update(
        nvmlInit=lambda: None, nvmlShutdown=lambda: None, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda i: handles[i], nvmlEventSetCreate=lambda: "set",
        nvmlEventSetFree=lambda s: None, nvmlDeviceRegisterEvents=register, nvmlEventSetWait_v2=wait,
        nvmlDeviceGetMaxPcieLinkGeneration=lambda h: 5, nvmlDeviceGetMaxPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetEccMode=lambda h: (1, 1), nvmlDeviceGetClockInfo=clock,
        nvmlDeviceGetPowerUsage=lambda h: 690_500, nvmlDeviceGetEnforcedPowerLimit=lambda h: 700_000,
        nvmlDeviceGetTemperature=lambda h, s: 64, nvmlDeviceGetFieldValues=lambda h, ids: [mem_temp],
        nvmlDeviceGetUtilizationRates=lambda h: SimpleNamespace(gpu=100, memory=40),
        nvmlDeviceGetCurrentClocksEventReasons=lambda h: 0x4 | 0x8,
        nvmlDeviceGetCurrPcieLinkGeneration=lambda h: 5, nvmlDeviceGetCurrPcieLinkWidth=lambda h: 16,
        nvmlDeviceGetPcieReplayCounter=lambda h: 2, nvmlDeviceGetTotalEccErrors=lambda h, t, c: 0,
        nvmlDeviceGetRemappedRows=lambda h: (0, 1, 0, 0),
        nvmlDeviceGetComputeRunningProcesses=lambda h: [SimpleNamespace(pid=4242, usedGpuMemory=1 << 30)],
        nvmlDeviceGetGraphicsRunningProcesses=not_supported,
        nvmlSystemGetProcessName=lambda pid: b"hog.py",
    )
    return fake


def test_live_source_reads_nvml_fields_and_xid_events(monkeypatch):
    import sys

    from gpunode.host.gpu.nvml import NvmlTelemetrySource

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml())
    src = NvmlTelemetrySource()
    assert src.open() == [0, 1] and src.unavailable() == {}
    s = src.read(0, 1.0, processes=True)
    assert (s.sm_clock_mhz, s.mem_clock_mhz, s.power_w, s.power_limit_w, s.temp_c, s.mem_temp_c) == \
        (1755, 3201, 690.5, 700.0, 64, 71.0)
    assert s.clock_events == ("sw_power_cap", "hw_slowdown") and s.utilization_pct == 100.0
    assert (s.pcie_gen, s.pcie_width, s.pcie_max_gen, s.pcie_replay) == (5, 16, 5, 2)
    assert (s.ecc_uncorrected, s.remap_uncorrectable, s.remap_pending, s.remap_failure) == (0, 1, False, False)
    assert s.processes == ((4242, "hog.py", 1 << 30),)
    assert src.read(0, 1.1, processes=False).processes is None
    assert src.wait_events(0.01) == [{"gpu": 1, "xid": 79}] and src.wait_events(0.01) == []
    src.close()


def test_live_source_says_what_it_cannot_watch(monkeypatch):
    import sys

    import pynvml

    from gpunode.host.gpu.nvml import NvmlTelemetrySource

    monkeypatch.setitem(sys.modules, "pynvml", _fake_pynvml(xid_refused=True, lost=True))
    src = NvmlTelemetrySource()
    src.open()
    assert "Xid events not watched on GPU0" in src.unavailable()["xid"]
    try:
        src.read(1, 1.0, processes=False)
    except pynvml.NVMLError as exc:  # the sampler turns this into a sample with an error
        assert "lost" in str(exc).lower()
    else:
        raise AssertionError("a lost GPU must not read as a sample")
