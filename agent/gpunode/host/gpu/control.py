"""Changing GPU settings (apply only): one interface, the NVML implementation lives in nvml.py.

Reads here are fresh (not the inventory read once at start), because apply verifies each
write and rollback compares against what is there now. For ECC and MIG mode the value read
and written is the *pending* mode: setting it is what gpunode does; the reset is left to
the operator.
"""

from __future__ import annotations

from typing import Any

KEYS = ("persistence_mode", "power_limit", "compute_mode", "ecc_mode", "mig_mode", "applications_clocks")


class GpuControlError(RuntimeError):
    """A GPU change that NVML refused or that is unsafe now (processes running)."""


class GpuControl:
    def read(self, index: int, key: str) -> Any:
        raise NotImplementedError

    def write(self, index: int, key: str, value: Any) -> None:
        raise NotImplementedError

    def processes(self, index: int) -> list[int]:
        """PIDs using the GPU now."""
        raise NotImplementedError

    def mig_instances(self, index: int) -> list[dict]:
        """[{id, profile, profile_id, start, size}] of the GPU's MIG GPU instances."""
        raise NotImplementedError

    def mig_create(self, index: int, profile: str, placement: dict | None = None) -> dict:
        """Create a GPU instance (and one compute instance spanning it); returns the instance."""
        raise NotImplementedError

    def mig_destroy(self, index: int, instance_id: int) -> None:
        """Destroy a GPU instance and its compute instances."""
        raise NotImplementedError

    def close(self) -> None:
        return None


class NoGpuControl(GpuControl):
    """Where there is no NVML (a --sysroot apply, a host without GPUs): every call refuses."""

    def __init__(self, reason: str = "no GPU control on this host"):
        self.reason = reason

    def _refuse(self, *args, **kwargs):
        raise GpuControlError(self.reason)

    read = write = processes = mig_instances = mig_create = mig_destroy = _refuse


class GpuReset:
    """Resetting one GPU (gpunode watch's reset class): `nvidia-smi --gpu-reset -i <UUID or PCI
    id>` through the Runner. NVIDIA's tool refuses a GPU that processes still use; the watcher
    calls it only on a drained node with no job left. Never run on a lent machine: tests pass a
    fake with the same `reset` method, and `--shadow` logs it."""

    TIMEOUT_S = 120.0

    def __init__(self, runner, timeout: float = TIMEOUT_S) -> None:
        self.runner, self.timeout = runner, timeout

    def reset(self, gpu: str) -> tuple[bool, str]:
        """-> (reset, what nvidia-smi said)."""
        result = self.runner.run(["nvidia-smi", "--gpu-reset", "-i", gpu], timeout=self.timeout)
        if result.ok:
            return True, (result.stdout.strip().splitlines() or ["GPU reset"])[-1][:200]
        said = result.error or ("timed out" if result.timed_out else
                                ((result.stderr or result.stdout).strip().splitlines() or [f"exit code {result.rc}"])[-1])
        return False, said.strip()[:200]
