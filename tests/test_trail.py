"""The audit trail: apply and rollback each send one syslog line (ident gpunode, facility
authpriv) to the config's audit_log socket, read here from a real AF_UNIX datagram socket
standing in for /dev/log. Drains and resumes: tests/test_slurm_chain.py (real Slurm)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from gpunode.trail import message, record
from testkit import HOSTS


@pytest.fixture
def syslog(tmp_path):
    path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)
    yield path, sock
    sock.close()


def received(sock) -> list[str]:
    out = []
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except TimeoutError:
        return out


def gpunode(*args, config):
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "GPUNODE_CONFIG": str(config)})


def test_apply_and_rollback_are_logged(tmp_path, syslog):
    path, sock = syslog
    config = tmp_path / "config.yaml"
    config.write_text(f"audit_log: {path}\n")
    root, state = tmp_path / "root", tmp_path / "state"
    shutil.copytree(HOSTS / "h100-sxm-1gpu" / "files", root, symlinks=True)
    common = ["--sysroot", str(root), "--state-dir", str(state)]
    dry = gpunode("apply", *common, "--profile", "training", "--dry-run", config=config)
    assert dry.returncode == 0 and received(sock) == []  # a plan changes nothing: no trail
    done = gpunode("apply", *common, "--profile", "training", "--only", "sysctl.vm.*", "--yes", config=config)
    assert done.returncode in (0, 1), done.stderr
    lines = received(sock)
    assert len(lines) == 1 and lines[0].startswith("<85>gpunode[")  # authpriv.notice
    assert " apply id=" in lines[0] and "profile=training" in lines[0] and f"root={root}" in lines[0]
    assert "result=applied" in lines[0] and "changes=" in lines[0]
    back = gpunode("rollback", *common, config=config)
    assert back.returncode == 0, back.stderr
    lines = received(sock)
    assert len(lines) == 1 and " rollback id=" in lines[0] and "restored=" in lines[0]


def test_off_and_missing_socket_are_silent(tmp_path, syslog):
    path, sock = syslog
    cfg = tmp_path / "c.yaml"
    cfg.write_text("audit_log: 'off'\n")
    from gpunode.config import load_config

    assert record("apply", {"id": "x"}, load_config(str(cfg))) is None and received(sock) == []
    cfg.write_text(f"audit_log: {tmp_path / 'nothing-here'}\n")
    assert record("apply", {"id": "x"}, load_config(str(cfg))) is None


def test_a_socket_that_refuses_is_a_warning(tmp_path):
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(stale))
    s.close()  # the path exists, nobody listens
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"audit_log: {stale}\n")
    from gpunode.config import load_config

    warning = record("apply", {"id": "x"}, load_config(str(cfg)))
    assert warning and warning.startswith(f"audit trail: cannot log to {stale}")


def test_message_quotes_values_and_keeps_one_line():
    text = message("drain", {"detail": "gpunode: gpu.xid GPU0: Xid 79\nfallen off", "empty": "", "n": 3})
    assert text == "drain detail='gpunode: gpu.xid GPU0: Xid 79 fallen off' n=3"
