"""Snapshots for the gate tests, built from the real NVML inventory of the lent H100
(tests/fixtures/nvml/h100-sxm-1gpu.json) in the format of agent/snapshot.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from testkit import FIXTURES, NOW

H100_INVENTORY = FIXTURES / "nvml" / "h100-sxm-1gpu.json"
SLURM_FIXTURES = FIXTURES / "slurm"
# A real `dmesg --time-format=iso` (this CI VM's boot, no Xid): the gate's Xid check reads it.
DMESG = FIXTURES / "gate" / "dmesg-iso-vm.txt"


def kernel_log_commands() -> list[dict]:
    return [{"argv": ["dmesg", "--time-format=iso"], "rc": 0, "stdout": DMESG.read_text(), "stderr": "",
             "duration_s": 0.01, "timed_out": False, "error": None}]


def h100_inventory(gpus: int = 1, **gpu0_changes) -> dict:
    """The recorded inventory with `gpus` copies of its GPU (new index, bus id, uuid) and
    changed fields on GPU0."""
    inv = json.loads(H100_INVENTORY.read_text())
    base = inv["gpus"][0]
    made = []
    for i in range(gpus):
        g = copy.deepcopy(base)
        g["index"] = i
        if i:
            g["pci_bus_id"] = f"00000000:{0x18 + i:02X}:00.0"
            g["uuid"] = base["uuid"][:-2] + f"{i:02x}"
            g["serial"] = str(int(base["serial"]) + i)
        made.append(g)
    made[0].update(gpu0_changes)
    inv["gpus"] = made
    return inv


def write_snapshot(dest: Path, inventory: dict, files: dict[str, str] | None = None,
                   commands: list[dict] | None = None, hostname: str = "h100-test") -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for path, text in (files or {}).items():
        target = dest / "files" / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (dest / "files").mkdir(exist_ok=True)
    (dest / "fs.json").write_text(json.dumps({"listdir": {}, "readlink": {}, "absent": []}))
    (dest / "commands.json").write_text(json.dumps(kernel_log_commands() if commands is None else commands))
    (dest / "gpus.json").write_text(json.dumps(inventory))
    meta = {"schema": "gpunode.snapshot/1", "gpunode_version": "test",
            "facts": {"is_root": True, "hostname": hostname, "now": NOW}}
    (dest / "meta.json").write_text(json.dumps(meta))
    return dest


def slurm_text(name: str) -> str:
    return (SLURM_FIXTURES / name).read_text()
