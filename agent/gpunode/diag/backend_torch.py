"""diag's kernels on PyTorch: every check runs on the device (row checksums, XOR of memory words,
equality of copied buffers); only small vectors and counts come back to the host.

Works on CUDA devices and, for the tests of this machine without a GPU, on the CPU
(device_type="cpu"): the same code paths, timed with perf_counter after a synchronize.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from gpunode.bench.backend import Device
from gpunode.bench.backend_torch import TorchBackend
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

DTYPES = {"bf16": "bfloat16", "fp16": "float16", "tf32": "float32"}
# Unit roundoff of the stored product (and of the inputs, for TF32's 10-bit mantissa).
OUT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11, "tf32": 2.0 ** -24}
IN_ROUNDOFF = {"bf16": 0.0, "fp16": 0.0, "tf32": 2.0 ** -11}
ACC_ROUNDOFF = 2.0 ** -24  # fp32 accumulation inside the GEMM
ABFT_SIGMA = 6.0  # standard deviations of the rounding noise of a row checksum
MAX_REPORTED = 8  # failing words listed per pattern
WALK_BITS = 64


def _is_oom(t, exc: BaseException) -> bool:
    oom = getattr(t, "OutOfMemoryError", None) or getattr(t.cuda, "OutOfMemoryError", None)
    text = str(exc).lower()
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in text or "can't allocate memory" in text


class TorchDiag:
    name = "torch"

    def __init__(self, torch, injector: Injector | None = None, device_type: str = "cuda",
                 cpu_memory_bytes: int = 64 << 20):
        self.torch = torch
        self.cpu_memory_bytes = cpu_memory_bytes  # what the CPU "device" of the tests offers
        self.inject = injector or Injector()
        self.device_type = device_type
        self._bench = TorchBackend(torch)
        self._gemm_inputs: dict[tuple, tuple] = {}
        self._inputs_lock = threading.Lock()  # GPU threads ask at once: make the inputs once

    def unusable(self) -> str | None:
        return None if self.device_type == "cpu" else self._bench.unusable()

    def versions(self) -> dict[str, str]:
        if self.device_type == "cpu":
            return {"torch": self.torch.__version__.split("+")[0]}
        return self._bench.versions()

    def devices(self) -> list[Device]:
        if self.device_type == "cpu":
            return [Device(0, "cpu", None, (0, 0), 0)]
        return self._bench.devices()

    def _dev(self, device: Device):
        return self.torch.device(self.device_type, device.index) if self.device_type == "cuda" else self.torch.device("cpu")

    def sync(self, device: Device) -> None:
        if self.device_type == "cuda":
            self.torch.cuda.synchronize(device.index)

    def memory(self, device: Device) -> tuple[int, int]:
        if self.device_type == "cpu":
            return self.cpu_memory_bytes, self.cpu_memory_bytes
        free, total = self.torch.cuda.mem_get_info(device.index)
        return int(free), int(total)

    # --- GEMM ---------------------------------------------------------------------------------

    def _inputs(self, dtype: str, size: int, seed: int):
        """A and B made once on the CPU from the seed: every GPU multiplies the same bits."""
        key = (dtype, size, seed)
        with self._inputs_lock:
            return self._make_inputs(key, dtype, size, seed)

    def _make_inputs(self, key: tuple, dtype: str, size: int, seed: int):
        if key not in self._gemm_inputs:
            t = self.torch
            g = t.Generator().manual_seed(seed)
            dt = getattr(t, DTYPES[dtype])
            a = t.randn(size, size, generator=g).to(dt)
            b = t.randn(size, size, generator=g).to(dt)
            self._gemm_inputs = {key: (a, b)}  # one input set at a time bounds host memory
        return self._gemm_inputs[key]

    def gemm(self, device: Device, dtype: str, size: int, seed: int) -> TorchGemm:
        if dtype not in DTYPES:
            raise ValueError(f"diag GEMM dtype {dtype!r}: one of {', '.join(DTYPES)}")
        a, b = self._inputs(dtype, size, seed)
        return TorchGemm(self, device, a, b, dtype)

    # --- memory -------------------------------------------------------------------------------

    def memtest(self, device: Device, nbytes: int, chunk_bytes: int, seed: int) -> TorchMemTest:
        return TorchMemTest(self, device, nbytes, chunk_bytes, seed)

    # --- copies -------------------------------------------------------------------------------

    def pcie(self, device: Device, nbytes: int, seed: int) -> TorchPcieCopy:
        return TorchPcieCopy(self, device, nbytes, seed)

    def p2p(self, src: Device, dst: Device, nbytes: int, seed: int) -> TorchP2pCopy | None:
        if self.device_type == "cuda" and not self.torch.cuda.can_device_access_peer(src.index, dst.index):
            return None
        return TorchP2pCopy(self, src, dst, nbytes, seed)

    def release(self) -> None:
        self._gemm_inputs = {}
        if self.device_type == "cuda":
            for i in range(self.torch.cuda.device_count()):
                self.torch.cuda.synchronize(i)
            self.torch.cuda.empty_cache()


class TorchGemm:
    """C = A·B over and over; each product's fp32 row sums are its checksum. The first products
    are checked against A·(B·1) (ABFT, within the dtype's error bound) and repeated; every later
    product must then reproduce the reference checksum bit for bit (same inputs, same algorithm)."""

    def __init__(self, diag: TorchDiag, device: Device, a_host, b_host, dtype: str):
        t = diag.torch
        self.diag, self.device, self.dtype, self.t = diag, device, dtype, t
        dev = diag._dev(device)
        self.size = a_host.shape[0]
        self.flops = 2 * self.size ** 3
        self._tf32 = t.backends.cuda.matmul.allow_tf32
        t.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
        try:
            self.a, self.b = a_host.to(dev), b_host.to(dev)
            self.c = t.empty(self.size, self.size, dtype=self.a.dtype, device=dev)
            self.sums = t.empty(64, self.size, dtype=t.float32, device=dev)
        except RuntimeError as exc:
            if _is_oom(t, exc):
                raise AllocationError(f"GPU{device.index}: cannot allocate the GEMM buffers: {exc}") from exc
            raise
        self.ref: Any = None  # the reference row checksums (a tensor) once reference() ran

    def _product(self, iteration: int, out_row) -> None:
        t = self.t
        t.matmul(self.a, self.b, out=self.c)
        fault = self.diag.inject.flip_bit.get((self.device.index, iteration))
        if fault is not None:
            element, bit = fault
            flat = self.c.view(-1).view(t.int16)  # 16-bit types; tf32 (fp32) flips in its low half
            flat[element] ^= (1 << bit) if bit < 15 else -(1 << 15)
            self.diag.inject.fired.append(f"GPU{self.device.index} product {iteration}: bit {bit} of element {element}")
        if out_row is not None:
            t.sum(self.c, dim=1, dtype=t.float32, out=out_row)

    def reference(self) -> Reference:
        t = self.t
        self._product(0, self.sums[0])
        elements = self._elementwise()  # product 0 against a full-precision product, element by element
        for i in (1, 2):
            self._product(i, self.sums[i])
        rows = self.sums[:3]
        repeat = float((rows[1:] - rows[0]).abs().nan_to_num(nan=float("inf")).max().item())
        a64, b64 = self.a.double(), self.b.double()
        expected = a64 @ b64.sum(dim=1)
        # Rounding errors are independent and of either sign: bound them statistically (ABFT_SIGMA
        # standard deviations of a sum of uniform roundings), not by the worst case.
        c64 = self.c.double()
        out_term = OUT_ROUNDOFF[self.dtype] * (c64 * c64).sum(dim=1).sqrt() / 3 ** 0.5
        acc_term = ((2 * IN_ROUNDOFF[self.dtype] + ACC_ROUNDOFF) * self.size ** 0.5
                    * a64.norm(dim=1) * b64.norm())
        del a64, b64, c64
        tol = ABFT_SIGMA * (out_term + acc_term) + 1e-6
        ratio = ((rows[0].double() - expected).abs() / tol).nan_to_num(nan=float("inf"))
        self.ref = rows[0].clone()
        fingerprint = bytes(self.ref.cpu().view(t.uint8).tolist())
        return Reference(fingerprint, float(ratio.max().item()), int((ratio > 1).sum().item()), repeat, *elements)

    def _elementwise(self) -> tuple[int, float, list]:
        """C (product 0, as stored) against A·B in fp32 without TF32: each element within 2 units of
        the stored type's roundoff of its value, plus the fp32 accumulation noise (|a_i|·|b_j|)."""
        t = self.t
        before = t.backends.cuda.matmul.allow_tf32
        t.backends.cuda.matmul.allow_tf32 = False
        try:
            a32, b32 = self.a.float(), self.b.float()
            want = a32 @ b32
            noise = (ABFT_SIGMA * ACC_ROUNDOFF * 4) * t.outer(a32.norm(dim=1), b32.norm(dim=0))
            if self.dtype == "tf32":  # inputs rounded to TF32 by the GEMM itself
                noise += ABFT_SIGMA * 2 * IN_ROUNDOFF["tf32"] * t.outer(a32.norm(dim=1), b32.norm(dim=0))
            del a32, b32
        finally:
            t.backends.cuda.matmul.allow_tf32 = before
        got = self.c.float()
        err = (got - want).abs().nan_to_num(nan=float("inf"))
        bound = 2 * OUT_ROUNDOFF[self.dtype] * want.abs() + noise
        ratio = err / bound
        bad = ratio > 1
        count = int(bad.sum().item())
        first = []
        if count:
            where = t.nonzero(bad)[:5].tolist()
            first = [{"row": r, "col": c, "got": float(got[r, c].item()), "want": float(want[r, c].item())}
                     for r, c in where]
        worst = float(ratio.max().item())
        del got, want, err, bound, ratio, bad, noise
        return count, worst, first

    def batch(self, iters: int, first_iteration: int, check: bool = True) -> Batch:
        iters = max(1, min(iters, self.sums.shape[0]))
        self.diag.sync(self.device)
        started = time.perf_counter()
        for i in range(iters):
            self._product(first_iteration + i, self.sums[i] if check else None)
        mismatches = []
        if check:
            got = self.sums[:iters]
            bad_rows = (got != self.ref).sum(dim=1)
            worst = (got - self.ref).abs().nan_to_num(nan=float("inf")).amax(dim=1)
            self.diag.sync(self.device)
            seconds = time.perf_counter() - started
            counts, worst_l = bad_rows.tolist(), worst.tolist()
            mismatches = [Mismatch(first_iteration + i, int(n), float(w))
                          for i, (n, w) in enumerate(zip(counts, worst_l, strict=True)) if n]
        else:
            self.diag.sync(self.device)
            seconds = time.perf_counter() - started
        return Batch(seconds, iters, mismatches)

    def close(self) -> None:
        self.t.backends.cuda.matmul.allow_tf32 = self._tf32
        self.a = self.b = self.c = self.sums = self.ref = None


class TorchMemTest:
    """Most of the GPU's memory in int64 chunks; each pattern is written to every chunk, then every
    chunk is XORed in place with what it should hold and tested for any non-zero word (the XOR
    leaves exactly the flipped bits; no second buffer of the chunk's size is needed except for
    patterns that cannot be recomputed as a constant: address and random)."""

    def __init__(self, diag: TorchDiag, device: Device, nbytes: int, chunk_bytes: int, seed: int):
        t = diag.torch
        self.diag, self.device, self.t, self.seed = diag, device, t, seed
        self.dev = diag._dev(device)
        words = max(1, chunk_bytes // 8)
        self.chunks_: list = []
        want = max(1, -(-nbytes // (words * 8)))  # rounded up: at least nbytes are tested
        try:
            if device.index in diag.inject.fail_alloc:
                diag.inject.fired.append(f"GPU{device.index}: allocation of {1 << 50} bytes")
                t.empty(1 << 47, dtype=t.int64, device=self.dev)  # 1 PiB: the allocator refuses for real
            self.scratch = t.empty(words, dtype=t.int64, device=self.dev)
            for _ in range(want):
                self.chunks_.append(t.empty(words, dtype=t.int64, device=self.dev))
        except RuntimeError as exc:
            if _is_oom(t, exc):
                self.close()
                raise AllocationError(f"GPU{device.index}: allocation failed after {len(self.chunks_)} of {want} "
                                      f"chunks of {words * 8} bytes: {str(exc).splitlines()[0]}") from exc
            raise
        self.words = words
        self.chunks = len(self.chunks_)
        self.bytes_tested = self.chunks * words * 8
        self._patterns = ([("walking_ones", b) for b in range(WALK_BITS)] + [("walking_zeros", b) for b in range(WALK_BITS)]
                          + [("address", 0), ("random", 0), ("random", 1)])

    def patterns(self) -> list[str]:
        return [f"{name}:{arg}" if name.startswith("walking") or name == "random" else name for name, arg in self._patterns]

    def _constant(self, name: str, bit: int) -> int:
        value = (1 << bit) if name == "walking_ones" else ((1 << 64) - 1) ^ (1 << bit)  # as unsigned 64 bits
        return value - (1 << 64) if value >= (1 << 63) else value  # the same bits as a signed int64

    def _expected(self, name: str, arg: int, chunk: int, out) -> None:
        t = self.t
        if name == "address":
            base = chunk * self.words
            t.arange(base, base + self.words, dtype=t.int64, device=self.dev, out=out)
        else:
            g = t.Generator(device=self.dev).manual_seed(self.seed * 1_000_003 + arg * 10_007 + chunk)
            out.random_(-(1 << 63), (1 << 63) - 1, generator=g)

    def run(self, index: int) -> PatternResult:
        name, arg = self._patterns[index]
        constant = name.startswith("walking")
        value = self._constant(name, arg) if constant else None
        self.diag.sync(self.device)
        started = time.perf_counter()
        for i, chunk in enumerate(self.chunks_):
            if constant:
                chunk.fill_(value)
            else:
                self._expected(name, arg, i, chunk)
        fault = self.diag.inject.corrupt_word.get((self.device.index, index))
        if fault is not None:
            c, w = fault
            self.chunks_[c][w] ^= 1
            self.diag.inject.fired.append(f"GPU{self.device.index} pattern {index} ({name}): chunk {c} word {w}")
        errors, first = 0, []  # type: tuple[int, list[WordError]]
        flags = []
        for i, chunk in enumerate(self.chunks_):
            if constant:
                chunk.bitwise_xor_(value)
            else:
                self._expected(name, arg, i, self.scratch)
                chunk.bitwise_xor_(self.scratch)
            flags.append(chunk.any())
            if not constant:  # the scratch is reused by the next chunk: look now
                errors, first = self._collect(i, chunk, flags[-1], None, errors, first)
        if constant:
            for i, chunk in enumerate(self.chunks_):
                errors, first = self._collect(i, chunk, flags[i], value, errors, first)
        self.diag.sync(self.device)
        seconds = time.perf_counter() - started
        extra = 0 if constant else 2  # the expected pattern written again and read once more
        return PatternResult(errors, first, seconds, self.bytes_tested * (4 + extra))

    def _collect(self, i: int, diff, flag, constant, errors: int, first: list) -> tuple[int, list]:
        if not bool(flag.item()):
            return errors, first
        t = self.t
        errors += int(t.count_nonzero(diff).item())
        if len(first) < MAX_REPORTED:
            where = t.nonzero(diff).view(-1)[: MAX_REPORTED - len(first)]
            flips = diff[where].tolist()
            expected = [constant] * len(flips) if constant is not None else self.scratch[where].tolist()
            for w, x, e in zip(where.tolist(), flips, expected, strict=True):
                first.append(WordError(i, int(w), diff.data_ptr() + 8 * int(w), int(e), int(e) ^ int(x)))
        return errors, first

    def close(self) -> None:
        self.chunks_ = []
        self.scratch = None


class TorchPcieCopy:
    """Host -> GPU -> host round trips of a seeded buffer in pinned memory; what arrives on the GPU
    is compared there with a resident copy, what comes back with the source on the host."""

    def __init__(self, diag: TorchDiag, device: Device, nbytes: int, seed: int):
        t = diag.torch
        self.diag, self.device, self.t = diag, device, t
        self.label = f"GPU{device.index} host<->device"
        pinned = diag.device_type == "cuda"
        words = max(1, nbytes // 8)
        g = t.Generator().manual_seed(seed)
        self.src = t.empty(words, dtype=t.int64, pin_memory=pinned).random_(-(1 << 63), (1 << 63) - 1, generator=g)
        self.back = t.empty(words, dtype=t.int64, pin_memory=pinned)
        dev = diag._dev(device)
        self.golden = self.src.to(dev)
        self.landed = t.empty(words, dtype=t.int64, device=dev)
        self.nbytes = words * 8

    def round(self) -> CopyResult:
        d = self.diag
        d.sync(self.device)
        started = time.perf_counter()
        self.landed.copy_(self.src, non_blocking=True)
        self.back.copy_(self.landed, non_blocking=True)
        d.sync(self.device)
        seconds = time.perf_counter() - started
        bad = []
        if not bool(self.t.equal(self.landed, self.golden)):
            bad.append("host->device copy differs from the data sent")
        if not bool(self.t.equal(self.back, self.src)):
            bad.append("device->host copy differs from the data sent")
        return CopyResult(seconds, 2 * self.nbytes, bad)

    def close(self) -> None:
        self.src = self.back = self.golden = self.landed = None


class TorchP2pCopy:
    """GPU -> GPU copies of a seeded buffer; the destination compares what landed with its own copy."""

    def __init__(self, diag: TorchDiag, src: Device, dst: Device, nbytes: int, seed: int):
        t = diag.torch
        self.diag, self.src_dev, self.dst_dev, self.t = diag, src, dst, t
        self.label = f"GPU{src.index}->GPU{dst.index}"
        words = max(1, nbytes // 8)
        g = t.Generator().manual_seed(seed)
        host = t.empty(words, dtype=t.int64).random_(-(1 << 63), (1 << 63) - 1, generator=g)
        self.source = host.to(diag._dev(src))
        self.golden = host.to(diag._dev(dst))
        self.landed = t.empty(words, dtype=t.int64, device=diag._dev(dst))
        self.nbytes = words * 8

    def round(self) -> CopyResult:
        d = self.diag
        d.sync(self.src_dev)
        d.sync(self.dst_dev)
        started = time.perf_counter()
        self.landed.copy_(self.source, non_blocking=True)
        d.sync(self.dst_dev)
        seconds = time.perf_counter() - started
        bad = [] if bool(self.t.equal(self.landed, self.golden)) else [f"{self.label} copy differs from the data sent"]
        self.landed.zero_()
        return CopyResult(seconds, self.nbytes, bad)

    def close(self) -> None:
        self.source = self.golden = self.landed = None
