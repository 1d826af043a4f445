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
                             f'[ "$1" = update ] || grep -q ^update {log} || exit 100  # no lists yet')
    venv_bin = repo / ".venv" / "bin"
    _stub(stubs / "python3", '[ "$1" = -c ] && exit 1  # no ensurepip\n'
                             f'mkdir -p {venv_bin} && printf "#!/bin/bash\\n" > {venv_bin}/python && '
                             f'cp {venv_bin}/python {venv_bin}/ruff && chmod +x {venv_bin}/*')
    env = {"PATH": f"{stubs}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(repo / "tests" / "run-all.sh")], env=env, capture_output=True,
                            text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert log.read_text().splitlines() == ["update -qq", "install -y -qq --no-install-recommends python3-venv"]
    assert os.access(venv_bin / "python", os.X_OK)
