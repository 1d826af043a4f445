"""One exit-code contract in every command and mode (gpunode.exits): 0 OK, 1 WARN, 2 FAIL,
3 UNKNOWN / gpunode's own error / usage error. Only a confirmed FAIL is ever 2, so nothing
that drains on 2 (NHC, a Slurm hook, an alert) drains a node for gpunode's own mistake."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gpunode import exits


def gpunode(*args, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True,
                          timeout=60, env=full)


def test_the_contract_in_one_place():
    assert exits.EXIT_CODES == {"OK": 0, "WARN": 1, "FAIL": 2, "UNKNOWN": 3}
    assert exits.USAGE_EXIT == exits.OWN_ERROR_EXIT == exits.UNKNOWN_EXIT == 3
    for mode in ("check", *exits.HOOK_MODES):
        for strict in (False, True):
            assert exits.own_error_exit(mode, strict) != exits.FAIL_EXIT
    assert exits.own_error_exit("prolog", False) == exits.own_error_exit("epilog", False) == 0
    assert exits.own_error_exit("prolog", True) == 3 and exits.own_error_exit("health-check", False) == 3
    assert exits.slurm_hook_exit("prolog", blocked=True) == 2 and exits.slurm_hook_exit("prolog", False) == 0
    assert exits.slurm_hook_exit("epilog", True, drained=True) == 0
    assert exits.slurm_hook_exit("epilog", True, drained=False) == 2
    assert exits.slurm_hook_exit("health-check", True, own_problems=False) == 0
    assert exits.slurm_hook_exit("health-check", False, own_problems=True) == 3


@pytest.mark.parametrize("case", ["not-yaml", "unknown-option", "missing-snapshot", "missing-config"])
def test_plain_gate_own_errors_are_unknown_never_fail(tmp_path, case):
    """The issue's three: a config that is not YAML, an unknown option, a missing snapshot (and
    a config path that does not exist): exit 3 and one line, never 2 (NHC drains on 2)."""
    config = tmp_path / "c.yaml"
    config.write_text("expected_gpus: [8\n")  # not YAML
    args = {"not-yaml": ("--config", str(config)), "unknown-option": ("--bogus",),
            "missing-snapshot": ("--snapshot", str(tmp_path / "gone")),
            "missing-config": ("--config", str(tmp_path / "nope.yaml"))}[case]
    r = gpunode("gate", *args)
    assert r.returncode == 3, r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("gpunode: error: "), r.stderr


@pytest.mark.parametrize(("mode", "strict", "code"), [
    ("--prolog", False, 0), ("--epilog", False, 0), ("--health-check", False, 3),
    ("--prolog", True, 3), ("--epilog", True, 3), ("--health-check", True, 3),
])
def test_hook_modes_own_error_never_exits_with_the_fail_code(tmp_path, mode, strict, code):
    config = tmp_path / "c.yaml"
    config.write_text("{{{ not yaml\n")
    r = gpunode("gate", mode, *(["--strict"] if strict else []), "--config", str(config),
                env={"PATH": str(tmp_path)})  # no scontrol: nothing could drain
    assert r.returncode == code, r.stdout + r.stderr


def test_a_broken_install_in_the_fast_path_is_an_own_error(monkeypatch, capsys):
    """An import or driver-binding failure before the gate starts (a half-removed install)
    is gpunode's own error: 0 in a prolog, 3 in check mode, never a traceback's exit 1."""
    from gpunode.slurm import fastpath

    def broken(snapshot):
        raise ImportError("No module named 'pynvml'")

    monkeypatch.setattr(fastpath, "_start_nvml", broken)
    assert fastpath.fast_main(["--prolog"]) == 0
    assert fastpath.fast_main([]) == 3
    assert fastpath.fast_main(["--epilog", "--strict"]) == 3
    assert "No module named 'pynvml'" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ("audit", "--bogus"), ("nosuch-command",), ("audit", "--format", "xml"), ("slurm", "install", "--interval", "x"),
])
def test_click_usage_errors_are_one_line_and_exit_3(argv):
    r = gpunode(*argv)
    assert r.returncode == 3, r.stdout + r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("gpunode: error: "), r.stderr
    assert "Usage:" not in r.stderr


def test_click_usage_error_exit_3_in_process_too():
    """The same through typer's CliRunner (the app object tests use), not only `python -m`."""
    from typer.testing import CliRunner

    from gpunode.cli import app

    out = CliRunner().invoke(app, ["audit", "--bogus"])
    assert out.exit_code == 3 and out.stderr.startswith("gpunode: error: No such option: --bogus")


