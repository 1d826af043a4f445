"""Builders for the baselines tests: GPU identities (the recorded H100 inventory and synthetic
H200/A100/8-GPU ones) and bench result documents written to the gpunode.bench/1 contract, with
the conditions agent/bench/micro.py and nccl.py put on their metrics."""

from __future__ import annotations

import json
from dataclasses import replace

from gpunode.bench.run import gpu_summary
from gpunode.host.gpu.model import GpuInventory
from testkit import FIXTURES

NVML_H100 = FIXTURES / "nvml" / "h100-sxm-1gpu.json"
GIB = 1 << 30


def h100_inventory() -> GpuInventory:
    return GpuInventory.from_json(json.loads(NVML_H100.read_text()))


def inventory_like(name: str, device_id: int, count: int) -> GpuInventory:
    """`count` copies of the recorded H100 with another model name and PCI device id."""
    base = h100_inventory()
    gpu = base.gpus[0]
    gpus = [
        replace(gpu, index=i, name=name, pci_device_id=(device_id << 16) | 0x10DE, uuid=f"GPU-test-{i}",
                pci_bus_id=f"00000000:{0x18 + i:02x}:00.0")
        for i in range(count)
    ]
    return replace(base, gpus=gpus)


def gpus_of(inv: GpuInventory) -> dict:
    return gpu_summary(inv)


def h100_gpus(count: int = 1) -> dict:
    return gpus_of(h100_inventory() if count == 1 else inventory_like("NVIDIA H100 80GB HBM3", 0x2330, count))


def metric(name: str, value: float | None, unit: str, gpu: int | None = 0, status: str = "ok", message: str = "",
           cov: float | None = 0.004, **conditions) -> dict:
    spread = None
    if value is not None and cov is not None:
        spread = {"n": 5, "min": value * 0.99, "max": value * 1.01, "median": value, "cov": cov}
    return {"name": name, "gpu": gpu, "value": value, "unit": unit, "status": status, "message": message,
            "conditions": conditions, "spread": spread}


def gemm(dtype: str, value: float | None, gpu: int = 0, size: int = 8192, **kw) -> dict:
    return metric(f"gemm.{dtype}", value, "TFLOP/s", gpu, dtype=dtype, m=size, n=size, k=size, backend="torch",
                  flops_per_gemm=2 * size**3, data="randn", layout="row-major A and B, out= preallocated",
                  aggregate="median of 5", iters_per_batch=14, **kw)


def d2d(value: float, gpu: int = 0, nbytes: int = GIB) -> dict:
    return metric("hbm.d2d", value, "GB/s", gpu, bytes=nbytes, counting="read+write", backend="torch",
                  aggregate="median of 5 batches of 10")


def host_copy(name: str, value: float, gpu: int = 0, nbytes: int = GIB) -> dict:
    memory = name.split(".")[1]
    return metric(name, value, "GB/s", gpu, bytes=nbytes, host_memory=memory, counting="bytes transferred once",
                  backend="torch", numa_node=0, aggregate="median of 5 batches of 3")


def nccl(test: str, value: float | None, ngpus: int, largest: int, algo: dict | None = None, status: str = "ok",
         message: str = "") -> dict:
    return metric(f"nccl.{test}.busbw", value, "GB/s", None, status, message, None, test=test, ngpus=ngpus, nprocs=1,
                  min_bytes=8, max_bytes=largest, dtype="float", op="sum", iters=20, warmup=5, check=1,
                  **{"algo env": algo or {}}, aggregate="out-of-place busbw at the largest size",
                  largest_bytes=largest)


def h100_metrics(scale: float = 1.0, gpu: int = 0) -> list[dict]:
    """One GPU's figures: the lent H100's (gpunode bench, 2026-11-24) times `scale`."""
    return [
        gemm("bf16", 710 * scale, gpu), gemm("fp16", 677 * scale, gpu), gemm("tf32", 350 * scale, gpu),
        d2d(3010 * scale, gpu), host_copy("h2d.pinned", 52.8 * scale, gpu), host_copy("d2h.pinned", 55.0 * scale, gpu),
        host_copy("h2d.pageable", 16.6 * scale, gpu),
    ]


def bench_doc(gpus: dict, metrics: list[dict], mode: str = "quick", host: str = "testhost",
              time: str = "2026-11-23T00:00:00+00:00") -> dict:
    statuses = {m["status"] for m in metrics}
    status = "FAIL" if "fail" in statuses else "UNKNOWN" if "error" in statuses or "ok" not in statuses else "OK"
    return {"schema": "gpunode.bench/1", "gpunode_version": "0.1.0", "host": host, "time": time,
            "time_epoch": 1795478400.0, "mode": mode, "gpus": gpus, "tools": {"torch": "2.11.0"},
            "metrics": metrics, "status": status, "exit_code": {"OK": 0, "FAIL": 2, "UNKNOWN": 3}[status]}


def write_yaml(path, text: str):
    path.write_text(text)
    return path
