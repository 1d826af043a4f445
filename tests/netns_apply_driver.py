"""Run inside `unshare --net`: apply the profile's net sysctls for real in this network
namespace, read the kernel's values, roll back, read again, then try a write the kernel
refuses. Prints one JSON document. Used by test_apply_netns.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

KNOBS = ["net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/tcp_congestion_control", "net/core/rmem_max",
         "net/core/wmem_max"]


def values() -> dict:
    out = {}
    for knob in KNOBS:
        path = Path("/proc/sys") / knob
        out[knob] = " ".join(path.read_text().split()) if path.exists() else None
    return out


def gpunode(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=60)
    return {"rc": proc.returncode, "doc": json.loads(proc.stdout) if proc.stdout.startswith("{") else None,
            "stderr": proc.stderr}


def main() -> None:
    state = sys.argv[1]
    current = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
    available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    other = next(cc for cc in ["reno", *available] if cc != current)  # reno is always built in
    common = ["--profile", "training", "--only", "sysctl.net.*", "--no-persist", "--state-dir", state, "--json",
              "--yes"]
    report = {"cc_target": other, "before": values()}
    report["apply"] = gpunode("apply", *common, "--set", f"sysctl.net.ipv4.tcp_congestion_control={other}")
    report["applied"] = values()
    report["again"] = gpunode("apply", *common, "--set", f"sysctl.net.ipv4.tcp_congestion_control={other}")
    report["rollback"] = gpunode("rollback", "--state-dir", state, "--json")
    report["rolled_back"] = values()
    report["failing"] = gpunode("apply", *common, "--set", "sysctl.net.ipv4.tcp_congestion_control=nosuchcc")
    report["after_failing"] = values()
    print(json.dumps(report))


if __name__ == "__main__":
    main()