def test_gpunode_own_usage_errors_exit_3():
    """die() (every command's own bad-input path) uses the contract's usage code."""
    r = gpunode("slurm", "install", "--prefix", "/nonexistent/dir/x")
    assert r.returncode == 3 and r.stderr.startswith("gpunode: error: --prefix")


def test_worst_exit_ranks_fail_above_own_error_above_warn():
    assert exits.worst_exit(0, 1) == 1 and exits.worst_exit(1, 3) == 3 and exits.worst_exit(3, 2) == 2
    assert exits.worst_exit(2, 0, 3, 1) == 2 and exits.worst_exit(0) == 0


@pytest.mark.parametrize("args", [
    ("checks", "-f", "plain"), ("checks", "-f", "table"), ("checks", "-f", "json"),
    ("audit", "--snapshot", "tests/fixtures/hosts/h100-sxm-1gpu", "-f", "plain"),
    ("profiles", "-f", "tsv"),
])
def test_a_reader_that_went_away_is_unknown_not_a_verdict(tmp_path, args):
    """`gpunode audit | head -1` under pipefail: rich ended the command with exit 1 (WARN by the
    contract) and json output with a traceback. Nobody read the verdict: UNKNOWN (3), no noise.
    The pipe's read end is closed before the command starts, so the first write fails: no race."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    env["GPUNODE_STATE_DIR"] = str(tmp_path / "state")
    try:
        done = subprocess.run([sys.executable, "-m", "gpunode", *args], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, env=env, cwd=os.path.dirname(os.path.dirname(__file__)))
    finally:
        os.close(write_end)
    assert done.returncode == exits.UNKNOWN_EXIT, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize("mode", [(), ("--prolog",), ("--health-check",), ("--json",)])
def test_the_gate_whose_reader_went_away_keeps_its_verdict(tmp_path, mode):
    """A prolog whose stdout is a pipe nobody reads (a wrapper's logger died): the report's write
    raised out of the gate, a traceback and exit 1, and Slurm drains a node for a non-zero
    prolog. The verdict is the gate's answer; only its report is lost."""
    args = ("gate", *mode, "--snapshot", "tests/fixtures/hosts/h100-sxm-1gpu", "--no-scontrol")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    env.update(GPUNODE_STATE_DIR=str(tmp_path / "state"), GPUNODE_WATCH_DIR=str(tmp_path / "no-watcher"))
    root = os.path.dirname(os.path.dirname(__file__))
    read = subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=60,
                          env=env, cwd=root)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        unread = subprocess.run([sys.executable, "-m", "gpunode", *args], stdout=write_end, stderr=subprocess.PIPE,
                                text=True, timeout=60, env=env, cwd=root)
    finally:
        os.close(write_end)
    assert read.returncode == exits.EXIT_CODES["OK"], read.stderr
    assert unread.returncode == read.returncode and "Traceback" not in unread.stderr, unread.stderr


def test_a_prolog_usage_error_with_stderr_gone_still_does_not_block(tmp_path):
    """The own-error line of a prolog could not be written (stderr a dead pipe): the print raised,
    a traceback's exit 1 blocked the job. The mode's own-error exit (0) stands."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUNODE_", "SLURM"))}
    env.update(GPUNODE_STATE_DIR=str(tmp_path / "state"), GPUNODE_WATCH_DIR=str(tmp_path / "no-watcher"))
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "gpunode", "gate", "--prolog", "--no-such-option"],
                              stdout=subprocess.PIPE, stderr=write_end, timeout=60, env=env)
    finally:
        os.close(write_end)
    assert done.returncode == exits.own_error_exit("prolog", False) == 0
