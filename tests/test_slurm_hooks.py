"""The hooks `gpunode slurm install` writes outlive the install they name: when its Python or
the gpunode package is gone (a deleted venv), or gpunode fails in a way that is not a verdict
(a crash, a missing module), the hook logs one syslog line and exits 0, so Slurm drains
nothing; installed with --strict it fails instead. Only the gate's FAIL (2) blocks a job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gate_fixtures import h100_inventory, write_snapshot

from gpunode.slurm.install import HOOKS, SAFE_PATH, hook_scripts, install_script, package_main


@pytest.fixture(scope="module")
def snaps(tmp_path_factory):
    root = tmp_path_factory.mktemp("snaps")
    return {"ok": write_snapshot(root / "ok", h100_inventory(2)),
            "bad": write_snapshot(root / "bad", h100_inventory(1, remap_failure=True))}


class Install:
    """A stand-in install (a Python launcher and a package entry of its own, both deletable),
    its hooks under `hooks/`, and a `logger` that records what the hooks send to syslog."""

    def __init__(self, root: Path, strict: bool = False, python_body: str | None = None):
        self.root = root
        venv = root / "venv" / "bin"
        venv.mkdir(parents=True)
        self.python = venv / "python"
        self.python.write_text(python_body or f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        self.python.chmod(0o755)
        self.entry = root / "venv" / "gpunode" / "__main__.py"
        self.entry.parent.mkdir()
        self.entry.write_text("")
        bin_dir = root / "bin"
        bin_dir.mkdir()
        self.syslog = root / "syslog"
        (bin_dir / "logger").write_text(f'#!/bin/sh\necho "$*" >> {self.syslog}\n')
        (bin_dir / "logger").chmod(0o755)
        self.hooks = root / "hooks"
        self.hooks.mkdir()
        for script in hook_scripts(self.hooks, str(self.python), timeout=8, strict=strict, entry=self.entry):
            # The real text, with the test's logger first on the PATH the hook sets.
            text = script.text.replace(f"PATH={SAFE_PATH}\n", f"PATH={bin_dir}:{SAFE_PATH}\n")
            install_script(type(script)(script.mode, script.path, text), as_root=False)

    def run(self, mode: str, snapshot: Path) -> subprocess.CompletedProcess:
        """As slurmd runs a hook: no arguments, an almost empty environment."""
        env = {"GPUNODE_SNAPSHOT": str(snapshot), "SLURMD_NODENAME": "nosuch"}
        return subprocess.run([str(self.hooks / HOOKS[mode])], env=env, capture_output=True, text=True,
                              timeout=60)

    def logged(self) -> list[str]:
        return self.syslog.read_text().splitlines() if self.syslog.exists() else []


def test_the_hook_names_its_install_and_logs_through_logger(tmp_path):
    script = hook_scripts(tmp_path, "/opt/gpunode/bin/python")[0]
    assert f"entry={package_main()}" in script.text and package_main().is_file()
    assert "python=/opt/gpunode/bin/python" in script.text
    assert 'logger -t gpunode -p daemon.err "prolog hook: gpunode is gone' in script.text
    assert not any(line.startswith("exec ") for line in script.text.splitlines())  # it must see the exit code


def test_a_working_install_still_blocks_on_fail(tmp_path, snaps):
    inst = Install(tmp_path)
    assert inst.run("prolog", snaps["bad"]).returncode == 2
    assert inst.run("prolog", snaps["ok"]).returncode == 0
    assert inst.logged() == []


@pytest.mark.parametrize("gone", ["python", "venv", "entry"])
@pytest.mark.parametrize("mode", list(HOOKS))
def test_hooks_step_aside_when_the_install_is_gone(tmp_path, snaps, mode, gone):
    inst = Install(tmp_path)
    if gone == "python":
        inst.python.unlink()
    elif gone == "entry":
        inst.entry.unlink()
    else:
        shutil.rmtree(tmp_path / "venv")
    r = inst.run(mode, snaps["bad"])  # a failing node: the gate cannot run, nothing may drain either way
    assert r.returncode == 0, r.stdout + r.stderr
    lines = inst.logged()
    assert len(lines) == 1 and lines[0].startswith(f"-t gpunode -p daemon.err {mode} hook: gpunode is gone"), lines
    assert "gate not run, not blocking" in lines[0]


@pytest.mark.parametrize("mode", list(HOOKS))
def test_strict_hooks_fail_when_the_install_is_gone(tmp_path, snaps, mode):
    inst = Install(tmp_path, strict=True)
    shutil.rmtree(tmp_path / "venv")
    r = inst.run(mode, snaps["ok"])
    assert r.returncode == 3
    assert "blocking (--strict)" in inst.logged()[0]


@pytest.mark.parametrize(("rc", "mode", "passed"), [
    (1, "prolog", False), (127, "prolog", False), (3, "prolog", False), (1, "epilog", False),
    (2, "prolog", True), (2, "epilog", True), (3, "health-check", True), (1, "health-check", False),
])
def test_only_verdict_codes_pass_through(tmp_path, snaps, rc, mode, passed):
    """A Python that is there but cannot run gpunode (a traceback's 1, a missing module) is
    gpunode's own failure: logged, exit 0. The gate's own codes pass: 2 blocks a prolog."""
    inst = Install(tmp_path, python_body=f"#!/bin/sh\necho 'No module named gpunode' >&2\nexit {rc}\n")
    r = inst.run(mode, snaps["ok"])
    assert r.returncode == (rc if passed else 0)
    assert (inst.logged() == []) is passed
    if not passed:
        assert f"{mode} hook: gpunode failed (exit {rc}): gate not run, not blocking" in inst.logged()[0]


def test_strict_passes_gpunode_failures_through(tmp_path, snaps):
    inst = Install(tmp_path, strict=True, python_body="#!/bin/sh\nexit 1\n")
    assert inst.run("prolog", snaps["ok"]).returncode == 1


def test_install_strict_is_not_inverted(tmp_path):
    """`slurm install --strict` makes the hooks pass --strict and fail on a gone install; without
    it they do neither (a mutation that flipped it survived before)."""
    for strict in (False, True):
        prefix = tmp_path / f"strict-{strict}"
        prefix.mkdir()
        args = [sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(prefix),
                *(["--strict"] if strict else [])]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60,
                           env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")})
        assert r.returncode == 0, r.stderr
        for name in HOOKS.values():
            text = (prefix / name).read_text()
            run_line = next(line for line in text.splitlines() if line.startswith('"$python" -I -m gpunode gate'))
            assert run_line.endswith(" --strict") is strict, run_line
            assert ("    exit 3\n" in text) is strict and ("    exit 0\n" in text) is not strict


def test_install_warns_about_an_install_in_a_temporary_place(tmp_path):
    from gpunode.slurm.install import transient_install

    assert transient_install("/home/ops/gpunode/.venv/bin/python", Path("/opt/x/__main__.py")) == \
        "/home/ops/gpunode/.venv/bin/python"
    assert transient_install("/opt/gpunode/bin/python", Path("/tmp/x/gpunode/__main__.py")) == \
        "/tmp/x/gpunode/__main__.py"
    assert transient_install("/opt/gpunode/bin/python", Path("/opt/gpunode/lib/gpunode/__main__.py")) is None


def test_the_temporary_place_warning_comes_after_the_work_never_ahead_of_an_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM")}
    r = subprocess.run([sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 3 and r.stderr.startswith("gpunode: error: --prefix") and "warning" not in r.stderr
