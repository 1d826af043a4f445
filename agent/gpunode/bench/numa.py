"""Which CPUs sit next to a GPU, and binding the calling thread to them.

Pinned host buffers must live on the GPU's NUMA node or H2D/D2H measures the inter-socket link.
Without libnuma there is no portable memory-policy call, so we bind the thread to the node's
CPUs (os.sched_setaffinity) *before* allocating: Linux places pages on the node of the CPU that
first touches them, and the driver touches pinned pages when it allocates them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from gpunode.host.facts.cpulist import parse_cpulist
from gpunode.host.sysroot import SysRoot


@dataclass(frozen=True)
class GpuLocality:
    bdf: str
    cpus: list[int]  # empty when the kernel does not say (VMs, no sysfs)
    numa_node: int | None  # None when the platform has no NUMA information (-1 in sysfs)
    note: str = ""


def gpu_locality(sys: SysRoot, bdf: str | None) -> GpuLocality:
    """CPUs and NUMA node of the PCI device `bdf` (sysfs form 0000:18:00.0)."""
    if not bdf:
        return GpuLocality("", [], None, "PCI address of the GPU unknown: not bound")
    base = f"/sys/bus/pci/devices/{bdf.lower()}"
    node = sys.read_int(f"{base}/numa_node")
    node = node if node is not None and node >= 0 else None
    text = sys.read_value(f"{base}/local_cpulist")
    if text is None:
        return GpuLocality(bdf, [], node, f"{base}/local_cpulist not readable: not bound")
    try:
        cpus = sorted(parse_cpulist(text))
    except ValueError as exc:
        return GpuLocality(bdf, [], node, f"{exc}: not bound")
    return GpuLocality(bdf, cpus, node)


@contextmanager
def bound_to(cpus: list[int]) -> Iterator[str]:
    """Bind the calling thread to `cpus` (those it may use) for the block; yields a note."""
    if not cpus:
        yield "not bound (no CPU list)"
        return
    before = os.sched_getaffinity(0)
    usable = set(cpus) & before
    if not usable:
        yield "not bound: none of the GPU's CPUs is allowed to this process (cgroup/cpuset)"
        return
    os.sched_setaffinity(0, usable)
    try:
        yield f"bound to {len(usable)} CPU(s) local to the GPU"
    finally:
        os.sched_setaffinity(0, before)
