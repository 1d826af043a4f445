"""diag's figures as bench metrics (gpunode.bench/1 shape), so one compare() judges them against
the SKU baseline and the node's history keeps them: the checked GEMM's sustained TFLOP/s is
`gemm.<dtype>` with the bench's conditions (8192³, randn inputs), the memory test's kernel
traffic is `hbm.memtest`. Short level-1 bursts are not figures (they run faster than sustained
load on a power-limited GPU) and are left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # results imports this module to write its document: a name for annotations only
    from gpunode.diag.results import TestResult

SUSTAINED = ("gemm.sustained", "stress.gemm")


def metrics_of(results: list[TestResult]) -> list[dict[str, Any]]:
    out = []
    load_tel = {(r.name, r.gpu): r.telemetry for r in results if r.name.startswith("load.")}
    for r in results:
        f = r.figures
        if r.name in SUSTAINED and r.status != "ERROR" and isinstance(f.get("tflops_checked"), (int, float)):
            tel = load_tel.get(("load.gemm" if r.name == "gemm.sustained" else "load.stress", r.gpu))
            out.append(_metric(f"gemm.{f.get('dtype', 'bf16')}", r.gpu, f["tflops_checked"], "TFLOP/s",
                               {"dtype": f.get("dtype"), "m": f.get("m"), "n": f.get("n"), "k": f.get("k"),
                                "data": "randn", "checked": True, "source": r.name}, tel))
        if r.name == "hbm.memtest" and r.status in ("PASS", "WARN", "FAIL") and isinstance(f.get("gbps"), (int, float)):
            out.append(_metric("hbm.memtest", r.gpu, f["gbps"], "GB/s",
                               {"counting": "kernel read+write", "bytes": f.get("bytes_tested")}, None))
    return out


def _metric(name: str, gpu: int | None, value: float, unit: str, conditions: dict, tel: dict | None) -> dict:
    data = {"name": name, "gpu": gpu, "value": value, "unit": unit, "status": "PASS", "message": "",
            "conditions": conditions, "spread": None}
    if tel:
        data["telemetry"] = tel
    return data
