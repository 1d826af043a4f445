#!/usr/bin/env python3
"""Record NCCL's own log of a torch all-reduce (NCCL_DEBUG=INFO): the version, the network
plugin it chose, the channels and the transport of every peer, and the tuning table where this
NCCL prints one. One process per local GPU (torch.multiprocessing), loopback rendezvous.

    python3 benchmarks/nccl_log_record.py > nccl-info.log 2>&1
"""

from __future__ import annotations

import os
import sys


def worker(rank: int, world: int) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world)
    x = torch.ones(64 * 2**20, device="cuda")  # 256 MiB of float32
    for _ in range(5):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    assert float(x[0]) == float(world) ** 5, float(x[0])
    dist.destroy_process_group()


def main() -> int:
    import torch
    import torch.multiprocessing as mp

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    os.environ.setdefault("NCCL_DEBUG", "INFO")
    os.environ.setdefault("NCCL_DEBUG_SUBSYS", "INIT,ENV,NET,GRAPH,TUNING")
    world = torch.cuda.device_count()
    print(f"# {world} GPU(s), torch {torch.__version__}, NCCL {torch.cuda.nccl.version()}", flush=True)
    mp.spawn(worker, args=(world,), nprocs=world, join=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
