"""Expectations between GPUs (pinned when _between_gpus was split into helpers, issue 21): one
GPU's send/recv at its HBM copy rate, none when that rate is unknown (recorded H100 host); a
bridged pair of PCIe cards gets NCCL's ring but no NVLink SHARP."""

import dataclasses

import topology_kit

import testkit
from gpunode.host.facts.topology import build
from gpunode.topology.expect import expectations


def _metrics(gpus, host):
    return {e.metric: e for e in expectations(build(host, gpus), gpus)}


def test_one_gpu_sendrecv_follows_its_hbm_and_goes_without_it():
    host = testkit.fixture_host("h100-sxm-1gpu")
    gpus = host.gpu.inventory().gpus
    exp = _metrics(gpus, host)
    assert exp["nccl.sendrecv.busbw"].raw == exp["hbm.d2d"].raw
    assert exp["nccl.sendrecv.busbw"].arithmetic.startswith("one GPU: a copy in HBM 5120-bit (datasheet) x 2619 MHz x 2")
    unknown = [dataclasses.replace(gpus[0], mem_clock_max_mhz=None)]
    exp = _metrics(unknown, host)
    assert "nccl.sendrecv.busbw" not in exp and "hbm.d2d" not in exp and "gemm.bf16" in exp


def test_two_bridged_gpus_get_the_ring_but_no_nvls(tmp_path):
    """A bridged pair is all-NVLink but no NVSwitch fabric: NVLink SHARP is not expected."""
    layout = topology_kit.load_layout("h100-pcie-nvlink")
    layout["direct"] = [d for d in layout["direct"] if d.get("kind") != "gpu" or d["index"] in (0, 1)]
    layout["nvlink"]["pairs"] = [[0, 1]]
    host = topology_kit.topology_host(tmp_path, layout)
    exp = _metrics(host.gpu.inventory().gpus, host)
    assert exp["nccl.all_reduce.busbw"].arithmetic.startswith("NCCL ring model 12 NVLinks x ")
    assert "nccl.all_reduce.busbw.nvls" not in exp
