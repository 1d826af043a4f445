"""HBM test: most of the GPU's free memory, patterns written and checked on the GPU.

Patterns (backend_torch.TorchMemTest): walking ones and walking zeros over the 64 bits of a
word, address-in-address (each word holds its own index, so aliasing between chunks shows), and
seeded random data; each pattern is written to every chunk before any chunk is checked, so the
data sits in HBM while the rest is written. A failed allocation is ERROR, never PASS.
"""

from __future__ import annotations

import threading
import time

from gpunode.bench.backend import Device
from gpunode.diag.backend import AllocationError, DiagBackend, WordError
from gpunode.diag.results import TestResult

GIB = 1 << 30
FRACTION = 0.90  # of the memory free when the test starts
CHUNK_BYTES = GIB


def _word(e: WordError) -> dict:
    return {"chunk": e.chunk, "word": e.word, "address": f"0x{e.address:x}",
            "expected": f"0x{e.expected & (2 ** 64 - 1):016x}", "found": f"0x{e.found & (2 ** 64 - 1):016x}",
            "bits": f"0x{(e.expected ^ e.found) & (2 ** 64 - 1):016x}"}


def run_memtest(backend: DiagBackend, device: Device, gpu: int, passes: int, stop: threading.Event,
                seed: int = 7, fraction: float = FRACTION, chunk_bytes: int = CHUNK_BYTES) -> TestResult:
    started = time.monotonic()
    free, total = backend.memory(device)
    target = int(free * fraction)
    try:
        worker = backend.memtest(device, target, chunk_bytes, seed)
    except AllocationError as exc:
        return TestResult("hbm.memtest", gpu, "ERROR", f"memory test could not allocate its memory: {exc}",
                          {"free_bytes": free, "total_bytes": total, "target_bytes": target})
    errors, moved, seconds, runs = 0, 0, 0.0, 0
    first: list[dict] = []
    failing: dict[str, int] = {}
    names = worker.patterns()
    try:
        for _ in range(passes):
            for i, name in enumerate(names):
                if stop.is_set():
                    break
                r = worker.run(i)
                runs += 1
                moved += r.bytes_moved
                seconds += r.seconds
                if r.errors:
                    errors += r.errors
                    failing[name] = failing.get(name, 0) + r.errors
                    first += [_word(e) for e in r.first[: max(0, 16 - len(first))]]
    finally:
        tested = worker.bytes_tested
        worker.close()
        backend.release()
    figures = {"bytes_tested": tested, "free_bytes": free, "total_bytes": total,
               "share_of_free": round(tested / free, 4) if free else None, "chunks": worker.chunks,
               "patterns": len(names), "passes": passes, "pattern_runs": runs, "errors": errors,
               "gbps": round(moved / seconds / 1e9, 1) if seconds else None,
               "seconds": round(time.monotonic() - started, 2)}
    gib = tested / GIB
    if errors:
        worst = ", ".join(f"{k}: {v}" for k, v in sorted(failing.items(), key=lambda kv: -kv[1])[:4])
        where = first[0]
        return TestResult("hbm.memtest", gpu, "FAIL",
                          f"GPU{gpu}: {errors} memory word(s) read back wrong in {gib:.1f} GiB ({worst}); first at "
                          f"{where['address']} expected {where['expected']} found {where['found']}",
                          figures, {"failing_words": first, "errors_by_pattern": failing})
    if runs < passes * len(names):
        return TestResult("hbm.memtest", gpu, "ERROR", f"stopped after {runs} of {passes * len(names)} pattern runs",
                          figures)
    share = f" ({tested / free:.0%} of free)" if free else ""  # a backend may report no free memory
    return TestResult("hbm.memtest", gpu, "PASS",
                      f"{gib:.1f} GiB{share} x {len(names)} patterns x {passes} pass(es), "
                      f"no errors, {figures['gbps']} GB/s", figures)
