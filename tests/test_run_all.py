"""tests/run-all.sh (what CI runs) against stub commands: the install steps, not the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).with_name("run-all.sh")


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(0o755)


def test_python3_venv_comes_after_apt_get_update_when_everything_else_is_installed(tmp_path):
    """A machine with the test packages but no apt lists (cleaned images) and Debian's python3
    without venv: python3-venv must be installed after `apt-get update`, or apt cannot find it."""
    repo, stubs, log = tmp_path / "repo", tmp_path / "stubs", tmp_path / "apt.log"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tests" / "run-all.sh")
    stubs.mkdir()
    _stub(stubs / "id", "echo 0")
    _stub(stubs / "dpkg", "[ \"$2\" != python3-venv ]")  # everything but python3-venv is installed
    _stub(stubs / "apt-get", f'echo "$*" >> {log}\n'
                             f'[ "$2" = update ] || grep -q update {log} || exit 100  # no lists yet')
    venv_bin = repo / ".venv" / "bin"
    _stub(stubs / "python3", '[ "$1" = -c ] && exit 1  # no ensurepip\n'
                             f'mkdir -p {venv_bin} && printf "#!/bin/bash\\n" > {venv_bin}/python && '
                             f'cp {venv_bin}/python {venv_bin}/ruff && chmod +x {venv_bin}/*')
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(repo / "tests" / "run-all.sh")], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["-q update", "-q install -y --no-install-recommends python3-venv"]
    assert os.access(venv_bin / "python", os.X_OK)


def _run_fresh(tmp_path: Path) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """run-all.sh on a machine with no test package installed; apt-get is a stub that logs its
    arguments, prints what the real one would, and runs policy-rc.d as a package's postinst does."""
    repo, stubs, log = tmp_path / "repo", tmp_path / "stubs", tmp_path / "apt.log"
    policy = tmp_path / "policy-rc.d"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(SCRIPT, repo / "tests" / "run-all.sh")
    stubs.mkdir()
    _stub(stubs / "id", "echo 0")
    _stub(stubs / "dpkg", "exit 1")  # nothing installed
    _stub(stubs / "apt-get", f'echo "$*" >> {log}\n'
                             'echo "Setting up $2 ..."\n'
                             f'if [ "$2" = install ]; then {policy} munge start; echo "policy-rc.d: $?" >> {log}; fi')
    venv_bin = repo / ".venv" / "bin"
    _stub(stubs / "python3", f'mkdir -p {venv_bin} && printf "#!/bin/bash\\n" > {venv_bin}/python && '
                             f'cp {venv_bin}/python {venv_bin}/ruff && chmod +x {venv_bin}/*')
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path), "GPUNODE_POLICY_RC_D": str(policy)}
    result = subprocess.run(["bash", str(repo / "tests" / "run-all.sh")], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    return result, log, policy


def test_packages_install_with_daemon_starts_denied_and_apt_progress_shown(tmp_path):
    """No package may start its daemon while installed (policy-rc.d answers 101, and is gone
    afterwards), and apt's own progress lines reach the log: no -qq, no >/dev/null."""
    result, log, policy = _run_fresh(tmp_path)
    assert result.returncode == 0, result.stderr
    lines = log.read_text().splitlines()
    assert "policy-rc.d: 101" in lines
    assert not policy.exists()
    assert "Setting up install" in result.stdout  # apt's output is not swallowed
    assert all("-qq" not in line.split() for line in lines)
    assert "run-all: apt-get update" in result.stdout


def test_only_packages_whose_programs_the_tests_run(tmp_path):
    """No meta-package (slurm-wlm pulls slurmdbd-less extras), no kmod/procps the tests never call;
    every package listed is one a test names."""
    result, log, _ = _run_fresh(tmp_path)
    assert result.returncode == 0, result.stderr
    install = next(line for line in log.read_text().splitlines() if " install " in f" {line} ")
    packages = set(install.split()[4:])
    assert packages == {"fio", "slurmctld", "slurmd", "slurm-client", "munge", "openssh-server", "openssh-client",
                        "iproute2", "iperf3", "util-linux", "chromium", "chromium-driver", "prometheus", "groff-base",
                        "systemd"}, packages
    tests = "".join(p.read_text() for p in SCRIPT.parent.glob("test_*.py"))
    for program in ("fio", "slurmctld", "slurmd", "munged", "sshd", "ssh", "ip", "iperf3", "unshare", "setpriv",
                    "chromium", "chromedriver", "promtool", "groff", "systemd-analyze"):
        assert f'"{program}"' in tests or f"/{program}\"" in tests, program


def test_a_saved_policy_rc_d_comes_back(tmp_path):
    """A site's own policy-rc.d is restored after the install."""
    policy = tmp_path / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 0\n")
    policy.chmod(0o755)
    result, log, policy = _run_fresh(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "policy-rc.d: 101" in log.read_text().splitlines()
    assert policy.read_text() == "#!/bin/sh\nexit 0\n"
