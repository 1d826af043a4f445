#!/usr/bin/env python3
"""What each NVML call of gpunode's inventory read costs on this machine: every `nvml*`
function of pynvml is wrapped with a timer while NvmlGpuSource().collect() runs, a few times
over; per function the median of the per-pass totals. nvmlInit and nvmlShutdown are timed too.
A benchmark, not a test: run it on a GPU node (the lent H200) to see which reads the gate
should not pay for.

    PYTHONPATH=agent python3 benchmarks/nvml_call_costs.py --passes 7 -o nvml-call-costs.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
import time
from collections import defaultdict


def wrap_all(nvml, totals: dict[str, float], counts: dict[str, int]) -> None:
    for name in dir(nvml):
        fn = getattr(nvml, name)
        if not name.startswith("nvml") or not callable(fn) or isinstance(fn, type):
            continue

        def timed(*args, _fn=fn, _name=name, **kwargs):
            started = time.perf_counter()
            try:
                return _fn(*args, **kwargs)
            finally:
                totals[_name] += time.perf_counter() - started
                counts[_name] += 1

        setattr(nvml, name, timed)


def gate_reads(nvml, h) -> list:
    """The reads of the gate's checks for one GPU, each a closure (what the concurrency test runs)."""
    sm, mem = nvml.NVML_CLOCK_SM, nvml.NVML_CLOCK_MEM
    unc, vol, agg = nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC
    return [
        lambda: nvml.nvmlDeviceGetName(h), lambda: nvml.nvmlDeviceGetUUID(h), lambda: nvml.nvmlDeviceGetPciInfo_v3(h),
        lambda: nvml.nvmlDeviceGetPersistenceMode(h), lambda: nvml.nvmlDeviceGetEccMode(h),
        lambda: nvml.nvmlDeviceGetTotalEccErrors(h, unc, vol), lambda: nvml.nvmlDeviceGetTotalEccErrors(h, unc, agg),
        lambda: nvml.nvmlDeviceGetRetiredPagesPendingStatus(h), lambda: nvml.nvmlDeviceGetRemappedRows(h),
        lambda: nvml.nvmlDeviceGetCurrentClocksEventReasons(h), lambda: nvml.nvmlDeviceGetSupportedClocksEventReasons(h),
        lambda: nvml.nvmlDeviceGetPerformanceState(h),
        lambda: nvml.nvmlDeviceGetClockInfo(h, sm), lambda: nvml.nvmlDeviceGetClockInfo(h, mem),
        lambda: nvml.nvmlDeviceGetMaxClockInfo(h, sm), lambda: nvml.nvmlDeviceGetMaxClockInfo(h, mem),
        lambda: nvml.nvmlDeviceGetApplicationsClock(h, sm), lambda: nvml.nvmlDeviceGetApplicationsClock(h, mem),
        lambda: nvml.nvmlDeviceGetDefaultApplicationsClock(h, sm),
        lambda: nvml.nvmlDeviceGetDefaultApplicationsClock(h, mem),
        lambda: nvml.nvmlDeviceGetTemperature(h, 0),
        lambda: nvml.nvmlDeviceGetTemperatureThreshold(h, nvml.NVML_TEMPERATURE_THRESHOLD_SLOWDOWN),
        lambda: nvml.nvmlDeviceGetCurrPcieLinkGeneration(h), lambda: nvml.nvmlDeviceGetMaxPcieLinkGeneration(h),
        lambda: nvml.nvmlDeviceGetCurrPcieLinkWidth(h), lambda: nvml.nvmlDeviceGetMaxPcieLinkWidth(h),
        lambda: nvml.nvmlDeviceGetMigMode(h), lambda: nvml.nvmlDeviceGetComputeMode(h),
        lambda: nvml.nvmlDeviceGetMemoryInfo(h), lambda: nvml.nvmlDeviceGetComputeRunningProcesses(h),
        lambda: nvml.nvmlDeviceGetGraphicsRunningProcesses(h),
    ]


