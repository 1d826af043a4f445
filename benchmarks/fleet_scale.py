#!/usr/bin/env python3
"""Controller cost of `gpunode fleet audit` as the fleet grows (a measurement, not a test).

For each fleet size N, N inventory hosts on ansible_connection=local each audit their own copy
of a replayed snapshot (a recorded host from tests/fixtures/hosts when there is one, else the
H100 NVML recording with a few host files). Measured: wall time and CPU time (user+sys of this
process and all its waited-for children, resource.getrusage) of the whole `gpunode fleet audit`
run, per host, and how the per-host cost grows from the smallest size.

With local connection the "nodes" are this machine too, so the total includes each node's own
work: the Ansible module process and the gpunode audit it starts, which on a real fleet run on
the node. The hosts' python interpreter is a small bash wrapper that appends the CPU times of
its child (bash `times`) to a log, so the node share is measured, not guessed; the controller's
share is the total minus it. One `gpunode audit --snapshot` alone is timed too, for reference.

    .venv/bin/python benchmarks/fleet_scale.py [--hosts 10 50 100] [--forks 10]
Target (issue 7): linear growth, <= 0.5 s controller CPU per host.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import fleetkit  # noqa: E402  (tests/ helpers: snapshot and inventory writers)

from gpunode.host.runner import Runner  # noqa: E402


def cpu_now() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measured(argv: list[str], timeout: float) -> tuple[float, float, object]:
    cpu0, wall0 = cpu_now(), time.monotonic()
    result = Runner().run(argv, timeout=timeout)
    return time.monotonic() - wall0, cpu_now() - cpu0, result


def source_snapshot(base: Path) -> Path:
    recorded = sorted(p for p in (REPO / "tests" / "fixtures" / "hosts").glob("*") if (p / "meta.json").exists())
    if recorded:
        return recorded[0]
    return fleetkit.make_snapshot(base / "synthetic", "gpu-h100-00", files=fleetkit.TUNED_FILES)


def node_cost(snapshot: Path, repeats: int = 5) -> float:
    """CPU seconds of one node's own work: the gpunode audit process the playbook runs."""
    costs = []
    for _ in range(repeats):
        _, cpu, result = measured([fleetkit.gpunode_bin(), "audit", "--json", "--snapshot", str(snapshot)], 120)
        assert result.rc in (0, 1, 2, 3) and result.stdout.startswith("{"), result.stderr
        costs.append(cpu)
    return statistics.median(costs)


NODE_PYTHON = """#!/bin/bash
# The node side of one Ansible module run: the module's python and what it starts (gpunode).
{python} "$@"
rc=$?
times >> {log}
exit $rc
"""


def node_seconds(log: Path) -> float:
    """Sum of the CPU times that the wrappers logged: bash `times` prints the shell's own
    user/sys, then its children's, as e.g. `0m0.004s 0m0.000s`."""
    total = 0.0
    for line in log.read_text().splitlines():
        for field in line.split():
            minutes, _, seconds = field.rstrip("s").partition("m")
            total += int(minutes) * 60 + float(seconds)
    return total


def fleet_run(base: Path, snapshot: Path, hosts: int, forks: int) -> dict:
    work = base / f"fleet-{hosts}"
    lines = []
    for i in range(hosts):
        own = work / "snaps" / f"n{i:03d}"
        shutil.copytree(snapshot, own)
        lines.append(f"n{i:03d} gpunode_snapshot={own}")
    log = work / "node-cpu.log"
    wrapper = work / "node-python"
    wrapper.write_text(NODE_PYTHON.format(python=sys.executable, log=log))
    wrapper.chmod(0o755)
    inv = fleetkit.write_inventory(work / "inv.ini", {"h100": lines},
                                   fleetkit.local_vars(ansible_python_interpreter=str(wrapper)))
    argv = [sys.executable, "-m", "gpunode", "fleet", "audit", "-i", str(inv), "--json", "--quiet",
            "--forks", str(forks), "--state-dir", str(work / "state")]
    wall, cpu, result = measured(argv, timeout=3600)
    doc = json.loads(result.stdout)
    reported = sum(1 for h in doc["hosts"] if h["report"])
    if reported != hosts:
        raise SystemExit(f"only {reported}/{hosts} hosts reported: {result.stderr[-2000:]}")
    return {"hosts": hosts, "wall_s": wall, "cpu_s": cpu, "node_cpu_s": node_seconds(log)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--forks", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gpunode-fleet-scale-") as tmp:
        base = Path(tmp)
        snapshot = source_snapshot(base)
        node = node_cost(snapshot)
        print(f"snapshot: {snapshot}  forks: {args.forks}  cpus: {len(__import__('os').sched_getaffinity(0))}")
        print(f"one node's own work (gpunode audit --snapshot, median of 5): {node:.3f} s CPU")
        print(f"{'hosts':>5} {'wall s':>7} {'CPU s':>7} {'node CPU s':>10} {'ctrl CPU s':>10} "
              f"{'wall/host':>9} {'node/host':>9} {'ctrl/host':>9} {'growth':>6}")
        first = None
        for n in args.hosts:
            row = fleet_run(base, snapshot, n, args.forks)
            controller = (row["cpu_s"] - row["node_cpu_s"]) / n
            first = first or controller
            print(f"{n:>5} {row['wall_s']:>7.1f} {row['cpu_s']:>7.1f} {row['node_cpu_s']:>10.1f} "
                  f"{row['cpu_s'] - row['node_cpu_s']:>10.1f} {row['wall_s'] / n:>9.3f} {row['node_cpu_s'] / n:>9.3f} "
                  f"{controller:>9.3f} {controller / first:>6.2f}", flush=True)
        print("node: the module process and gpunode on each host (on a real fleet: the nodes' CPU); ctrl: the rest,"
              " i.e. ansible-runner, ansible-playbook and its workers; growth: ctrl/host relative to the first size"
              " (1.00 = linear)")


if __name__ == "__main__":
    main()
