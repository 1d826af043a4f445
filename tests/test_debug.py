"""`gpunode --debug`: every command gpunode runs and every file it reads, on stderr, one line
each; stdout (the report) is unchanged."""

from __future__ import annotations

import subprocess
import sys

from testkit import HOSTS


def gpunode(*args):
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=120)


def test_debug_lists_files_read_and_commands_run():
    plain = gpunode("audit", "--only", "net.qdisc,sysctl.vm.swappiness", "--json")
    debug = gpunode("--debug", "audit", "--only", "net.qdisc,sysctl.vm.swappiness", "--json")
    lines = debug.stderr.splitlines()
    assert "gpunode: debug: read: /proc/sys/vm/swappiness" in lines
    assert any(x.startswith("gpunode: debug: run: tc ") and "(timeout " in x for x in lines), lines
    assert plain.stderr == "" or "debug" not in plain.stderr
    assert debug.returncode == plain.returncode


def test_debug_names_the_tree_a_snapshot_is_read_from():
    snap = HOSTS / "h100-sxm-1gpu"
    out = gpunode("--debug", "audit", "--snapshot", str(snap), "--only", "kernel.tainted")
    assert f"gpunode: debug: read: /proc/sys/kernel/tainted (under {snap / 'files'})" in out.stderr.splitlines()
