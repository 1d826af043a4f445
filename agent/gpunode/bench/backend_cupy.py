"""The CuPy backend of the microbenchmarks (cupy is passed in, imported by the caller).

CuPy has no bfloat16 or fp8 arrays and picks TF32 only from an environment variable read at
import, so it measures the fp16 GEMM and the copies; the other GEMMs SKIP and say why.
Copies go through the CUDA runtime's memcpy calls directly, as a copy engine benchmark should.
"""

from __future__ import annotations

import importlib

from gpunode.bench.backend import Device, Op

_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind
_PEER_ALREADY_ENABLED = 704  # cudaErrorPeerAccessAlreadyEnabled


class CupyBackend:
    name = "cupy"

    def __init__(self, cupy):
        self.cp = cupy
        self.rt = cupy.cuda.runtime

    def unusable(self) -> str | None:
        try:
            count = self.rt.getDeviceCount()
        except Exception as exc:  # noqa: BLE001 - no driver / no device
            return f"cupy sees no CUDA device: {exc}"
        return None if count else "cupy sees no CUDA device"

    def versions(self) -> dict[str, str]:
        v = self.rt.runtimeGetVersion()
        out = {"cupy": self.cp.__version__, "cuda": f"{v // 1000}.{(v % 1000) // 10}"}
        try:
            nv = self.cp.cuda.nccl.get_version()
            out["nccl"] = f"{nv // 10000}.{(nv // 100) % 100}.{nv % 100}"
        except Exception:  # noqa: BLE001 - cupy built without NCCL
            pass
        return out

    def devices(self) -> list[Device]:
        found = []
        for i in range(self.rt.getDeviceCount()):
            p = self.rt.getDeviceProperties(i)
            name = p["name"].decode() if isinstance(p["name"], bytes) else str(p["name"])
            bdf = f"{p['pciDomainID']:04x}:{p['pciBusID']:02x}:{p['pciDeviceID']:02x}.0"
            found.append(Device(i, name, bdf, (p["major"], p["minor"]), int(p["totalGlobalMem"])))
        return found

    def gemm_unsupported(self, device: Device, dtype: str) -> str | None:
        if dtype != "fp16":
            return f"{dtype} GEMM is measured through torch only (CuPy has no {dtype} matmul path); install torch"
        return None

    def gemm(self, device: Device, dtype: str, m: int, n: int, k: int) -> Op:
        cp = self.cp
        with cp.cuda.Device(device.index):
            rng = cp.random.default_rng(0)
            a = rng.standard_normal((m, k), dtype=cp.float32).astype(cp.float16)
            b = rng.standard_normal((k, n), dtype=cp.float32).astype(cp.float16)
            c = cp.empty((m, n), dtype=cp.float16)

        def close() -> None:
            nonlocal a, b, c
            a = b = c = None

        return Op(lambda: cp.matmul(a, b, out=c), close, data="randn", layout="row-major A and B, out= preallocated")

    def copy(self, kind: str, device: Device, nbytes: int, peer: Device | None = None) -> Op:
        cp, rt = self.cp, self.rt
        if kind == "read":  # a reduction streams the buffer through the SMs: N bytes read, 4 written
            with cp.cuda.Device(device.index):
                values, total = cp.zeros(nbytes // 4, dtype=cp.float32), cp.zeros((), dtype=cp.float32)
            keep = [values, total]
            return Op(lambda: cp.sum(values, out=total), keep.clear)
        with cp.cuda.Device(device.index):
            gpu = cp.zeros(nbytes, dtype=cp.uint8)
            if kind == "d2d":
                other = cp.empty(nbytes, dtype=cp.uint8)
                run = self._memcpy(other.data.ptr, gpu.data.ptr, nbytes, _D2D)
                keep = [gpu, other]
            elif kind == "p2p":
                if peer is None:
                    raise ValueError("p2p copy needs a peer device")
                self._enable_peer(device, peer)
                with cp.cuda.Device(peer.index):
                    other = cp.empty(nbytes, dtype=cp.uint8)
                dst_ptr, src_ptr = other.data.ptr, gpu.data.ptr

                def run():
                    rt.memcpyPeerAsync(dst_ptr, peer.index, src_ptr, device.index, nbytes,
                                       cp.cuda.get_current_stream().ptr)

                keep = [gpu, other]
            elif kind in ("h2d_pinned", "d2h_pinned", "h2d_pageable", "d2h_pageable"):
                host = self._host_buffer(nbytes, pinned=kind.endswith("pinned"))
                host_ptr = host.ctypes.data
                if kind.startswith("h2d"):
                    run = self._memcpy(gpu.data.ptr, host_ptr, nbytes, _H2D)
                else:
                    run = self._memcpy(host_ptr, gpu.data.ptr, nbytes, _D2H)
                keep = [gpu, host]
            else:
                raise ValueError(f"copy kind {kind!r}")
        return Op(run, keep.clear)

    def _memcpy(self, dst: int, src: int, nbytes: int, kind: int):
        cp, rt = self.cp, self.rt
        return lambda: rt.memcpyAsync(dst, src, nbytes, kind, cp.cuda.get_current_stream().ptr)

    def _host_buffer(self, nbytes: int, pinned: bool):
        if pinned:
            cupyx = importlib.import_module("cupyx")
            buf = cupyx.empty_pinned((nbytes,), dtype="uint8")
        else:
            numpy = importlib.import_module("numpy")
            buf = numpy.empty((nbytes,), dtype="uint8")
        buf.fill(0)  # first touch now, while the thread is bound to the GPU's node
        return buf

    def _enable_peer(self, src: Device, dst: Device) -> None:
        with self.cp.cuda.Device(src.index):
            try:
                self.rt.deviceEnablePeerAccess(dst.index)
            except self.rt.CUDARuntimeError as exc:
                if getattr(exc, "status", None) != _PEER_ALREADY_ENABLED:
                    raise

    def can_access_peer(self, src: Device, dst: Device) -> bool:
        return bool(self.rt.deviceCanAccessPeer(src.index, dst.index))

    def time(self, device: Device, op: Op, iters: int) -> float:
        cp = self.cp
        with cp.cuda.Device(device.index):
            stream = cp.cuda.get_current_stream()
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(stream)
            for _ in range(iters):
                op()
            end.record(stream)
            end.synchronize()
            return cp.cuda.get_elapsed_time(start, end) / 1e3

    def release(self) -> None:
        for i in range(self.rt.getDeviceCount()):
            with self.cp.cuda.Device(i):
                self.cp.cuda.Device(i).synchronize()
        self.cp.get_default_memory_pool().free_all_blocks()
        self.cp.get_default_pinned_memory_pool().free_all_blocks()
