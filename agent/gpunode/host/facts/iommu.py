"""Whether the host runs with a DMA-translating IOMMU, and where IOMMU kernel parameters mean something.

/sys/kernel/iommu_groups has one entry per group of devices an IOMMU isolates; it is absent or
empty when no IOMMU translates DMA: a VM without a virtual IOMMU (its devices bounce through
SWIOTLB), or the IOMMU left off in firmware or on the command line.
"""

from __future__ import annotations

from gpunode.host.facts.arch import is_x86, machine

GROUPS = "/sys/kernel/iommu_groups"
# Parameters of the x86 IOMMU drivers (kernel-parameters.txt); arm64 has iommu.passthrough=.
X86_PARAMETERS = ("iommu", "intel_iommu", "amd_iommu")


def iommu_groups(host) -> int:
    """How many IOMMU groups the kernel made (0: no IOMMU translates DMA)."""
    return len(host.sys.listdir(GROUPS) or [])


def param_not_applicable(host, key: str, target) -> str | None:
    """Why the kernel parameter `key=target` means nothing on this host, or None when it does.
    For the `cmdline` setting kind: plan says "not applicable here: <why>", audit SKIPs with it."""
    if key not in X86_PARAMETERS:
        return None
    arch = machine(host)
    if arch is not None and not is_x86(arch):
        hint = "; its counterpart there is iommu.passthrough=1" if key == "iommu" and arch == "aarch64" else ""
        return f"{key}= is a parameter of the x86 IOMMU drivers and this kernel is {arch}{hint}"
    if key == "iommu" and str(target) == "pt" and not iommu_groups(host):
        return (f"no IOMMU translates DMA here ({GROUPS} is empty or absent: a VM without a virtual "
                "IOMMU, or the IOMMU is off), so passthrough changes nothing")
    return None
