"""diag's figures (gpunode.diag.metrics) judged against the SKU baseline and the node's history."""

from __future__ import annotations

from gpunode.baselines.select import Selection
from gpunode.exits import worst_exit


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
