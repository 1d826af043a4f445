"""A scripted GPU backend for the bench tests: it records what it was asked and answers
`time()` from a list of per-operation seconds, so the measuring protocol can be checked
exactly without a GPU."""

from __future__ import annotations

import threading

from gpunode.bench.backend import Device, Op

H100 = Device(0, "NVIDIA H100 80GB HBM3", "0000:00:06.0", (9, 0), 80 << 30)


class FakeBackend:
    name = "fake"

    def __init__(self, devices=(H100,), per_op_s=0.001, unsupported=None, fail_on=None, peer=True):
        self._devices = list(devices)
        self.per_op_s = per_op_s  # a float, or a callable(device, iters, call_no) -> seconds per op
        self.unsupported = unsupported or {}
        self.fail_on = fail_on  # e.g. "gemm:fp8" or "copy:h2d_pinned": raise on creation
        self.peer = peer
        self.calls: list[tuple] = []
        self.released = 0
        self.closed = 0
        self.ran = 0
        self._lock = threading.Lock()
        self._n = 0

    def unusable(self):
        return None

    def versions(self):
        return {"fake": "1.0"}

    def devices(self):
        return list(self._devices)

    def gemm_unsupported(self, device, dtype):
        return self.unsupported.get(dtype)

    def _op(self, what):
        if self.fail_on == what:
            raise RuntimeError(f"CUDA out of memory while making {what}")

        def run():
            with self._lock:
                self.ran += 1

        def close():
            with self._lock:
                self.closed += 1

        return Op(run, close, made_by="fake")

    def gemm(self, device, dtype, m, n, k):
        self.calls.append(("gemm", device.index, dtype, m, n, k))
        return self._op(f"gemm:{dtype}")

    def copy(self, kind, device, nbytes, peer=None):
        self.calls.append(("copy", kind, device.index, nbytes, peer.index if peer else None))
        return self._op(f"copy:{kind}")

    def can_access_peer(self, src, dst):
        return self.peer

    def time(self, device, op, iters):
        with self._lock:
            self._n += 1
            n = self._n
        for _ in range(iters):
            op()
        per = self.per_op_s(device, iters, n) if callable(self.per_op_s) else self.per_op_s
        return per * iters

    def release(self):
        self.released += 1
