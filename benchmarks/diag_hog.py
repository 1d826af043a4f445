"""A co-running process that hogs the GPU (bf16 GEMMs in a loop, 16 GiB held) for the
interference run of issue 14. Runs until killed."""

import torch

held = torch.empty(16 << 30, dtype=torch.uint8, device="cuda")
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
b = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
while True:
    for _ in range(20):
        a @ b
    torch.cuda.synchronize()
