#!/usr/bin/env python3
"""gpunode watch's safety figures without a cluster (issue 22), through the real policy
(gpunode/watch/policy.py: decide):

- flapping: a gate check failing every other poll for --polls polls -> drains (must be 0);
  the same check failing K polls in a row -> drains (must be 1);
- breaker: --fraction of a partition of N nodes hit by an Xid 95 at once, in random order ->
  drains, against breaker_fraction x N (must not exceed it).

    .venv/bin/python benchmarks/watch_policy_sim.py [--sizes 10 50 200 1000] [--fraction 0.30] [-o FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))

from gpunode.watch.events import Event, PolicyState  # noqa: E402
from gpunode.watch.policy import PartitionView, WatchConfig, decide  # noqa: E402

NOW = 1_800_000_000.0


def flapping(polls: int, k: int) -> dict:
    config = WatchConfig(hysteresis_k=k)
    state, drains = PolicyState(), 0
    for i in range(polls):
        event = Event("poll", "check", NOW + i * 10, "GPU0", check_id="gpu.memory.remap",
                      status="FAIL" if i % 2 else "PASS")
        drains += sum(a.kind == "drain" for a in decide(state, event, config, NOW + i * 10))
    state, steady = PolicyState(), 0
    for i in range(k):
        event = Event("poll", "check", NOW + i * 10, "GPU0", check_id="gpu.memory.remap", status="FAIL")
        steady += sum(a.kind == "drain" for a in decide(state, event, config, NOW + i * 10))
    return {"polls": polls, "hysteresis_k": k, "drains_flapping": drains, "drains_k_in_a_row": steady}


def breaker(size: int, fraction: float, limit: float, seed: int) -> dict:
    rng = random.Random(seed)
    drained: set[int] = set()
    config = WatchConfig(breaker_fraction=limit,
                         partition=lambda now: PartitionView(size, len(drained)))
    hit = rng.sample(range(size), round(size * fraction))
    held = 0
    for node in hit:
        actions = decide(PolicyState(), Event("kmsg", "xid", NOW, f"n{node}-GPU0", 95), config, NOW)
        if any(a.kind == "drain" for a in actions):
            drained.add(node)
        else:
            held += 1
    allowed = next(k for k in range(size + 1) if k / size >= limit)  # refused once >= limit x N carry one
    return {"nodes": size, "hit": len(hit), "drained": len(drained), "held": held, "allowed": allowed,
            "within": len(drained) <= allowed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 200, 1000])
    parser.add_argument("--fraction", type=float, default=0.30)
    parser.add_argument("--limit", type=float, default=0.20)
    parser.add_argument("--polls", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("-o", "--output")
    args = parser.parse_args()
    doc = {"flapping": flapping(args.polls, WatchConfig().hysteresis_k),
           "breaker": [breaker(n, args.fraction, args.limit, args.seed) for n in args.sizes]}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    ok = doc["flapping"]["drains_flapping"] == 0 and doc["flapping"]["drains_k_in_a_row"] == 1 \
        and all(b["within"] for b in doc["breaker"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
