"""Helpers shared by the GPU checks (gpu, pcie, nvlink, xid).

NVML access that ends a check cleanly (SKIP without a driver, ERROR when NVML hangs or when one
GPU or one field could not be read while the other GPUs are still judged), and the NVIDIA GPUs
that the PCI bus shows in sysfs, to tell "no GPU here" from "a GPU the driver lost".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import Finding, error
from gpunode.host.gpu.model import GpuInfo, clock_event_names, watch_reads

NVIDIA_VENDOR = "0x10de"
# VGA (0x0300) and 3D controller (0x0302) functions; leaves out NVSwitch bridges and HDMI audio.
GPU_CLASS_PREFIXES = ("0x0300", "0x0302")
PCI_DEVICES = "/sys/bus/pci/devices"

# NVML reads some fields in one call; a failure is kept under the call's name (agent/gpu/nvml.py).
_FIELD_GROUPS = {
    "pci_bus_id": "pci",
    "pci_device_id": "pci",
    "ecc_mode_current": "ecc_mode",
    "ecc_mode_pending": "ecc_mode",
    "remap_correctable": "remapped_rows",
    "remap_uncorrectable": "remapped_rows",
    "remap_pending": "remapped_rows",
    "remap_failure": "remapped_rows",
    "power_min_limit_w": "power_limit_constraints",
    "power_max_limit_w": "power_limit_constraints",
    "memory_total_bytes": "memory",
    "memory_used_bytes": "memory",
    "memory_reserved_bytes": "memory",
    "mig_mode_current": "mig_mode",
    "fabric_state": "fabric",
    "fabric_status": "fabric",
}


def nvidia_pci_gpus(host) -> list[str]:
    """sysfs addresses (0000:18:00.0) of NVIDIA GPU functions on the PCI bus, driver or not."""

    def scan() -> list[str]:
        found = []
        for bdf in host.sys.listdir(PCI_DEVICES) or []:
            base = f"{PCI_DEVICES}/{bdf}"
            if (host.sys.read_value(f"{base}/vendor") or "").lower() != NVIDIA_VENDOR:
                continue
            if (host.sys.read_value(f"{base}/class") or "").lower().startswith(GPU_CLASS_PREFIXES):
                found.append(bdf.lower())
        return sorted(found)

    return host.cached("nvidia_pci_gpus", scan)


def field_problem(gpu: GpuInfo, names: Iterable[str]) -> str | None:
    """Why NVML could not read one of `names` on this GPU, or None."""
    for name in names:
        for key in (name, _FIELD_GROUPS.get(name)):
            if key and key in gpu.field_errors:
                return f"NVML could not read {name}: {gpu.field_errors[key]}"
        if name == "processes":
            for key in ("processes_compute", "processes_graphics"):
                if key in gpu.field_errors:
                    return f"NVML could not list processes: {gpu.field_errors[key]}"
        if name == "nvlinks":
            for key, why in gpu.field_errors.items():
                if key.startswith("nvlink"):
                    return f"NVML could not read {key}: {why}"
    return None


def each_gpu(
    ctx,
    judge: Callable[[GpuInfo], Finding | Sequence[Finding]],
    needs: Iterable[str] = (),
    gpus: list[GpuInfo] | None = None,
) -> list[Finding]:
    """Judge every GPU. No driver -> SKIP (from ctx.gpus); NVML hung -> ERROR; a GPU that could not
    be opened, or a needed field that failed -> ERROR for that GPU only."""
    if gpus is None:
        try:
            gpus = ctx.gpus()
        except TimeoutError as exc:
            return [error(f"NVML hung: {exc} (see gpu.nvml)")]
    needs = tuple(needs)
    findings: list[Finding] = []
    for gpu in gpus:
        if gpu.error:
            findings.append(error(gpu.error, subject=gpu.label))
            continue
        problem = field_problem(gpu, needs)
        if problem:
            findings.append(error(problem, subject=gpu.label))
            continue
        watched, read = watch_reads(gpu) if gpu.damaged else (gpu, set())
        found = judge(watched)
        found = [found] if isinstance(found, Finding) else list(found)
        hit = sorted(gpu.damaged & read)
        if hit and not any(f.status is None for f in found):  # never a PASS on a damaged recording
            findings.append(error(f"the recording is damaged: {hit[0]}: {gpu.field_errors.get(hit[0], '?')}",
                                  subject=gpu.label))
            continue
        for f in found:
            findings.append(f if f.subject else replace(f, subject=gpu.label))
    return findings


def readable_gpus(ctx: AuditContext) -> list[GpuInfo]:
    """The GPUs NVML could open (for checks that compare GPUs with each other)."""
    return [g for g in ctx.gpus() if not g.error]


def is_busy(gpu: GpuInfo) -> bool:
    """Working now: in P0 and NVML does not report the idle clock event (an idle H100 also sits in P0)."""
    if gpu.performance_state != 0 or gpu.clock_event_reasons is None:
        return False
    return "gpu_idle" not in clock_event_names(gpu.clock_event_reasons)


def uptime_s(host) -> float | None:
    """Seconds since boot (/proc/uptime), the interval over which NVML error counters grew."""
    text = host.sys.read_value("/proc/uptime")
    try:
        return float(text.split()[0]) if text else None
    except (ValueError, IndexError):
        return None


# Memory NVML counts as used with no process to own it: 1 GiB leaves room for drivers whose
# NVML lacks the v2 memory call and count the ~0.5 GiB reserved area as used (0 B on an idle
# H100 with a current driver).
LEFTOVER_MEMORY_BYTES = 1 << 30


def leftovers(gpu: GpuInfo) -> str | None:
    """What is left on a GPU that should be idle (the audit's gpu.processes and the gate's
    epilog judge with this one rule): processes, or more than 1 GiB in use; None when clean."""
    used = gpu.memory_used_bytes
    if gpu.processes:
        text = ", ".join(f"pid {p.pid} ({p.name or '?'}, {p.kind}"
                         + (f", {gib(p.used_memory_bytes)}" if p.used_memory_bytes is not None else "") + ")"
                         for p in gpu.processes)
        return f"{len(gpu.processes)} process(es) on the GPU: {text}; {gib(used)} in use"
    if used is not None and used > LEFTOVER_MEMORY_BYTES:
        return f"{gib(used)} of GPU memory in use but no process is visible here"
    return None


def counter_growth(ctx: AuditContext, key: str, value: int):
    """How an error counter moved since the last audit (gpunode.audit.counters); the reading is
    kept for the next audit when this one keeps state."""
    return ctx.counters.growth(key, value, ctx.host.facts.now)


def gpu_key(gpu: GpuInfo) -> str:
    """A GPU's name in the counter store: its UUID survives renumbering after a GPU falls off."""
    return gpu.uuid or gpu.label


def gib(nbytes: int | None) -> str:
    return "?" if nbytes is None else f"{nbytes / 2**30:.1f} GiB"
