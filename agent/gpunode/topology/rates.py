"""Raw rates and efficiencies, kept as data with where each number comes from.

An expected figure = the raw rate of what limits it (a PCIe link, the HBM bus, the SMs' tensor
cores, NVLinks, a NIC port) x an efficiency per metric family. The efficiencies were calibrated
on gpunode's own sustained runs recorded on the lent H100 SXM and H200 (tests/fixtures/bench/
h100-full.json, h200-full.json) and checked against the anchors' published thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Efficiency:
    """The share of a raw rate a healthy host measures, and where that share comes from, with
    the spread (CoV) above which a measurement of the family is too unstable to trust: the bounds
    the shipped H100/H200 baselines state from their recorded runs (baselines/*.yaml)."""

    value: float
    source: str
    max_cov: float = 0.06


EFFICIENCY: dict[str, Efficiency] = {
    "h2d": Efficiency(0.87, "H100 54.4, H200 54.2-55.2 GB/s pinned of Gen5 x16 63.0 (0.86-0.88); "
                            "Azure's nvbandwidth gate 48 GB/s = 0.76", max_cov=0.08),
    "hbm": Efficiency(0.88, "hbm.d2d (bytes read + written) H100 3008 of 3352 GB/s (0.90), H200 4244 of "
                            "4917 (0.86)"),
    "gemm.bf16": Efficiency(0.64, "sustained 8192^3: H100 694, H200 683 TFLOP/s of 1070 (132 SMs x 1980 MHz x "
                                  "4096 FLOP/clk); spec-sheet 989 assumes 1830 MHz"),
    "gemm.fp16": Efficiency(0.61, "sustained: H100 656, H200 650 of 1070 TFLOP/s"),
    "gemm.tf32": Efficiency(0.66, "sustained: H100 353, H200 355 of 535 TFLOP/s"),
    "gemm.fp8": Efficiency(0.60, "sustained: H100 1276, H200 1273 of 2141 TFLOP/s", max_cov=0.12),
    "copy.local": Efficiency(0.40, "nccl-tests sendrecv on one GPU is a copy within HBM: H100 1406 of 3352, "
                                   "H200 1923 of 4917 GB/s"),
    "p2p": Efficiency(0.87, "nvbandwidth device-to-device copy on NVLink4 ~390 of 450 GB/s per direction "
                            "(H100 SXM, 18 links x 25 GB/s); PCIe paths as h2d", max_cov=0.08),
    "nccl.ring": Efficiency(1.0, "NCCL's own per-link model (src/graph/topo.h: SM90 20.6 GB/s, SM100 40.1, "
                                 "SM80 20.0 per NVLink) is already what its rings reach: 8x H100 ring "
                                 "all_reduce ~370 GB/s busbw (NVIDIA/nccl-tests#212) = 18 x 20.6"),
    "nccl.nvls": Efficiency(1.29, "NVLink SHARP on NVSwitch: 8x H100 ~480 of ring's ~370 GB/s busbw "
                                  "(NVIDIA/nccl-tests#212)"),
    "nic": Efficiency(0.92, "RDMA write bandwidth reaches 0.90-0.95 of line rate (perftest ib_write_bw on "
                            "ConnectX-7; aznhc and cluster-health-scanner thresholds)"),
}

# Dense tensor-core FLOPs per SM per clock by (architecture, dtype). NVML architecture codes:
# 7 Ampere, 9 Hopper, 10 Blackwell. Hopper: 4 tensor cores x 512 FMA (bf16) = 4096 FLOP/clk;
# whitepapers (NVIDIA H100 Tensor Core GPU Architecture, Blackwell Architecture Technical Brief).
FLOPS_PER_CLOCK: dict[int, dict[str, int]] = {
    7: {"bf16": 2048, "fp16": 2048, "tf32": 1024},  # A100: 312 TFLOP/s bf16 at 1410 MHz, 108 SMs
    9: {"bf16": 4096, "fp16": 4096, "tf32": 2048, "fp8": 8192},
    10: {"bf16": 8192, "fp16": 8192, "tf32": 4096, "fp8": 16384},
}
CORES_PER_SM = {7: 64, 9: 128, 10: 128}

# NCCL's per-NVLink bandwidth model by architecture (GB/s, src/graph/topo.h) and NVLink's raw
# per-link rate per direction (GB/s: NVLink3 25 on A100, NVLink4 25 on H100, NVLink5 50 on B200).
NCCL_NVLINK_GBPS = {7: 20.0, 9: 20.6, 10: 40.1}
NVLINK_GBPS = {7: 25.0, 9: 25.0, 10: 50.0}

# Datasheet facts for GPUs whose recording lacks NVML's bus width or core count (older
# gpunode snapshots): PCI device id -> (SMs, memory bus width in bits). Used only as a fallback
# and said so in the arithmetic.
DATASHEET = {
    0x20B0: (108, 5120),  # A100 SXM4 40GB
    0x20B2: (108, 5120),  # A100 SXM4 80GB
    0x2330: (132, 5120),  # H100 SXM5 80GB
    0x2331: (114, 5120),  # H100 PCIe
    0x2321: (132, 6144),  # H100 NVL
    0x2335: (132, 6144),  # H200 SXM
    0x2901: (148, 8192),  # B200
}
