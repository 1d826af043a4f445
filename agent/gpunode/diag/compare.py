"""diag's figures as bench metrics (gpunode.bench/1 shape), so one compare() judges them against
the SKU baseline and the node's history keeps them: the checked GEMM's sustained TFLOP/s is
`gemm.<dtype>` with the bench's conditions (8192³, randn inputs), the memory test's kernel
traffic is `hbm.memtest`. Short level-1 bursts are not figures (they run faster than sustained
load on a power-limited GPU) and are left out.
"""

from __future__ import annotations

from typing import Any

from gpunode.baselines.select import Selection
from gpunode.diag.results import TestResult
from gpunode.exits import worst_exit

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


def floors_for(selection: Selection | None):
    from gpunode.diag.verdicts import Floors

    return Floors.from_mapping(selection.baseline.diag if selection is not None else None)


def judge_document(doc: dict, selection: Selection | None, topology: list[dict] | None = None):
    """The diag document's figures against a chosen baseline, else (none matches these GPUs)
    against this host's topology expectation -> baselines.compare.Verdicts."""
    from gpunode.baselines.compare import judge, judge_topology
    from gpunode.bench.results import SCHEMA as BENCH_SCHEMA
    from gpunode.bench.results import BenchDocument

    bench = BenchDocument.from_json({
        "schema": BENCH_SCHEMA, "gpunode_version": doc.get("gpunode_version", ""), "host": doc.get("host", ""),
        "time": doc.get("time", ""), "time_epoch": doc.get("time_epoch", 0.0), "mode": "full",
        "gpus": doc.get("gpus") or {}, "tools": doc.get("tools") or {}, "metrics": doc.get("metrics") or [],
        "topology": topology or None,
    })
    if selection is None:
        return judge_topology(bench, "no baseline matches these GPUs")
    return judge(bench, selection, unmeasured=False)


def exit_with_compare(diag_code: int, verdicts) -> int:
    """The run's exit code and the comparison's, the worse (FAIL > UNKNOWN > WARN > OK); a
    comparison with nothing to compare (level 1 records no figure; hbm.memtest has none in
    the shipped baselines) leaves the run's code as it is: it never turns a healthy run UNKNOWN."""
    if not verdicts.compared:
        return diag_code
    return worst_exit(diag_code, verdicts.exit_code)


def nothing_to_compare(verdicts, level: int) -> str:
    names = sorted({r.metric for r in verdicts.rows})
    if names:
        return f"nothing to compare: baseline {verdicts.baseline} has no figure for {', '.join(names)}"
    return (f"nothing to compare: diag level {level} records no figure (the checked GEMM's sustained "
            f"TFLOP/s and the memory test's GB/s come from levels 2 and 3)")
