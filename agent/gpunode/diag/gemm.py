"""Correctness GEMM: the same seeded inputs on every GPU, every product checked on the device.

Protocol (backends only run kernels): the first three products are checked against A·(B·1)
within the dtype's error bound (ABFT) and against each other; every later product's row
checksums must equal that reference bit for bit. Across GPUs of the same model the reference
checksums must be identical too (same inputs, same algorithm, same bits), as gpu-burn compares.
In sustained runs every PLAIN_EVERY-th batch is timed without per-product checks (only its last
product is checked) to measure what the verification costs, side by side under the same power
and thermal state.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from gpunode.diag.backend import GemmWorker, Mismatch, Reference
from gpunode.diag.results import TestResult

BATCH = 32  # products per batch (one device sync per batch)
PLAIN_EVERY = 16
MAX_LISTED = 10  # mismatching products listed in a result


@dataclass(frozen=True)
class GemmPlan:
    dtype: str = "bf16"
    size: int = 8192
    seed: int = 20261201
    batch: int = BATCH
    quick_batches: int = 4  # level 1: products after the reference = quick_batches * batch


@dataclass
class GemmRun:
    gpu: int
    dtype: str
    size: int
    reference: Reference | None = None
    products: int = 0
    checked_products: int = 0
    checked_tflops: list[float] = field(default_factory=list)
    plain_tflops: list[float] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    mismatch_count: int = 0
    seconds: float = 0.0
    started: float = 0.0  # sampler clock (time.monotonic), for the telemetry window
    ended: float = 0.0


def run_gemm(worker: GemmWorker, gpu: int, plan: GemmPlan, seconds: float | None, stop: threading.Event,
             measure_plain: bool = False, reference: Reference | None = None) -> GemmRun:
    """Reference first (unless given), then batches until `seconds` pass (None: plan.quick_batches)."""
    run = GemmRun(gpu, plan.dtype, plan.size, started=time.monotonic())
    run.reference = reference or worker.reference()
    iteration = 3
    run.products = run.checked_products = 3
    deadline = None if seconds is None else time.monotonic() + seconds
    n = 0
    while not stop.is_set():
        if deadline is None and n >= plan.quick_batches or deadline is not None and n and time.monotonic() >= deadline:
            break
        plain = measure_plain and n % PLAIN_EVERY == PLAIN_EVERY - 1
        batch = worker.batch(plan.batch, iteration, check=not plain)
        if plain:  # still check the batch's last product, at almost no cost
            tail = worker.batch(1, iteration + batch.products, check=True)
            run.mismatches += tail.mismatches[: MAX_LISTED]
            run.mismatch_count += len(tail.mismatches)
            run.checked_products += 1
            iteration += 1
            run.products += 1
        else:
            run.checked_products += batch.products
        iteration += batch.products
        run.products += batch.products
        if batch.seconds > 0:
            (run.plain_tflops if plain else run.checked_tflops).append(batch.products * worker.flops / batch.seconds / 1e12)
        run.mismatch_count += len(batch.mismatches)
        room = MAX_LISTED - len(run.mismatches)
        run.mismatches += batch.mismatches[: max(room, 0)]
        n += 1
    run.ended = time.monotonic()
    run.seconds = run.ended - run.started
    return run


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 1) if values else None


def gemm_result(run: GemmRun, name: str = "gemm.correctness") -> TestResult:
    """FAIL naming the GPU, the product and the magnitude when any check failed."""
    ref = run.reference
    figures = {"products": run.products, "products_checked": run.checked_products, "dtype": run.dtype,
               "m": run.size, "n": run.size, "k": run.size, "seconds": round(run.seconds, 2), **_throughput(run)}
    checked = figures.get("tflops_checked")
    detail: dict = {}
    problems = []
    if ref is not None:
        figures["abft_max_ratio"] = round(ref.abft_max_ratio, 4) if ref.abft_max_ratio < 1e30 else "inf"
        figures["element_max_ratio"] = round(ref.element_max_ratio, 4) if ref.element_max_ratio < 1e30 else "inf"
        problems += _reference_problems(ref, run.dtype, detail)
    if run.mismatch_count:
        first = run.mismatches[0]
        problems.append(f"{run.mismatch_count} product(s) differ from the reference; first: product {first.iteration}, "
                        f"{first.rows} row checksum(s) off by up to {first.max_abs:.4g}")
        detail["mismatches"] = [{"iteration": m.iteration, "rows": m.rows, "max_abs": _finite(m.max_abs)}
                                for m in run.mismatches]
    rate = f", {checked:.0f} TFLOP/s checked" if checked else ""
    if problems:
        return TestResult(name, run.gpu, "FAIL", f"GPU{run.gpu}: wrong results: " + "; ".join(problems),
                          figures, detail or None)
    return TestResult(name, run.gpu, "PASS", f"{run.checked_products} of {run.products} products checked, "
                                             f"all correct{rate}", figures, detail or None)


def _throughput(run: GemmRun) -> dict:
    """Median TFLOP/s of the checked and the plain batches, and what the checking cost (%)."""
    out: dict = {}
    checked, plain = _median(run.checked_tflops), _median(run.plain_tflops)
    if checked is not None:
        out["tflops_checked"] = checked
    if plain is not None:
        out["tflops_plain"] = plain
        if checked:
            out["verification_overhead_pct"] = round(100 * (plain - checked) / plain, 2)
    return out


def _reference_problems(ref: Reference, dtype: str, detail: dict) -> list[str]:
    """What the reference product (0, checked in full precision and repeated) shows wrong; the
    wrong elements go into detail."""
    problems = []
    if ref.abft_bad_rows:
        problems.append(f"product 0 fails its ABFT checksum on {ref.abft_bad_rows} row(s), "
                        f"worst {_ratio_text(ref.abft_max_ratio)} the {dtype} error bound")
    if ref.bad_elements:
        first = ref.first_bad[0] if ref.first_bad else {}
        problems.append(f"product 0 has {ref.bad_elements} element(s) off the full-precision product, first "
                        f"C[{first.get('row')},{first.get('col')}] = {first.get('got', 0):.6g} instead of "
                        f"{first.get('want', 0):.6g}")
        detail["wrong_elements"] = ref.first_bad
    if ref.repeat_mismatch:
        problems.append(f"products 0-2 of the same inputs differ (row checksums by up to {ref.repeat_mismatch:.4g})")
    return problems


def _finite(x: float):
    return x if x < float("inf") else "inf"


def _ratio_text(ratio: float) -> str:
    return "beyond" if ratio == float("inf") else f"{ratio:.3g}x"


def cross_gpu_result(references: dict[int, Reference], names: dict[int, str]) -> TestResult | None:
    """Same model, same inputs, same algorithm -> the same reference bits on every GPU."""
    if len(references) < 2:
        return None
    by_model: dict[str, list[int]] = {}
    for gpu in sorted(references):
        by_model.setdefault(names.get(gpu, "?"), []).append(gpu)
    odd, notes, compared = [], [], 0
    for model, gpus in by_model.items():
        if len(gpus) < 2:
            notes.append(f"GPU{gpus[0]} ({model}) has no GPU of its model to compare with")
            continue
        compared += len(gpus)
        votes = Counter(references[g].fingerprint for g in gpus)
        common, count = votes.most_common(1)[0]
        if count == len(gpus):
            continue
        if count * 2 > len(gpus):
            odd += [g for g in gpus if references[g].fingerprint != common]
        else:
            odd += gpus  # no majority: every one of them is suspect
    if odd:
        return TestResult("gemm.cross_gpu", None, "FAIL",
                          "GPU" + ", GPU".join(map(str, sorted(odd))) + " computed a different product from the "
                          "same inputs than the other GPUs of the same model",
                          {"gpus": sorted(references)}, {"disagreeing": sorted(odd)})
    if not compared:
        return TestResult("gemm.cross_gpu", None, "SKIP", "; ".join(notes), {"gpus": sorted(references)})
    text = f"{compared} GPUs computed bit-identical products" + (f" ({'; '.join(notes)})" if notes else "")
    return TestResult("gemm.cross_gpu", None, "PASS", text, {"gpus": sorted(references)})
