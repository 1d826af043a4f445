"""`--format nagios`: the plugin API's output (a status line with perfdata, then one long-output
line per problem, worst first), exit 0/1/2/3 as Nagios reads them; a run that judged nothing
(every check skipped) is UNKNOWN, never OK; a bad invocation answers UNKNOWN (3) with its own
status line, never CRITICAL (2)."""

from __future__ import annotations

import json
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
    assert LINE.match(lines[0]), lines
    assert lines[0].startswith("GPUNODE WARNING - ") and "sysctl.vm.swappiness" in lines[0]
    perf = dict(p.split("=") for p in lines[0].split(" | ")[1].split())
    assert int(perf["warn"].split(";")[0]) >= 1 and perf["fail"] == "0;;;0" and "duration" in perf
    # long output: one line per problem, its status, id and what was found; no `|` (perfdata only)
    assert len(lines) == 1 + int(perf["warn"].split(";")[0]), lines
    assert all(re.match(r"^WARN [a-z0-9_.]+(\[[^]]+\])?: \S", x) and "|" not in x for x in lines[1:]), lines
    assert any(x.startswith("WARN sysctl.vm.swappiness: ") for x in lines[1:])


def test_failing_host_is_critical_and_names_the_check(tmp_path):
    snap = write_snapshot(tmp_path / "failing", h100_inventory(1, remap_failure=True))
    out = gpunode("audit", "--snapshot", str(snap), "-f", "nagios", "--tag", "gate")
    lines = out.stdout.splitlines()
    assert out.returncode == 2 and LINE.match(lines[0]), out.stdout
    assert out.stdout.startswith("GPUNODE CRITICAL - 1 FAIL") and "gpu.memory.remap[GPU0]" in lines[0]
    assert lines[1:] == ["FAIL gpu.memory.remap[GPU0]: row remapping failed: a memory bank has no spare rows left"]


def test_ok_host_is_ok(tmp_path):
    out = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--format=nagios", "--only", "gpu.pcie.*")
    assert out.returncode == 0 and out.stdout.startswith("GPUNODE OK - ") and LINE.match(out.stdout.strip())
    assert out.stdout.count("\n") == 1  # no problem: no long output


def test_all_skipped_is_unknown_not_ok():
    """A run that judged nothing (no NVSwitch here: gpu.fabric skips) measured nothing: UNKNOWN."""
    out = gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--format", "nagios", "--only", "gpu.fabric")
    assert out.returncode == 3, out.stdout + out.stderr
    assert LINE.match(out.stdout.strip()), out.stdout
    assert out.stdout.startswith("GPUNODE UNKNOWN - nothing checked: all 1 checks skipped (no NVSwitch on this host)")
    doc = json.loads(gpunode("audit", "--snapshot", str(HOSTS / "h100-sxm-1gpu"), "--json", "--only", "gpu.fabric").stdout)
    assert doc["status"] == "UNKNOWN" and doc["exit_code"] == 3


def test_long_output_is_bounded_and_pipe_free():
    from gpunode.audit.engine import Result, Status
    from gpunode.audit.report import NAGIOS_LINE_CHARS, NAGIOS_LONG_LINES, nagios_output

    results = [Result(id=f"x.c{i}", title="t", area="x", severity="warning", status=Status.WARN,
                      message="a | b " + "m" * 500) for i in range(NAGIOS_LONG_LINES + 5)]
    results.append(Result(id="x.err", title="t", area="x", severity="critical", status=Status.ERROR, message="broke"))
    lines = nagios_output(results).splitlines()
    assert lines[0].startswith("GPUNODE UNKNOWN - 1 ERROR, 35 WARN: x.err, x.c0")
    assert lines[1] == "ERROR x.err: broke"  # worst first
    assert len(lines) == 1 + NAGIOS_LONG_LINES + 1 and lines[-1].startswith("... and 6 more")
    assert all("|" not in x and len(x) <= NAGIOS_LINE_CHARS for x in lines[1:])
    assert sum(len(x) + 1 for x in lines) < 8192  # the plugin API's limit on all of it


@pytest.mark.parametrize("bad", [["--bogus"], ["--expected-gpus", "-1"], ["--snapshot", "/nonexistent"],
                                 ["--only", "no.such.check"], ["--xid-window", "abc"]])
def test_usage_errors_are_unknown_in_nagios_mode(bad):
    out = gpunode("audit", "--format", "nagios", *bad)
    assert out.returncode == 3, (bad, out.stdout, out.stderr)
    assert out.stdout.startswith("GPUNODE UNKNOWN - ") and out.stdout.count("\n") == 1, out.stdout
    plain = gpunode("audit", *bad)
    assert plain.returncode == 3 and plain.stdout == ""  # outside nagios mode: the usage exit (3) too
