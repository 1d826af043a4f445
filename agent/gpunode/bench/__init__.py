"""`gpunode bench`: in-process GPU microbenchmarks, nccl-tests, fio and torch.distributed.

Every benchmark yields `Metric`s (results.py), the contract shared with baselines and fleet.
torch and cupy are optional: they are imported lazily, inside the functions that use them.
"""
