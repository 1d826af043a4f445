"""The documents `gpunode topo` and `gpunode expect` print: built from a Host, rendered by the CLI."""

from __future__ import annotations

from gpunode.host.facts.topology import Topology, build
from gpunode.host.gpu.model import GpuInfo
from gpunode.topology.expect import expectations

TOPO_SCHEMA = "gpunode.topo/1"
EXPECT_SCHEMA = "gpunode.expect/1"


def host_topology(host) -> tuple[Topology, list[GpuInfo], str | None]:
    """The topology and the GPUs it was built with; the NVML error when there are none."""
    inv = host.gpu.inventory(timeout=30)
    gpus = inv.gpus if inv.available else []
    return build(host, gpus), gpus, None if inv.available else (inv.error or "no NVIDIA driver/NVML")


def topo_document(host) -> dict:
    topo, _, nvml_error = host_topology(host)
    ends = topo.gpus + topo.nics
    matrix = [{"from": a.name, **{b.name: topo.path(a, b) for b in ends}} for a in topo.gpus]
    devices = [{"name": d.name, "kind": d.role, "bdf": d.bdf, "numa_node": d.numa_node,
                "link": str(d.link) if d.link else None, "link_max": str(d.link_max) if d.link_max else None,
                "line_rate_gbps": d.line_rate_gbps, "rdma": d.rdma}
               for d in topo.gpus + topo.nics + topo.nvmes]
    return {"schema": TOPO_SCHEMA, "columns": [e.name for e in ends], "matrix": matrix, "devices": devices,
            "nvlinks_active": {topo.gpus[i].name: n for i, n in topo.nvlinks_active.items()},
            "acs_read": topo.tree.acs is not None, "gpu_error": nvml_error}


def expect_document(host) -> dict:
    topo, gpus, nvml_error = host_topology(host)
    return {"schema": EXPECT_SCHEMA, "gpu_error": nvml_error,
            "expectations": [e.to_json() for e in expectations(topo, gpus)]}
