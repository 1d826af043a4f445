"""Faults injected through diag's backend seam, caught by the real kernels on the GPU (issue 14).

The Injector is a Python object handed to the backend here; gpunode's CLI never builds one.
Each fault must end FAIL or ERROR; the script exits 1 if any reads PASS.

    PYTHONPATH=agent python3 benchmarks/diag_faults.py OUT/faults.json
"""

from __future__ import annotations

import json
import sys
import threading

import torch

from gpunode.diag.backend import Injector
from gpunode.diag.backend_torch import TorchDiag
from gpunode.diag.gemm import GemmPlan, gemm_result, run_gemm
from gpunode.diag.memtest import run_memtest


def gemm_case(label: str, inj: Injector) -> dict:
    backend = TorchDiag(torch, inj)
    dev = backend.devices()[0]
    worker = backend.gemm(dev, "bf16", 8192, 20261201)
    try:
        result = gemm_result(run_gemm(worker, 0, GemmPlan(), None, threading.Event()))
    finally:
        worker.close()
        backend.release()
    return {"fault": label, "fired": inj.fired, "status": result.status, "message": result.message,
            "detail": result.detail}


def mem_case(label: str, inj: Injector, fraction: float) -> dict:
    backend = TorchDiag(torch, inj)
    dev = backend.devices()[0]
    result = run_memtest(backend, dev, 0, 1, threading.Event(), fraction=fraction)
    return {"fault": label, "fired": inj.fired, "status": result.status, "message": result.message,
            "figures": result.figures, "detail": result.detail}


def main(path: str) -> int:
    cases = [
        gemm_case("one low mantissa bit flipped in product 40", Injector(flip_bit={(0, 40): (123457, 1)})),
        gemm_case("sign bit of one element flipped in every product (consistently wrong GPU)",
                  Injector(flip_bit={(0, i): (999, 15) for i in range(200)})),
        mem_case("one bit of one word flipped after address-in-address was written",
                 Injector(corrupt_word={(0, 128): (3, 123457)}), 0.25),
        mem_case("allocation failure", Injector(fail_alloc={0}), 0.9),
    ]
    healthy = gemm_case("no fault (control)", Injector())
    cases.append(healthy)
    with open(path, "w") as f:
        json.dump(cases, f, indent=1)
    bad = [c for c in cases[:-1] if c["status"] == "PASS" or not c["fired"]]
    for c in cases:
        print(f"{c['status']:5} {c['fault']}: {c['message'][:150]}")
    if healthy["status"] != "PASS":
        print("control run did not PASS", file=sys.stderr)
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