def _safe_call(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a probe: an unsupported read still counts its time
        return exc


def concurrency(nvml, passes: int) -> dict:
    """Wall time of the gate's reads for GPU 0: in sequence, spread over threads (does NVML
    serialise them?), and the ECC/memory counters as one field-value batch."""
    from concurrent.futures import ThreadPoolExecutor

    nvml.nvmlInit()
    h = nvml.nvmlDeviceGetHandleByIndex(0)
    reads = gate_reads(nvml, h)
    out: dict = {"reads": len(reads)}
    for label, workers in (("sequential", 0), ("threads_4", 4), ("threads_8", 8), ("threads_32", 32)):
        walls = []
        for _ in range(passes):
            t0 = time.perf_counter()
            if workers:
                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(_safe_call, reads))
            else:
                for fn in reads:
                    _safe_call(fn)
            walls.append(time.perf_counter() - t0)
        out[label + "_ms"] = round(1000 * statistics.median(walls), 3)
    fields = [getattr(nvml, n) for n in ("NVML_FI_DEV_ECC_CURRENT", "NVML_FI_DEV_ECC_PENDING",
              "NVML_FI_DEV_ECC_DBE_VOL_TOTAL", "NVML_FI_DEV_ECC_DBE_AGG_TOTAL", "NVML_FI_DEV_RETIRED_SBE",
              "NVML_FI_DEV_RETIRED_DBE", "NVML_FI_DEV_RETIRED_PENDING", "NVML_FI_DEV_REMAPPED_COR",
              "NVML_FI_DEV_REMAPPED_UNC", "NVML_FI_DEV_REMAPPED_PENDING", "NVML_FI_DEV_REMAPPED_FAILURE",
              "NVML_FI_DEV_PCIE_REPLAY_COUNTER") if hasattr(nvml, n)]
    walls = []
    for _ in range(passes):
        t0 = time.perf_counter()
        values = nvml.nvmlDeviceGetFieldValues(h, fields)
        walls.append(time.perf_counter() - t0)
    out["field_batch_ms"] = round(1000 * statistics.median(walls), 3)
    out["field_batch"] = [{"field": int(v.fieldId), "return": int(v.nvmlReturn), "type": int(v.valueType),
                           "value": int(v.value.ullVal)} for v in values]
    walls = []
    for _ in range(passes):
        t0 = time.perf_counter()
        for fn in reads[4:9]:
            _safe_call(fn)
        walls.append(time.perf_counter() - t0)
    out["same_counters_one_by_one_ms"] = round(1000 * statistics.median(walls), 3)
    each = {}
    for i, fn in enumerate(reads):
        walls = []
        for _ in range(passes):
            t0 = time.perf_counter()
            _safe_call(fn)
            walls.append(time.perf_counter() - t0)
        each[i] = round(1000 * statistics.median(walls), 3)
    out["each_read_ms"] = each
    t0 = time.perf_counter()
    nvml.nvmlShutdown()
    out["shutdown_ms"] = round(1000 * (time.perf_counter() - t0), 3)
    print(json.dumps({k: v for k, v in out.items() if k != "field_batch"}))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    started = time.perf_counter()
    import pynvml

    import_s = time.perf_counter() - started
    from gpunode.host.gpu.nvml import NvmlGpuSource

    passes: list[dict[str, float]] = []
    counts: dict[str, int] = {}
    walls = []
    for _ in range(args.passes):
        totals: dict[str, float] = defaultdict(float)
        counts = defaultdict(int)
        wrap_all(pynvml, totals, counts)
        t0 = time.perf_counter()
        inventory = NvmlGpuSource().collect()
        walls.append(time.perf_counter() - t0)
        passes.append(dict(totals))
        importlib.reload(pynvml)  # the originals again: the next pass wraps them afresh
    names = sorted({n for p in passes for n in p}, key=lambda n: -statistics.median(p.get(n, 0.0) for p in passes))
    rows = [{"function": n, "calls_per_pass": counts.get(n, 0),
             "median_ms_per_pass": round(1000 * statistics.median(p.get(n, 0.0) for p in passes), 3)}
            for n in names]
    result = {"schema": "gpunode.nvml_call_costs/1", "python": sys.version.split()[0],
              "pynvml_import_s": round(import_s, 4), "passes": args.passes,
              "collect_wall_ms": [round(1000 * w, 2) for w in walls],
              "gpus": len(inventory.gpus), "driver": inventory.driver_version, "calls": rows}
    result["concurrency"] = concurrency(pynvml, args.passes)
    from gpunode.host.gpu.source import GATE_UNREAD

    gate_walls = []
    for _ in range(args.passes):  # the gate's read: what it leaves out, left out (cold each pass)
        importlib.reload(pynvml)
        t0 = time.perf_counter()
        NvmlGpuSource(GATE_UNREAD).collect()
        gate_walls.append(time.perf_counter() - t0)
    result["gate_collect_wall_ms"] = [round(1000 * w, 2) for w in gate_walls]
    print("gate collect wall ms:", result["gate_collect_wall_ms"])
    for row in rows[:40]:
        print(f"{row['function']:50s} {row['calls_per_pass']:4d} calls {row['median_ms_per_pass']:8.3f} ms")
    print("collect wall ms:", result["collect_wall_ms"])
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
