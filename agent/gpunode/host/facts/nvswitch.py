"""Whether the GPUs sit on an NVSwitch fabric, and whether this is a compute tray of a multi-node
NVLink rack (GB200/GB300 NVL): what the nvlink checks and the profile's `when: nvswitch/imex`
conditions ask. `sys`: the Host's SysRoot; `gpus`: the inventory's GpuInfo list."""

from __future__ import annotations


def has_nvswitch(sys, gpus) -> bool:
    """GPUs on an NVSwitch fabric: nvidia-nvswitch device nodes (HGX: the switches are on the
    baseboard), or GPUs that take part in a fabric (also GB200/GB300 trays, whose switches sit
    in the rack's NVLink switch trays)."""
    return _local_nvswitch(sys) or any(_in_fabric(g) for g in gpus)


# Compute trays of multi-node NVLink racks (GB200/GB300 NVL72, NVL36x2): Fabric Manager runs on
# the NVLink switch trays, not here; the trays run the IMEX service instead (NVIDIA IMEX guide).
# The GPU names NVML reports there; HGX B200/B300 ("NVIDIA B200") keep local NVSwitches and FM.
NVL_TRAY_GPUS = ("NVIDIA GB200", "NVIDIA GB300")
NVL_TRAY = "GB200/GB300 NVL compute tray"


def is_nvl_tray(sys, gpus) -> bool:
    """Grace-Blackwell GPUs in an NVLink fabric with no NVSwitch device of their own. A GB200
    without a fabric (NVL4 boards) needs neither Fabric Manager nor IMEX."""
    if _local_nvswitch(sys):
        return False
    return any(_in_fabric(g) and (g.name or "").startswith(NVL_TRAY_GPUS) for g in gpus)


def _local_nvswitch(sys) -> bool:
    return any(n.startswith("nvidia-nvswitch") for n in sys.listdir("/dev") or [])


def _in_fabric(gpu) -> bool:
    return gpu.fabric_state not in (None, "not_supported")
