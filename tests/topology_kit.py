"""Hosts with a PCI tree, for the topology tests: a sysfs tree (device directories under their
root complex and bridges, /sys/bus/pci/devices links, NIC and NVMe class links) written from a
compact layout (tests/fixtures/topology/*.json), plus an NVML inventory made from the real H100.

A layout lists PCIe switches, each under a root port of a root complex, with the GPUs, NICs and
drives behind its downstream ports; `direct` lists devices straight under a root port.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import gpu_fixtures

import testkit
from gpunode.host.gpu.model import GpuInventory, NvLink
from gpunode.host.runner import ReplayRunner

LAYOUTS = testkit.FIXTURES / "topology"
GPU_CLASS, NIC_CLASS, IB_CLASS, NVME_CLASS, BRIDGE_CLASS = "0x030200", "0x020000", "0x020700", "0x010802", "0x060400"
SPEED = {1: "2.5 GT/s PCIe", 2: "5.0 GT/s PCIe", 3: "8.0 GT/s PCIe", 4: "16.0 GT/s PCIe", 5: "32.0 GT/s PCIe",
         6: "64.0 GT/s PCIe"}


def load_layout(name: str) -> dict:
    return json.loads((LAYOUTS / f"{name}.json").read_text())


def _bus(bdf: str) -> int:
    return int(bdf.split(":")[1], 16)


def _write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def _link(root: Path, path: str, target: str) -> None:
    at = root / path.lstrip("/")
    at.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, at)


def _device(root: Path, bdf: str, chain: list[str], pci_root: str, cls: str, numa: int, link: dict,
            vendor: str = "0x10de") -> str:
    where = "/".join([pci_root, *chain, bdf])
    base = f"/sys/devices/{where}"
    gen, width = link.get("gen", 5), link.get("width", 16)
    files = {"class": cls, "vendor": vendor, "device": link.get("device", "0x0000"), "numa_node": str(numa),
             "current_link_speed": SPEED[link.get("cur_gen", gen)],
             "current_link_width": str(link.get("cur_width", width)),
             "max_link_speed": SPEED[gen], "max_link_width": str(width)}
    for name, text in files.items():
        _write(root, f"{base}/{name}", text + "\n")
    _link(root, f"/sys/bus/pci/devices/{bdf}", f"../../../devices/{where}")
    return f"../../../devices/{where}"


def build_tree(root: Path, layout: dict, changes: dict | None = None) -> dict[str, str]:
    """Write the layout's sysfs under root; returns {gpu index: bdf}. `changes`: per-BDF link
    overrides ({bdf: {"cur_width": 8}}) for derived (faulty) hosts."""
    changes = changes or {}
    gpus: dict[str, str] = {}
    for sw in layout.get("switches", []):
        numa, pci_root, rp, up = sw["numa"], sw["root"], sw["root_port"], sw["upstream"]
        _device(root, rp, [], pci_root, BRIDGE_CLASS, numa, {**sw.get("uplink", {}), **changes.get(rp, {})})
        _device(root, up, [rp], pci_root, BRIDGE_CLASS, numa, {**sw.get("uplink", {}), **changes.get(up, {})})
        for slot, dev in enumerate(sw["devices"]):
            down = f"{up[:5]}{_bus(up) + 1:02x}:{slot:02x}.0"
            _device(root, down, [rp, up], pci_root, BRIDGE_CLASS, numa, {**dev.get("link", {}), **changes.get(down, {})})
            _endpoint(root, dev, [rp, up, down], pci_root, numa, changes, gpus)
    for dev in layout.get("direct", []):
        rp = dev["root_port"]
        _device(root, rp, [], dev["root"], BRIDGE_CLASS, dev["numa"], {**dev.get("link", {}), **changes.get(rp, {})})
        _endpoint(root, dev, [rp], dev["root"], dev["numa"], changes, gpus)
    for node, cpus in layout.get("numa_cpus", {}).items():
        _write(root, f"/sys/devices/system/node/node{node}/cpulist", cpus + "\n")
    return gpus


def _endpoint(root: Path, dev: dict, chain: list[str], pci_root: str, numa: int, changes: dict,
              gpus: dict[str, str]) -> None:
    bdf, kind = dev["bdf"], dev["kind"]
    link = {**dev.get("link", {}), **changes.get(bdf, {})}
    cls = {"gpu": GPU_CLASS, "nic": IB_CLASS if dev.get("rate") else NIC_CLASS, "nvme": NVME_CLASS}[kind]
    target = _device(root, bdf, chain, pci_root, cls, numa, link, vendor="0x15b3" if kind == "nic" else "0x10de")
    rel = "../../" + target.removeprefix("../../../")  # /sys/class/<c>/<name>/device -> ../../../devices/...
    if kind == "gpu":
        gpus[str(dev["index"])] = bdf
    elif kind == "nic" and dev.get("rate"):
        name = dev["name"]
        _link(root, f"/sys/class/infiniband/{name}/device", "../" + rel)
        port = f"/sys/class/infiniband/{name}/ports/1"
        for key, text in {"rate": dev["rate"], "state": "4: ACTIVE", "phys_state": "5: LinkUp",
                          "link_layer": dev.get("link_layer", "InfiniBand")}.items():
            _write(root, f"{port}/{key}", text + "\n")
    elif kind == "nic":
        _link(root, f"/sys/class/net/{dev['name']}/device", "../" + rel)
        _write(root, f"/sys/class/net/{dev['name']}/speed", str(dev.get("speed_mbps", 100000)) + "\n")
        _write(root, f"/sys/class/net/{dev['name']}/operstate", "up\n")
    else:
        _link(root, f"/sys/class/nvme/{dev['name']}/device", "../" + rel)


def inventory(layout: dict, gpus: dict[str, str]) -> GpuInventory:
    """The real H100's NVML record, once per GPU of the layout, with the layout's NVLinks and
    GPU facts (architecture, name, clocks) where the layout gives them."""
    real = gpu_fixtures.h100().gpus[0]
    facts = layout.get("gpu", {})
    out = []
    for index, bdf in sorted(gpus.items(), key=lambda kv: int(kv[0])):
        i = int(index)
        bus_id = "0000" + bdf.upper().replace("0000:", "0000:", 1)
        out.append(replace(real, index=i, uuid=f"{real.uuid[:-2]}{i:02x}", pci_bus_id=bus_id, processes=[],
                           field_errors={}, nvlinks=_nvlinks(layout, i, gpus), **facts))
    return GpuInventory(available=True, driver_version="580.95.05", gpus=out)


def _nvlinks(layout: dict, index: int, gpus: dict[str, str]) -> list[NvLink]:
    spec = layout.get("nvlink", {})
    if spec.get("switch"):
        return gpu_fixtures.nvlinks(spec["links"], version=spec.get("version", 4),
                                    remote_bus_id=spec["switch"])
    links = []
    for pair in spec.get("pairs", []):
        if index in pair:
            peer = gpus[str(pair[0] if pair[1] == index else pair[1])]
            for _ in range(spec["links"]):
                links.append(NvLink(link=len(links), active=True, version=spec.get("version", 4),
                                    remote_bus_id="0000" + peer.upper()))
    return links


def lspci_output(layout: dict, redirect: set[str] = frozenset()) -> str:
    """`lspci -vvv -D` blocks with an ACS capability for every switch port."""
    blocks = []
    for sw in layout.get("switches", []):
        ports = [sw["upstream"]] + [f"{sw['upstream'][:5]}{_bus(sw['upstream']) + 1:02x}:{s:02x}.0"
                                    for s in range(len(sw["devices"]))]
        for bdf in ports:
            flag = "+" if bdf in redirect else "-"
            blocks.append(f"{bdf} PCI bridge: Broadcom / LSI PEX890xx PCIe Gen 5 Switch (rev b0)\n"
                          "\tCapabilities: [220 v1] Access Control Services\n"
                          "\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl+ DirectTrans+\n"
                          f"\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir{flag} CmpltRedir{flag} UpstreamFwd+ "
                          "EgressCtrl- DirectTrans-\n")
    return "\n".join(blocks)


def topology_host(tmp_path: Path, name: str | dict, changes: dict | None = None, redirect: set[str] = frozenset(),
                  lspci: bool = True, gpu_changes: dict | None = None):
    """A host of a layout (a name under tests/fixtures/topology or a layout); `gpu_changes`:
    {index: {field: value}} on the NVML side (a GPU whose link trained at x8)."""
    layout = load_layout(name) if isinstance(name, str) else name
    root = tmp_path / "root"
    root.mkdir(parents=True, exist_ok=True)
    gpus = build_tree(root, layout, changes)
    runner = ReplayRunner()
    if lspci:
        runner.add(["lspci", "-vvv", "-D"], 0, lspci_output(layout, redirect), "")
    inv = inventory(layout, gpus)
    for index, fields in (gpu_changes or {}).items():
        inv = testkit.with_gpu(inv, index, **fields)
    return testkit.tree_host(root, inventory=inv, runner=runner)
