"""Telemetry smoke test for the device run: the live sampler (Xid event set on, unless --no-xid)
for a few seconds beside a torch GEMM loop; prints the summary. A crash here is the driver's NVML."""

import json
import sys
import time

import torch

from gpunode.host.gpu.telemetry import TelemetrySampler

sampler = TelemetrySampler.live(xid_events="--no-xid" not in sys.argv).start()
a = torch.randn(8192, 8192, dtype=torch.bfloat16, device="cuda")
end = time.monotonic() + 4
while time.monotonic() < end:
    for _ in range(20):
        a @ a
    torch.cuda.synchronize()
print(json.dumps(sampler.stop().summary()))
