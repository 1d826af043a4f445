"""The seam between diag's protocols (gemm.py, memtest.py, stress.py) and the GPU array library.

A backend builds three kinds of workers on one device and runs their kernels; the protocols
decide how long, how often and what a result means. The torch backend is the one implemented
(backend_torch.py); gpunode.diag.discover.find_backend() picks it, reusing bench's discovery
(so the install hint is the same).

Fault injection (tests, and the device-side test script benchmarks/diag_faults.py) goes through
an Injector handed to the backend in Python: no CLI flag or environment variable reaches it, so
normal use cannot switch it on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from gpunode.bench.backend import Device


class AllocationError(RuntimeError):
    """The GPU refused memory the test needs: ERROR, never PASS."""


@dataclass
class Injector:
    """Test-only faults, applied by the backend's real kernels on the device.

    flip_bit: {(gpu, iteration): (element, bit)} XORs one bit of one element of that product.
    corrupt_word: {(gpu, pattern_index): (chunk, word)} XORs one word after that pattern was written.
    fail_alloc: GPUs whose memory-test allocation asks for more than the GPU has.
    """

    flip_bit: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    corrupt_word: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    fail_alloc: set[int] = field(default_factory=set)
    fired: list[str] = field(default_factory=list)  # what was injected, for the test to assert


@dataclass
class Mismatch:
    iteration: int
    rows: int  # rows whose checksum differs from the reference
    max_abs: float  # largest absolute difference of a row checksum (inf: NaN/Inf appeared)


@dataclass
class Batch:
    seconds: float
    products: int
    mismatches: list[Mismatch] = field(default_factory=list)


@dataclass
class Reference:
    """The first products of a GEMM worker: checked element by element against a full-precision
    product and by ABFT row checksums, and repeated, so that later ones compare exactly."""

    fingerprint: bytes  # the reference row checksums, bit for bit (cross-GPU comparison)
    abft_max_ratio: float  # largest |row checksum - A(B1)| / its error bound (>1: wrong product)
    abft_bad_rows: int
    repeat_mismatch: float  # largest difference between the repeated first products (0: identical)
    bad_elements: int = 0  # elements of product 0 off the full-precision product beyond their bound
    element_max_ratio: float = 0.0
    first_bad: list = field(default_factory=list)  # [{row, col, got, want}]


class GemmWorker(Protocol):
    flops: int  # per product

    def reference(self) -> Reference: ...

    def batch(self, iters: int, first_iteration: int, check: bool = True) -> Batch: ...

    def close(self) -> None: ...


@dataclass
class WordError:
    chunk: int
    word: int
    address: int  # device virtual address
    expected: int
    found: int


@dataclass
class PatternResult:
    errors: int
    first: list[WordError]
    seconds: float
    bytes_moved: int  # written + read by the kernels


class MemWorker(Protocol):
    bytes_tested: int
    chunks: int

    def patterns(self) -> list[str]: ...

    def run(self, index: int) -> PatternResult: ...

    def close(self) -> None: ...


@dataclass
class CopyResult:
    seconds: float  # time spent copying (verification excluded)
    nbytes: int  # bytes copied
    bad: list[str]  # what did not arrive intact


class CopyWorker(Protocol):
    label: str

    def round(self) -> CopyResult: ...

    def close(self) -> None: ...


class DiagBackend(Protocol):
    name: str

    def unusable(self) -> str | None: ...

    def versions(self) -> dict[str, str]: ...

    def devices(self) -> list[Device]: ...

    def memory(self, device: Device) -> tuple[int, int]:
        """(free, total) bytes."""
        ...

    def gemm(self, device: Device, dtype: str, size: int, seed: int) -> GemmWorker: ...

    def memtest(self, device: Device, nbytes: int, chunk_bytes: int, seed: int) -> MemWorker: ...

    def pcie(self, device: Device, nbytes: int, seed: int) -> CopyWorker: ...

    def p2p(self, src: Device, dst: Device, nbytes: int, seed: int) -> CopyWorker | None:
        """None when the two GPUs cannot reach each other's memory."""
        ...

    def release(self) -> None: ...
