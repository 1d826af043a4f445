"""GPU sources behind one interface: `inventory()` returns a GpuInventory, read once.

The live source runs the NVML pass on first use in a worker thread, so a hung driver only
holds up the checks that wait for it (each under its own watchdog), never the whole program.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from gpunode.host.gpu.model import GpuInventory

if TYPE_CHECKING:  # pathlib is ~4 ms that the gate need not spend before its NVML read starts
    from pathlib import Path

# Once a wait has timed out, NVML is hung: later waits are this short, so each GPU check
# reports it at once and the checks after them still run inside the budget.
LATE_WAIT_S = 0.05
# How long a reader waits for the NVML pass by default (the gate waits less: its watchdog).
NVML_TIMEOUT_S = 8.0


class GpuSource:
    def inventory(self, timeout: float | None = None) -> GpuInventory:
        raise NotImplementedError


# NVML reads no gate check judges (tests/test_gate_nvml_reads.py proves it on recorded GPUs), left
# out by the gate and by the watcher's polls of the gate checks:
# their first calls in a process cost 5-8 ms per H200 (the gate's read 36-43 ms, the full one
# 44-47 ms: tests/fixtures/device/nvml-call-costs-h200.json).
GATE_UNREAD = frozenset({
    "serial", "vbios_version", "board_part_number", "architecture", "ecc_corrected_volatile",
    "ecc_corrected_aggregate", "power_usage_w", "power_limit_w", "power_default_limit_w", "power_limit_constraints",
    "temperature_shutdown_c", "temperature_gpu_max_c", "nvlink_details", "memory_bus_width_bits", "cuda_cores",
})


class LiveGpuSource(GpuSource):
    """`unread`: NVML reads to leave out (gpunode.host.gpu.nvml.READ_NAMES), for a caller
    that judges only some fields (the gate)."""

    def __init__(self, unread: frozenset[str] = frozenset()) -> None:
        if unread:
            from gpunode.host.gpu.nvml import READ_NAMES

            if not unread <= READ_NAMES:
                raise ValueError(f"no such NVML read: {', '.join(sorted(unread - READ_NAMES))}")
        self.unread = unread
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._result: GpuInventory | None = None
        self._hung: str | None = None  # the first timed-out wait's message

    def _collect(self) -> None:
        from gpunode.host.gpu.nvml import NvmlGpuSource

        try:
            # on_read: readers go on during nvmlShutdown; a read that never started NVML returns
            self._publish(NvmlGpuSource(self.unread).collect(on_read=self._publish))
        except Exception as exc:  # noqa: BLE001 - reported as unavailable, never a crash
            self._publish(GpuInventory(available=False, error=f"NVML collection failed: {exc!r}"))

    def _publish(self, inventory: GpuInventory) -> None:
        if self._result is None:
            self._result = inventory
            self._done.set()

    def inventory(self, timeout: float | None = None) -> GpuInventory:
        with self._lock:
            if self._thread is None:
                from gpunode.host.gpu import nvml

                nvml.preload()  # every import here, none in the worker (see preload)
                self._thread = threading.Thread(target=self._collect, name="nvml-collect", daemon=True)
                self._thread.start()
        if self._hung is not None and timeout is not None:
            timeout = min(timeout, LATE_WAIT_S)
        if not self._done.wait(timeout):
            if self._hung is None and timeout:  # a zero wait (the gate's prefetch) only polls
                self._hung = f"NVML did not answer within {timeout:.1f}s"
            raise TimeoutError(self._hung or f"NVML did not answer within {timeout:.1f}s")
        assert self._result is not None
        return self._result


class ReplayGpuSource(GpuSource):
    """A recorded inventory (snapshot gpus.json), or one built in a test."""

    def __init__(self, inventory: GpuInventory):
        self._inventory = inventory

    def inventory(self, timeout: float | None = None) -> GpuInventory:
        return self._inventory

    @classmethod
    def load(cls, path: Path) -> ReplayGpuSource:
        if not path.exists():
            return cls(GpuInventory(available=False, error="no NVIDIA driver/NVML (none recorded in snapshot)"))
        return cls(load_inventory(path))


def load_inventory(path: Path) -> GpuInventory:
    """gpus.json (ReplayGpuSource.load)."""
    from gpunode.inputs import MAX_RECORDED_BYTES, InputError, expect_mapping, load_json

    data = expect_mapping(load_json(path, max_bytes=MAX_RECORDED_BYTES, allow_nonfinite=True), path)
    try:
        return GpuInventory.from_json(data)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise InputError(f"{path}: {exc}") from None
