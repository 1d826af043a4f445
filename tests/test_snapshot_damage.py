"""A recorded GPU document is input: a field of the wrong type makes the checks that read it
ERROR (never PASS), and a GPU listed twice is one GPU, not two (gpu.count FAILs: a duplicate
must not stand in for a GPU that is missing, and the gate must block such a node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from gate_fixtures import h100_inventory, write_snapshot

from gpunode.host.gpu.model import GpuInventory


def _gate(snap, *args, expected_gpus=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    if expected_gpus is not None:
        config = snap / "config.yaml"
        config.write_text(f"expected_gpus: {expected_gpus}\n")
        env["GPUNODE_CONFIG"] = str(config)
    proc = subprocess.run([sys.executable, "-m", "gpunode", "gate", "--json", "--snapshot", str(snap), *args],
                          capture_output=True, text=True, timeout=60, env=env)
    assert proc.stdout, proc.stderr
    doc = json.loads(proc.stdout)
    return proc.returncode, {(c["id"], c.get("subject")): c for c in doc["checks"]}


@pytest.mark.parametrize("field, value", [("remap_failure", "yes"), ("remap_pending", "no"),
                                          ("retired_pages_dbe", "0"), ("remap_uncorrectable", True)])
def test_a_wrong_typed_remap_field_is_an_error_never_a_pass(tmp_path, field, value):
    snap = write_snapshot(tmp_path / "snap", h100_inventory(2, **{field: value}))
    _, checks = _gate(snap)
    assert checks[("gpu.memory.remap", "GPU0")]["status"] == "ERROR"
    assert field in checks[("gpu.memory.remap", "GPU0")]["message"]
    assert checks[("gpu.memory.remap", "GPU1")]["status"] == "PASS"  # the sound entry is still judged


def test_a_failed_remap_still_fails_beside_a_damaged_field(tmp_path):
    snap = write_snapshot(tmp_path / "snap", h100_inventory(1, remap_failure=True, remap_uncorrectable="many"))
    rc, checks = _gate(snap)
    assert checks[("gpu.memory.remap", "GPU0")]["status"] == "FAIL" and rc == 2


def test_the_damage_is_told_apart_from_fields_nvml_could_not_read():
    inv = h100_inventory(1, remap_failure="yes", field_errors={"power_limit_w": "Unknown Error"})
    gpu = GpuInventory.from_json(inv).gpus[0]
    assert gpu.damaged == {"remap_failure"} and gpu.remap_failure is None
    assert set(gpu.field_errors) == {"remap_failure", "power_limit_w"}
    assert "damaged" not in GpuInventory.from_json(inv).to_json()["gpus"][0]  # not part of the document


@pytest.mark.parametrize("same", ["uuid", "pci_bus_id", "both"])
def test_a_gpu_listed_twice_is_a_count_failure(tmp_path, same):
    inv = h100_inventory(2)
    if same in ("uuid", "both"):
        inv["gpus"][1]["uuid"] = inv["gpus"][0]["uuid"]
    if same in ("pci_bus_id", "both"):
        inv["gpus"][1]["pci_bus_id"] = inv["gpus"][0]["pci_bus_id"]
    snap = write_snapshot(tmp_path / "snap", inv)
    rc, checks = _gate(snap, expected_gpus=2)
    count = checks[("gpu.count", None)]
    assert count["status"] == "FAIL" and rc == 2
    assert "GPU1 is GPU0 again" in count["message"] and count["observed"]["usable"] == 1


def test_distinct_gpus_still_pass_the_count(tmp_path):
    snap = write_snapshot(tmp_path / "snap", h100_inventory(2))
    rc, checks = _gate(snap, expected_gpus=2)
    assert checks[("gpu.count", None)]["status"] == "PASS"
    assert GpuInventory.from_json(h100_inventory(3)).duplicates() == []
