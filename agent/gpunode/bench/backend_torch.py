"""The PyTorch backend of the microbenchmarks (torch is passed in, imported by the caller)."""

from __future__ import annotations

from gpunode.bench.backend import Device, Op

# torch dtypes by our names; tf32 is float32 storage with TF32 tensor-core math allowed.
_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "tf32": "float32"}
FP8_MIN_CAPABILITY = (8, 9)


class TorchBackend:
    name = "torch"

    def __init__(self, torch):
        self.torch = torch

    def unusable(self) -> str | None:
        t = self.torch
        if not getattr(t.version, "cuda", None):
            return f"torch {t.__version__} is a CPU-only build (no CUDA)"
        if not t.cuda.is_available():
            return "torch sees no CUDA device (driver missing, or CUDA_VISIBLE_DEVICES hides them)"
        return None

    def versions(self) -> dict[str, str]:
        t = self.torch
        out = {"torch": t.__version__.split("+")[0], "cuda": str(t.version.cuda)}
        try:
            out["nccl"] = ".".join(str(x) for x in t.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - a build without NCCL
            pass
        return out

    def devices(self) -> list[Device]:
        t = self.torch
        found = []
        for i in range(t.cuda.device_count()):
            p = t.cuda.get_device_properties(i)
            bdf = None
            if hasattr(p, "pci_bus_id"):
                bdf = f"{p.pci_domain_id:04x}:{p.pci_bus_id:02x}:{p.pci_device_id:02x}.0"
            found.append(Device(i, p.name, bdf, (p.major, p.minor), int(p.total_memory)))
        return found

    def gemm_unsupported(self, device: Device, dtype: str) -> str | None:
        if dtype == "fp8":
            if device.capability < FP8_MIN_CAPABILITY:
                cap = ".".join(map(str, device.capability))
                return f"fp8 needs compute capability 8.9+ (Ada, Hopper or newer); this GPU is {cap}"
            if not hasattr(self.torch, "_scaled_mm") or not hasattr(self.torch, "float8_e4m3fn"):
                return f"torch {self.torch.__version__} has no fp8 matmul (torch._scaled_mm)"
        return None

    def gemm(self, device: Device, dtype: str, m: int, n: int, k: int) -> Op:
        t = self.torch
        dev = t.device("cuda", device.index)
        if dtype == "fp8":
            return self._fp8_gemm(dev, m, n, k)
        dt = getattr(t, _DTYPES[dtype])
        a = t.randn(m, k, dtype=dt, device=dev)
        b = t.randn(k, n, dtype=dt, device=dev)
        c = t.empty(m, n, dtype=dt, device=dev)
        before = t.backends.cuda.matmul.allow_tf32
        t.backends.cuda.matmul.allow_tf32 = dtype == "tf32"

        def close() -> None:
            nonlocal a, b, c
            t.backends.cuda.matmul.allow_tf32 = before
            a = b = c = None

        return Op(lambda: t.matmul(a, b, out=c), close, data="randn", layout="row-major A and B, out= preallocated")

    def _fp8_gemm(self, dev, m: int, n: int, k: int) -> Op:
        t = self.torch
        a = t.randn(m, k, device=dev).to(t.float8_e4m3fn)
        # _scaled_mm wants B column-major: make it (n, k) row-major and pass its transpose.
        b = t.randn(n, k, device=dev).to(t.float8_e4m3fn).t()
        one = t.tensor(1.0, device=dev)

        def run():
            return t._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=t.bfloat16, use_fast_accum=True)

        def close() -> None:
            nonlocal a, b
            a = b = None

        return Op(run, close, data="randn", fp8_format="e4m3", out_dtype="bf16", use_fast_accum=True,
                  scaling="per-tensor")

    def copy(self, kind: str, device: Device, nbytes: int, peer: Device | None = None) -> Op:
        t = self.torch
        dev = t.device("cuda", device.index)
        if kind == "read":  # a reduction streams the buffer through the SMs: N bytes read, 4 written
            values, total = t.zeros(nbytes // 4, dtype=t.float32, device=dev), t.zeros((), dtype=t.float32, device=dev)

            def free() -> None:
                nonlocal values, total
                values = total = None

            return Op(lambda: t.sum(values, dim=0, out=total), free)
        u8 = t.uint8
        if kind == "d2d":
            src, dst = t.zeros(nbytes, dtype=u8, device=dev), t.empty(nbytes, dtype=u8, device=dev)
        elif kind == "p2p":
            if peer is None:
                raise ValueError("p2p copy needs a peer device")
            src = t.zeros(nbytes, dtype=u8, device=dev)
            dst = t.empty(nbytes, dtype=u8, device=t.device("cuda", peer.index))
        elif kind in ("h2d_pinned", "h2d_pageable", "d2h_pinned", "d2h_pageable"):
            # zero-filled so every host page is touched now (first touch: on the bound node).
            host = t.zeros(nbytes, dtype=u8, pin_memory=kind.endswith("pinned"))
            gpu = t.zeros(nbytes, dtype=u8, device=dev)
            src, dst = (host, gpu) if kind.startswith("h2d") else (gpu, host)
        else:
            raise ValueError(f"copy kind {kind!r}")
        pinned_or_device = kind != "h2d_pageable" and kind != "d2h_pageable"

        def close() -> None:
            nonlocal src, dst
            src = dst = None

        return Op(lambda: dst.copy_(src, non_blocking=pinned_or_device), close)

    def can_access_peer(self, src: Device, dst: Device) -> bool:
        return bool(self.torch.cuda.can_device_access_peer(src.index, dst.index))

    def time(self, device: Device, op: Op, iters: int) -> float:
        t = self.torch
        with t.cuda.device(device.index):
            stream = t.cuda.current_stream()
            start = t.cuda.Event(enable_timing=True)
            end = t.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(iters):
                op()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) / 1e3

    def release(self) -> None:
        for i in range(self.torch.cuda.device_count()):
            self.torch.cuda.synchronize(i)
        self.torch.cuda.empty_cache()
