"""diag's seam on numpy, on the CPU: the backend the test suite runs diag's protocols through
(ABFT and repeat checks, memory patterns, verified copies, verdicts, fault injection) where no
GPU and no torch are installed, as in CI.

It proves diag's logic, never a GPU: find_backend() never returns it, and numpy is a test
dependency only (the `dev` extra). It follows backend_torch's kernels step for step: the same
stored types (bf16 kept as its 16 bits, since numpy has no bfloat16; fp16; tf32 stored as fp32),
the same fp32 row checksums and error bounds (imported from backend_torch, so the two cannot
drift), the same patterns and the same Injector faults.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from gpunode.bench.backend import Device
from gpunode.diag.backend import (
    AllocationError,
    Batch,
    CopyResult,
    Injector,
    Mismatch,
    PatternResult,
    Reference,
    WordError,
)
from gpunode.diag.backend_torch import (
    ABFT_SIGMA,
    ACC_ROUNDOFF,
    DTYPES,
    IN_ROUNDOFF,
    MAX_REPORTED,
    OUT_ROUNDOFF,
    WALK_BITS,
)

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """fp32 -> the 16 bits of bfloat16, rounded to nearest even (as torch's .to(bfloat16))."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + (((bits >> 16) & 1) + 0x7FFF)
    return (rounded >> 16).astype(np.uint16)


def from_bf16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def store(x: np.ndarray, dtype: str) -> np.ndarray:
    """fp32 values in the GEMM's stored type: what a GPU leaves in C."""
    if dtype == "bf16":
        return to_bf16_bits(x)
    return x.astype(np.float16 if dtype == "fp16" else np.float32)


def as_float(stored: np.ndarray, dtype: str) -> np.ndarray:
    return from_bf16_bits(stored) if dtype == "bf16" else stored.astype(np.float32)


class NumpyDiag:
    name = "numpy"

    def __init__(self, injector: Injector | None = None, memory_bytes: int = 64 << 20):
        self.memory_bytes = memory_bytes  # what the CPU "device" offers the memory test
        self.inject = injector or Injector()
        self._gemm_inputs: dict[tuple, tuple] = {}
        self._inputs_lock = threading.Lock()  # GEMM threads ask at once: make the inputs once

    def unusable(self) -> str | None:
        return None

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def devices(self) -> list[Device]:
        return [Device(0, "cpu", None, (0, 0), 0)]

    def memory(self, device: Device) -> tuple[int, int]:
        return self.memory_bytes, self.memory_bytes

    def inputs(self, dtype: str, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """A and B in the stored type, made once from the seed: every device multiplies the same bits."""
        key = (dtype, size, seed)
        with self._inputs_lock:
            if key not in self._gemm_inputs:
                rng = np.random.default_rng(seed)
                a = store(rng.standard_normal((size, size), dtype=np.float32), dtype)
                b = store(rng.standard_normal((size, size), dtype=np.float32), dtype)
                self._gemm_inputs = {key: (a, b)}  # one input set at a time, as the torch backend
            return self._gemm_inputs[key]

    def gemm(self, device: Device, dtype: str, size: int, seed: int) -> NumpyGemm:
        if dtype not in DTYPES:
            raise ValueError(f"diag GEMM dtype {dtype!r}: one of {', '.join(DTYPES)}")
        a, b = self.inputs(dtype, size, seed)
        return NumpyGemm(self, device, a, b, dtype)

    def memtest(self, device: Device, nbytes: int, chunk_bytes: int, seed: int) -> NumpyMemTest:
        return NumpyMemTest(self, device, nbytes, chunk_bytes, seed)

    # copies within the memory the CPU "device" offers (stress asks for 256 MiB each)
    def pcie(self, device: Device, nbytes: int, seed: int) -> NumpyCopy:
        return NumpyCopy(f"GPU{device.index} host<->device", min(nbytes, self.memory_bytes), seed, legs=2)

    def p2p(self, src: Device, dst: Device, nbytes: int, seed: int) -> NumpyCopy | None:
        return NumpyCopy(f"GPU{src.index}->GPU{dst.index}", min(nbytes, self.memory_bytes), seed, legs=1)

    def release(self) -> None:
        self._gemm_inputs = {}


class NumpyGemm:
    """backend_torch.TorchGemm on numpy: fp32 row sums of each stored product are its checksum."""

    def __init__(self, diag: NumpyDiag, device: Device, a: np.ndarray, b: np.ndarray, dtype: str):
        self.diag, self.device, self.dtype = diag, device, dtype
        self.size = a.shape[0]
        self.flops = 2 * self.size ** 3
        self.a32, self.b32 = as_float(a, dtype), as_float(b, dtype)
        # accumulated in fp64 and rounded once: the same bits in every thread, whatever BLAS does
        self._exact = store((self.a32.astype(np.float64) @ self.b32.astype(np.float64)).astype(np.float32), dtype)
        self.c = self._exact.copy()
        self.sums = np.empty((64, self.size), dtype=np.float32)
        self.ref: np.ndarray | None = None

    def _product(self, iteration: int, out_row: np.ndarray | None) -> None:
        np.copyto(self.c, self._exact)
        fault = self.diag.inject.flip_bit.get((self.device.index, iteration))
        if fault is not None:
            element, bit = fault
            flat = self.c.reshape(-1).view(np.int16)  # 16-bit types; tf32 (fp32) flips in its low half
            flat[element] ^= np.int16((1 << bit) if bit < 15 else -(1 << 15))
            self.diag.inject.fired.append(f"GPU{self.device.index} product {iteration}: bit {bit} of element {element}")
        if out_row is not None:
            out_row[:] = as_float(self.c, self.dtype).sum(axis=1, dtype=np.float32)

    def reference(self) -> Reference:
        self._product(0, self.sums[0])
        elements = self._elementwise()
        for i in (1, 2):
            self._product(i, self.sums[i])
        rows = self.sums[:3]
        with np.errstate(invalid="ignore", over="ignore"):
            repeat = float(np.nan_to_num(np.abs(rows[1:] - rows[0]), nan=np.inf).max())
            a64, b64 = self.a32.astype(np.float64), self.b32.astype(np.float64)
            expected = a64 @ b64.sum(axis=1)
            c64 = as_float(self.c, self.dtype).astype(np.float64)
            out_term = OUT_ROUNDOFF[self.dtype] * np.sqrt((c64 * c64).sum(axis=1)) / 3 ** 0.5
            acc_term = ((2 * IN_ROUNDOFF[self.dtype] + ACC_ROUNDOFF) * self.size ** 0.5
                        * np.linalg.norm(a64, axis=1) * np.linalg.norm(b64))
            tol = ABFT_SIGMA * (out_term + acc_term) + 1e-6
            ratio = np.nan_to_num(np.abs(rows[0].astype(np.float64) - expected) / tol, nan=np.inf)
        self.ref = rows[0].copy()
        return Reference(self.ref.tobytes(), float(ratio.max()), int((ratio > 1).sum()), repeat, *elements)

    def _elementwise(self) -> tuple[int, float, list]:
        a32, b32 = self.a32, self.b32
        want = (a32.astype(np.float64) @ b32.astype(np.float64)).astype(np.float32)
        norms = np.outer(np.linalg.norm(a32, axis=1), np.linalg.norm(b32, axis=0)).astype(np.float32)
        noise = (ABFT_SIGMA * ACC_ROUNDOFF * 4) * norms
        if self.dtype == "tf32":
            noise += ABFT_SIGMA * 2 * IN_ROUNDOFF["tf32"] * norms
        got = as_float(self.c, self.dtype)
        with np.errstate(invalid="ignore", over="ignore"):
            err = np.nan_to_num(np.abs(got - want), nan=np.inf)
            ratio = err / (2 * OUT_ROUNDOFF[self.dtype] * np.abs(want) + noise)
        bad = ratio > 1
        count = int(bad.sum())
        first = [{"row": int(r), "col": int(c), "got": float(got[r, c]), "want": float(want[r, c])}
                 for r, c in np.argwhere(bad)[:5]]
        return count, float(ratio.max()), first

    def batch(self, iters: int, first_iteration: int, check: bool = True) -> Batch:
        iters = max(1, min(iters, self.sums.shape[0]))
        started = time.perf_counter()
        for i in range(iters):
            self._product(first_iteration + i, self.sums[i] if check else None)
        mismatches = []
        if check:
            got = self.sums[:iters]
            with np.errstate(invalid="ignore", over="ignore"):
                bad_rows = (got != self.ref).sum(axis=1)
                worst = np.nan_to_num(np.abs(got - self.ref), nan=np.inf).max(axis=1)
            mismatches = [Mismatch(first_iteration + i, int(n), float(w))
                          for i, (n, w) in enumerate(zip(bad_rows.tolist(), worst.tolist(), strict=True)) if n]
        return Batch(time.perf_counter() - started, iters, mismatches)

    def close(self) -> None:
        self.c = self.sums = self.ref = None  # type: ignore[assignment]


class NumpyMemTest:
    """backend_torch.TorchMemTest on numpy: int64 chunks, each pattern written to every chunk, then
    XORed in place with what it should hold; any non-zero word is a flipped bit."""

    def __init__(self, diag: NumpyDiag, device: Device, nbytes: int, chunk_bytes: int, seed: int):
        self.diag, self.device, self.seed = diag, device, seed
        words = max(1, chunk_bytes // 8)
        self.chunks_: list[np.ndarray] = []
        want = max(1, -(-nbytes // (words * 8)))
        try:
            if device.index in diag.inject.fail_alloc:
                diag.inject.fired.append(f"GPU{device.index}: allocation of {1 << 50} bytes")
                np.empty(1 << 47, dtype=np.int64)  # 1 PiB: beyond the address space, refused for real
            self.scratch = np.empty(words, dtype=np.int64)
            for _ in range(want):
                self.chunks_.append(np.empty(words, dtype=np.int64))
        except MemoryError as exc:
            self.close()
            raise AllocationError(f"GPU{device.index}: allocation failed after {len(self.chunks_)} of {want} "
                                  f"chunks of {words * 8} bytes: {str(exc).splitlines()[0]}") from exc
        self.words = words
        self.chunks = len(self.chunks_)
        self.bytes_tested = self.chunks * words * 8
        self._patterns = ([("walking_ones", b) for b in range(WALK_BITS)] + [("walking_zeros", b) for b in range(WALK_BITS)]
                          + [("address", 0), ("random", 0), ("random", 1)])

    def patterns(self) -> list[str]:
        return [f"{name}:{arg}" if name.startswith("walking") or name == "random" else name for name, arg in self._patterns]

    def _constant(self, name: str, bit: int) -> int:
        value = (1 << bit) if name == "walking_ones" else ((1 << 64) - 1) ^ (1 << bit)
        return value - (1 << 64) if value >= (1 << 63) else value

    def _expected(self, name: str, arg: int, chunk: int, out: np.ndarray) -> None:
        if name == "address":
            base = chunk * self.words
            out[:] = np.arange(base, base + self.words, dtype=np.int64)
        else:
            rng = np.random.default_rng(self.seed * 1_000_003 + arg * 10_007 + chunk)
            out[:] = rng.integers(INT64_MIN, INT64_MAX, size=self.words, dtype=np.int64, endpoint=True)

    def run(self, index: int) -> PatternResult:
        name, arg = self._patterns[index]
        constant = name.startswith("walking")
        value = np.int64(self._constant(name, arg)) if constant else None
        started = time.perf_counter()
        for i, chunk in enumerate(self.chunks_):
            if value is not None:
                chunk.fill(value)
            else:
                self._expected(name, arg, i, chunk)
        fault = self.diag.inject.corrupt_word.get((self.device.index, index))
        if fault is not None:
            c, w = fault
            self.chunks_[c][w] ^= 1
            self.diag.inject.fired.append(f"GPU{self.device.index} pattern {index} ({name}): chunk {c} word {w}")
        errors, first = 0, []  # type: tuple[int, list[WordError]]
        for i, chunk in enumerate(self.chunks_):
            if value is not None:
                expected = np.full(1, value)
                chunk ^= value
            else:
                self._expected(name, arg, i, self.scratch)
                expected = self.scratch
                chunk ^= self.scratch
            errors, first = self._collect(i, chunk, expected, errors, first)
        seconds = time.perf_counter() - started
        extra = 0 if constant else 2
        return PatternResult(errors, first, seconds, self.bytes_tested * (4 + extra))

    def _collect(self, i: int, diff: np.ndarray, expected: np.ndarray, errors: int, first: list) -> tuple[int, list]:
        if not diff.any():
            return errors, first
        where = np.flatnonzero(diff)
        errors += len(where)
        for w in where[: max(0, MAX_REPORTED - len(first))].tolist():
            e = int(expected[w if len(expected) > 1 else 0])
            first.append(WordError(i, w, diff.ctypes.data + 8 * w, e, e ^ int(diff[w])))
        return errors, first

    def close(self) -> None:
        self.chunks_ = []
        self.scratch = None  # type: ignore[assignment]


class NumpyCopy:
    """A seeded buffer copied out and back (`legs` copies), each arrival compared with the source."""

    def __init__(self, label: str, nbytes: int, seed: int, legs: int):
        self.label, self.legs = label, legs
        words = max(1, nbytes // 8)
        rng = np.random.default_rng(seed)
        self.src = rng.integers(INT64_MIN, INT64_MAX, size=words, dtype=np.int64, endpoint=True)
        self.landed = np.empty_like(self.src)
        self.back = np.empty_like(self.src)
        self.nbytes = words * 8

    def round(self) -> CopyResult:
        started = time.perf_counter()
        np.copyto(self.landed, self.src)
        if self.legs > 1:
            np.copyto(self.back, self.landed)
        seconds = time.perf_counter() - started
        bad = []
        if not np.array_equal(self.landed, self.src):
            bad.append(f"{self.label}: the copy differs from the data sent")
        if self.legs > 1 and not np.array_equal(self.back, self.src):
            bad.append("device->host copy differs from the data sent")
        self.landed.fill(0)
        return CopyResult(seconds, self.legs * self.nbytes, bad)

    def close(self) -> None:
        self.src = self.landed = self.back = None  # type: ignore[assignment]
