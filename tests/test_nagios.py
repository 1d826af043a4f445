"""`--format nagios`: one plugin line with perfdata, exit 0/1/2/3 as Nagios reads them, and a
bad invocation answers UNKNOWN (3) with its own status line, never CRITICAL (2)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from gate_fixtures import h100_inventory, write_snapshot

from testkit import HOSTS

LINE = re.compile(r"^GPUNODE (OK|WARNING|CRITICAL|UNKNOWN) - [^|\n]+ \| (?:[a-z_]+=[0-9.]+s?;;;0 ?)+$")


def gpunode(*args):
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=120)


def test_warn_host_is_warning_with_perfdata():
    out = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--format", "nagios")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]), lines
    assert lines[0].startswith("GPUNODE WARNING - ") and "sysctl.vm.swappiness" in lines[0]
    perf = dict(p.split("=") for p in lines[0].split(" | ")[1].split())
    assert int(perf["warn"].split(";")[0]) >= 1 and perf["fail"] == "0;;;0" and "duration" in perf


def test_failing_host_is_critical_and_names_the_check(tmp_path):
    snap = write_snapshot(tmp_path / "failing", h100_inventory(1, remap_failure=True))
    out = gpunode("audit", "--snapshot", str(snap), "-f", "nagios", "--tag", "gate")
    assert out.returncode == 2 and LINE.match(out.stdout.strip()), out.stdout
    assert out.stdout.startswith("GPUNODE CRITICAL - 1 FAIL") and "gpu.memory.remap[GPU0]" in out.stdout


def test_ok_host_is_ok(tmp_path):
    out = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--format=nagios", "--only", "gpu.pcie.*")
    assert out.returncode == 0 and out.stdout.startswith("GPUNODE OK - ") and LINE.match(out.stdout.strip())


@pytest.mark.parametrize("bad", [["--bogus"], ["--expected-gpus", "-1"], ["--snapshot", "/nonexistent"],
                                 ["--only", "no.such.check"], ["--xid-window", "abc"]])
def test_usage_errors_are_unknown_in_nagios_mode(bad):
    out = gpunode("audit", "--format", "nagios", *bad)
    assert out.returncode == 3, (bad, out.stdout, out.stderr)
    assert out.stdout.startswith("GPUNODE UNKNOWN - ") and out.stdout.count("\n") == 1, out.stdout
    plain = gpunode("audit", *bad)
    assert plain.returncode == 2 and plain.stdout == ""  # outside nagios mode: click's usage exit
