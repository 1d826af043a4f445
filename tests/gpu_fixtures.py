"""GPU test hosts built from the real NVML inventory of the lent H100 (tests/fixtures/nvml).

`hgx()` copies that GPU onto an 8-GPU HGX layout (new index, PCI address, UUID) and adds what an
HGX has and the VM lacks: 18 active NVLink 4 links per GPU and a completed fabric registration.
"""

from __future__ import annotations

import json
from dataclasses import replace

import testkit
from gpunode.audit.engine import Result
from gpunode.host.gpu.model import GpuInfo, GpuInventory, NvLink

H100_JSON = testkit.FIXTURES / "nvml" / "h100-sxm-1gpu.json"
KERNLOG = testkit.FIXTURES / "kernlog"
HGX_BUSES = ("18", "2a", "3a", "5d", "9a", "ab", "ba", "db")
UPTIME = "86400.00 170000.00\n"  # one day


def h100() -> GpuInventory:
    return GpuInventory.from_json(json.loads(H100_JSON.read_text()))


def nvlinks(count: int = 18, **changes) -> list[NvLink]:
    base = NvLink(link=0, active=True, version=4, remote_bus_id="00000000:00:00.0", replay_errors=0,
                  recovery_errors=0, crc_flit_errors=0, crc_data_errors=0)
    return [replace(base, link=i, **changes) for i in range(count)]


def hgx(count: int = 8, links: bool = True, fabric: bool = True) -> GpuInventory:
    inv = h100()
    real = inv.gpus[0]
    gpus = []
    for i, bus in enumerate(HGX_BUSES[:count]):
        gpus.append(replace(
            real,
            index=i,
            uuid=f"{real.uuid[:-2]}{i:02x}",
            serial=str(int(real.serial) + i),
            pci_bus_id=f"00000000:{bus.upper()}:00.0",
            nvlinks=nvlinks() if links else [],
            fabric_state="completed" if fabric else "not_supported",
            fabric_status="success",
            field_errors={},
            processes=[],
        ))
    return replace(inv, gpus=gpus)


def pci_files(bdfs, others: bool = True) -> dict[str, str]:
    """sysfs vendor/class files for NVIDIA GPUs at `bdfs`, plus devices that must not count."""
    files = {}
    for bdf in bdfs:
        files[f"/sys/bus/pci/devices/{bdf}/vendor"] = "0x10de\n"
        files[f"/sys/bus/pci/devices/{bdf}/class"] = "0x030200\n"
    if others:
        # An NVSwitch (bridge class), a GPU's HDMI audio function, and a NIC.
        files["/sys/bus/pci/devices/0000:05:00.0/vendor"] = "0x10de\n"
        files["/sys/bus/pci/devices/0000:05:00.0/class"] = "0x068000\n"
        files["/sys/bus/pci/devices/0000:06:00.1/vendor"] = "0x10de\n"
        files["/sys/bus/pci/devices/0000:06:00.1/class"] = "0x040300\n"
        files["/sys/bus/pci/devices/0000:07:00.0/vendor"] = "0x15b3\n"
        files["/sys/bus/pci/devices/0000:07:00.0/class"] = "0x020700\n"
    return files


def sysfs_of(inv: GpuInventory) -> list[str]:
    return [g.sysfs_bdf for g in inv.gpus if g.sysfs_bdf]


def make_host(tmp_path, inv: GpuInventory | None, files: dict | None = None, pci=None, runner=None,
              uptime: str | None = UPTIME, is_root: bool = True):
    """A fixture-tree host whose PCI bus shows the inventory's GPUs (or `pci`)."""
    all_files = pci_files(sysfs_of(inv) if pci is None and inv is not None else (pci or []))
    if uptime is not None:
        all_files["/proc/uptime"] = uptime
    all_files.update(files or {})
    return testkit.tree_host(tmp_path, files=all_files, inventory=inv, runner=runner, is_root=is_root)


def change(inv: GpuInventory, index: int = 0, **changes) -> GpuInventory:
    return testkit.with_gpu(inv, index, **changes)


def every(inv: GpuInventory, **changes) -> GpuInventory:
    return replace(inv, gpus=[replace(g, **changes) for g in inv.gpus])


def broken_gpu(inv: GpuInventory, index: int, why: str = "cannot open GPU 3: Unknown Error") -> GpuInventory:
    """A GPU NVML enumerates but cannot open: only index and error are known."""
    gpus = list(inv.gpus)
    gpus[index] = GpuInfo(index=index, error=why)
    return replace(inv, gpus=gpus)


def by_subject(results: list[Result]) -> dict[str | None, Result]:
    found = {r.subject: r for r in results}
    assert len(found) == len(results), "one result per subject"
    return found


def only(results: list[Result]) -> Result:
    assert len(results) == 1, [(r.subject, r.status.value, r.message) for r in results]
    return results[0]
