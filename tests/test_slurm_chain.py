"""gpunode chained with a site's existing HealthCheckProgram, on the REAL Slurm the suite starts
(munged, slurmctld, slurmd from Debian's slurm-wlm; see tests/test_gate_slurm.py).

LBNL NHC is not packaged for Debian 12 and cannot be fetched in CI, so a stand-in follows NHC's
documented contract: on a failed check it drains the node with `scontrol update ... state=drain
reason="NHC: <message>"` (unless the node already has a reason that is not NHC's) and exits
non-zero; on success it resumes the node only when the reason is its own (`NHC:`).
`gpunode slurm install` finds that program in slurm.conf and chains it: the node is drained
with the right reason whichever fails, and neither clears the other's drain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gate_fixtures import h100_inventory, write_snapshot
from test_gate_slurm import BINARIES, HEALTH_INTERVAL, LocalSlurm

from testkit import require

pytestmark = [pytest.mark.slow, pytest.mark.root]

NHC_STANDIN = """#!/bin/sh
# Stand-in for LBNL NHC (nhc): the same contract, one check read from a file.
SLURM_CONF={conf}; export SLURM_CONF
NODE=$(hostname -s)
reason=$(scontrol show node "$NODE" | sed -n 's/^ *Reason=\\(.*\\) \\[.*$/\\1/p')
if [ "$(cat {mode})" = fail ]; then
    case "$reason" in
        ""|NHC:*) scontrol update nodename="$NODE" state=drain reason="NHC: check_fs_mount: /scratch not mounted" ;;
    esac
    exit 1
fi
case "$reason" in NHC:*) scontrol update nodename="$NODE" state=resume ;; esac
exit 0
"""


@pytest.fixture(scope="module")
def chained(tmp_path_factory):
    require(os.geteuid() == 0, "needs root to run munged/slurmctld/slurmd")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    require(not missing, f"needs Debian packages slurm-wlm and munge (missing {', '.join(missing)})")
    root = tmp_path_factory.mktemp("slurm-chain")
    root.chmod(0o755)
    healthy = write_snapshot(root / "snap" / "healthy", h100_inventory(2))
    failing = write_snapshot(root / "snap" / "failing", h100_inventory(1, remap_failure=True))
    hooks = root / "hooks"
    hooks.mkdir()
    slurm = LocalSlurm(root)
    config, mode = root / "gpunode.yaml", root / "nhc-mode"
    config.write_text(f"snapshot: {healthy}\n")
    mode.write_text("pass\n")
    nhc = root / "nhc"
    nhc.write_text(NHC_STANDIN.format(conf=slurm.conf, mode=mode))
    nhc.chmod(0o755)
    try:
        slurm.start_munge()
        slurm.write_conf(hooks)
        # The site already runs NHC as its HealthCheckProgram.
        text = slurm.conf.read_text().replace(f"HealthCheckProgram={hooks}/gpunode-healthcheck",
                                              f"HealthCheckProgram={nhc}")
        slurm.conf.write_text(text)
        install = subprocess.run([sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(hooks),
                                  "--config", str(config), "--timeout", "8", "--slurm-conf", str(slurm.conf)],
                                 capture_output=True, text=True, timeout=60)
        assert install.returncode == 0, install.stderr
        slurm.start_slurm()
        if slurm.sinfo_state() != "idle":
            slurm.resume()
        yield {"slurm": slurm, "install": install, "hooks": hooks, "nhc": nhc, "mode": mode, "config": config,
               "healthy": healthy, "failing": failing}
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


def _set(c, nhc: str, gpunode: str) -> None:
    c["mode"].write_text(nhc + "\n")
    c["config"].write_text(f"snapshot: {c[gpunode]}\n")


def _run_chain(c) -> subprocess.CompletedProcess:
    """As slurmd runs a HealthCheckProgram: no arguments, an empty environment."""
    return c["slurm"].cmd(str(c["hooks"] / "gpunode-healthcheck-chain"), env={})


def test_install_chains_with_the_existing_program(chained):
    out = chained["install"]
    assert f"chaining with the existing HealthCheckProgram {chained['nhc']}" in out.stderr
    assert f"HealthCheckProgram={chained['hooks']}/gpunode-healthcheck-chain" in out.stdout
    chain = chained["hooks"] / "gpunode-healthcheck-chain"
    assert chain.stat().st_mode & 0o7777 == 0o755 and chain.stat().st_uid == 0
    text = chain.read_text()
    assert text.index(str(chained["nhc"])) < text.index(str(chained["hooks"] / "gpunode-healthcheck"))


def test_each_program_drains_with_its_own_reason_and_never_clears_the_other(chained):
    slurm = chained["slurm"]
    try:
        _set(chained, "fail", "healthy")  # NHC fails, gpunode passes: NHC's drain stays
        assert _run_chain(chained).returncode == 1
        assert "DRAIN" in slurm.state() and slurm.reason() == "NHC: check_fs_mount: /scratch not mounted"

        _set(chained, "pass", "healthy")  # both pass: NHC lifts its own drain
        assert _run_chain(chained).returncode == 0
        assert "DRAIN" not in slurm.state() and slurm.reason() is None

        _set(chained, "pass", "failing")  # gpunode fails: its reason
        assert _run_chain(chained).returncode == 0  # gpunode's health check reports through Slurm, exit 0
        reason = slurm.reason()
        assert "DRAIN" in slurm.state() and reason.startswith("gpunode: gpu."), reason

        _set(chained, "fail", "failing")  # NHC fails too: gpunode's reason is not overwritten by NHC
        _run_chain(chained)
        assert slurm.reason() == reason

        _set(chained, "pass", "failing")  # NHC passes: it must not lift gpunode's drain
        _run_chain(chained)
        assert "DRAIN" in slurm.state() and slurm.reason() == reason

        _set(chained, "pass", "healthy")  # gpunode healthy again: it lifts its own drain
        _run_chain(chained)
        assert "DRAIN" not in slurm.state() and slurm.reason() is None
    finally:
        _set(chained, "pass", "healthy")
        if slurm.reason():
            slurm.resume()


def test_nhc_drain_is_kept_when_gpunode_would_resume(chained):
    slurm = chained["slurm"]
    try:
        _set(chained, "fail", "failing")  # NHC drains first; gpunode finds a foreign reason
        _run_chain(chained)
        assert slurm.reason() == "NHC: check_fs_mount: /scratch not mounted"
        _set(chained, "fail", "healthy")  # gpunode healthy: must not resume NHC's drain
        _run_chain(chained)
        assert "DRAIN" in slurm.state() and slurm.reason().startswith("NHC: ")
    finally:
        _set(chained, "pass", "healthy")
        _run_chain(chained)
        if slurm.reason():
            slurm.resume()


def test_slurmd_runs_the_chain_itself(chained):
    slurm = chained["slurm"]
    text = slurm.conf.read_text()
    periodic = text.replace(f"HealthCheckProgram={chained['nhc']}",
                            f"HealthCheckProgram={chained['hooks']}/gpunode-healthcheck-chain")
    periodic = periodic.replace("HealthCheckInterval=0", f"HealthCheckInterval={HEALTH_INTERVAL}")
    slurm.conf.write_text(periodic)
    assert slurm.cmd("scontrol", "reconfigure").returncode == 0
    try:
        _set(chained, "pass", "failing")
        slurm._wait(lambda: (slurm.reason() or "").startswith("gpunode: "), HEALTH_INTERVAL * 4,
                    "slurmd's chained HealthCheckProgram to drain for gpunode")
        _set(chained, "pass", "healthy")
        slurm._wait(lambda: slurm.reason() is None, HEALTH_INTERVAL * 4, "gpunode to resume its own drain")
        _set(chained, "fail", "healthy")
        slurm._wait(lambda: (slurm.reason() or "").startswith("NHC: "), HEALTH_INTERVAL * 4,
                    "slurmd's chained HealthCheckProgram to drain for NHC")
    finally:
        _set(chained, "pass", "healthy")
        slurm.conf.write_text(text)
        slurm.cmd("scontrol", "reconfigure")


def test_no_chain_replaces_and_chain_names_a_program(tmp_path):
    conf = tmp_path / "slurm.conf"
    conf.write_text("HealthCheckProgram=/usr/sbin/nhc\n")
    base = [sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(tmp_path), "--slurm-conf",
            str(conf), "--dry-run"]
    out = subprocess.run([*base, "--no-chain"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "gpunode-healthcheck-chain" not in out.stdout
    assert f"HealthCheckProgram={tmp_path}/gpunode-healthcheck\n" in out.stdout
    out = subprocess.run([*base, "--chain", "/opt/site/check"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "\n/opt/site/check\nsite_rc=$?" in out.stdout
    bad = subprocess.run([*base, "--chain", "relative/nhc"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 3 and bad.stderr.startswith("gpunode: error:")


def test_gate_no_scontrol_prints_what_it_would_do(tmp_path):
    snap = write_snapshot(tmp_path / "failing", h100_inventory(1, remap_failure=True))
    env = {k: v for k, v in os.environ.items() if k != "SLURM_CONF"}
    env["PATH"] = str(tmp_path)  # no scontrol anywhere: nothing could drain a node
    out = subprocess.run([sys.executable, "-m", "gpunode", "gate", "--health-check", "--no-scontrol", "--snapshot",
                          str(snap)], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    assert "would run: scontrol update nodename=" in out.stderr and "state=drain" in out.stderr
    assert "slurm: would-drain: gpunode: gpu." in out.stdout


def test_nhc_check_function_follows_nhcs_contract(tmp_path):
    """docs/examples/nhc/gpunode.nhc under bash with NHC's die/log stubbed: FAIL dies with the
    failing check, a healthy node does not."""
    require(shutil.which("bash") is not None, "bash")
    nhc = Path(__file__).resolve().parent.parent / "docs" / "examples" / "nhc" / "gpunode.nhc"
    failing = write_snapshot(tmp_path / "failing", h100_inventory(1, remap_failure=True))
    healthy = write_snapshot(tmp_path / "healthy", h100_inventory(1))
    wrapper = tmp_path / "gpunode"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} -m gpunode \"$@\"\n")
    wrapper.chmod(0o755)
    for snap, dies in ((failing, True), (healthy, False)):
        script = (f'die() {{ echo "DIE $*"; }}; log() {{ echo "LOG $*"; }}; source {nhc}; '
                  f"GPUNODE_BIN={wrapper} GPUNODE_NHC_ARGS='--snapshot {snap}' check_gpunode; echo rc=$?")
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120)
        if dies:
            assert "DIE 1 gpunode: gpu.memory.remap GPU0: row remapping failed" in out.stdout, out.stdout + out.stderr
            assert "rc=1" in out.stdout
        else:
            assert "DIE" not in out.stdout and "rc=0" in out.stdout, out.stdout + out.stderr


def test_drains_and_resumes_go_to_the_audit_trail(chained, tmp_path):
    import socket

    slurm, path = chained["slurm"], tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(0.5)

    def lines():
        out = []
        try:
            while True:
                out.append(sock.recv(4096).decode())
        except TimeoutError:
            return out

    try:
        chained["mode"].write_text("pass\n")
        chained["config"].write_text(f"snapshot: {chained['failing']}\naudit_log: {path}\n")
        _run_chain(chained)
        drained = lines()
        assert len(drained) == 1 and drained[0].startswith("<84>gpunode[")  # authpriv.warning
        assert " drain mode=health-check detail='gpunode: gpu." in drained[0]
        chained["config"].write_text(f"snapshot: {chained['healthy']}\naudit_log: {path}\n")
        _run_chain(chained)
        resumed = lines()
        assert len(resumed) == 1 and " resume mode=health-check" in resumed[0]
        _run_chain(chained)
        assert lines() == []  # nothing changed: nothing logged
    finally:
        sock.close()
        _set(chained, "pass", "healthy")
        if slurm.reason():
            slurm.resume()


# --- docs/examples/nhc/gpunode.nhc under an NHC stand-in, on the real Slurm ----------------------

NHC_CHECK = Path(__file__).resolve().parent.parent / "docs" / "examples" / "nhc" / "gpunode.nhc"
# NHC's contract as the check sees it: die() marks the node offline with "NHC: <message>"
# (unless another reason is set) and NHC exits non-zero; log() writes NHC's log; a clean run
# resumes only NHC's own drain.
NHC_RUNNING_GPUNODE = """#!/bin/bash
SLURM_CONF={conf}; export SLURM_CONF
NODE=$(hostname -s)
reason() {{ scontrol show node "$NODE" | sed -n 's/^ *Reason=\\(.*\\) \\[.*$/\\1/p'; }}
log() {{ echo "$*" >> {log}; }}
die() {{
    shift
    case "$(reason)" in ""|NHC:*) scontrol update nodename="$NODE" state=drain reason="NHC: check_gpunode: $*" ;; esac
    exit 1
}}
source {check}
GPUNODE_BIN={gpunode} GPUNODE_NHC_ARGS="--config {config}" check_gpunode
case "$(reason)" in NHC:*) scontrol update nodename="$NODE" state=resume ;; esac
exit 0
"""


def test_nhc_check_drains_on_a_fail_only_never_on_gpunodes_own_error(chained, tmp_path):
    """A bad config push (not YAML), a missing snapshot, gpunode not installed: NHC logs them and
    the node keeps running jobs. A real FAIL drains with the failing check; healthy again, NHC
    lifts its own drain."""
    require(shutil.which("bash") is not None, "bash")
    slurm = chained["slurm"]
    config, log = tmp_path / "gpunode.yaml", tmp_path / "nhc.log"
    wrapper = tmp_path / "gpunode"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -I -m gpunode "$@"\n')
    wrapper.chmod(0o755)

    def nhc(gpunode: Path = wrapper) -> subprocess.CompletedProcess:
        script = tmp_path / "nhc-gpunode"
        script.write_text(NHC_RUNNING_GPUNODE.format(conf=slurm.conf, log=log, check=NHC_CHECK, gpunode=gpunode,
                                                     config=config))
        script.chmod(0o755)
        return slurm.cmd(str(script), env={}, timeout=120)

    try:
        for own_error, text in (("not YAML", "expected_gpus: [8\n"),
                                ("missing snapshot", f"snapshot: {tmp_path / 'gone'}\n"),
                                ("unknown key", "expectd_gpus: 8\n")):
            config.write_text(text)
            r = nhc()
            assert r.returncode == 0, (own_error, r.stdout, r.stderr)
            assert "DRAIN" not in slurm.state() and slurm.reason() is None, own_error
            assert "check_gpunode: gpunode gate exit 3 (not a FAIL: not draining)" in log.read_text(), own_error
        config.write_text(f"snapshot: {chained['healthy']}\n")
        assert nhc(gpunode=tmp_path / "not-installed").returncode == 0 and slurm.reason() is None
        assert "gpunode gate exit 127" in log.read_text()

        config.write_text(f"snapshot: {chained['failing']}\n")
        assert nhc().returncode == 1
        reason = slurm.reason() or ""
        assert "DRAIN" in slurm.state() and reason.startswith("NHC: check_gpunode: gpunode: gpu."), reason

        config.write_text(f"snapshot: {chained['healthy']}\n")
        assert nhc().returncode == 0
        assert "DRAIN" not in slurm.state() and slurm.reason() is None
    finally:
        if slurm.reason():
            slurm.resume()


def test_chain_never_drains_for_gpunodes_own_error(chained):
    """The chained HealthCheckProgram with a broken gpunode config: gpunode's health check
    exits 3 (Slurm only logs a health check's exit code) and drains nothing; NHC's own result
    still counts."""
    slurm = chained["slurm"]
    try:
        chained["mode"].write_text("pass\n")
        chained["config"].write_text("expected_gpus: [8\n")  # a bad config push: not YAML
        r = _run_chain(chained)
        assert r.returncode == 3, r.stdout + r.stderr
        assert "DRAIN" not in slurm.state() and slurm.reason() is None
        chained["mode"].write_text("fail\n")  # NHC still drains for its own finding
        assert _run_chain(chained).returncode == 1
        assert slurm.reason() == "NHC: check_fs_mount: /scratch not mounted"
    finally:
        _set(chained, "pass", "healthy")
        _run_chain(chained)
        if slurm.reason():
            slurm.resume()


def test_a_sites_own_prolog_keeps_running_through_the_chain(chained, tmp_path):
    """The site already has a Prolog: install chains it, the printed line goes into slurm.conf,
    and slurmd runs both for a real job: the site's prolog, then gpunode's gate, which still
    refuses a failing node with its own reason."""
    slurm, hooks = chained["slurm"], chained["hooks"]
    ran = tmp_path / "site-prolog.ran"
    site = tmp_path / "site-prolog"
    site.write_text(f"#!/bin/sh\necho \"job $SLURM_JOB_ID\" >> {ran}\nexit 0\n")
    site.chmod(0o755)
    tmp_path.chmod(0o755)
    text = slurm.conf.read_text()
    try:
        slurm.conf.write_text(text.replace(f"Prolog={hooks}/gpunode-prolog\n", f"Prolog={site}  # the site's\n"))
        install = subprocess.run([sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(hooks),
                                  "--config", str(chained["config"]), "--timeout", "8", "--slurm-conf",
                                  str(slurm.conf)], capture_output=True, text=True, timeout=60)
        assert install.returncode == 0, install.stderr
        line = next(x for x in install.stdout.splitlines() if x.startswith("Prolog="))
        assert line == f"Prolog={hooks}/gpunode-prolog-chain  # runs {site}, then gpunode"
        assert "# PrologFlags=Alloc already runs the prolog at allocation: unchanged" in install.stdout
        slurm.conf.write_text(text.replace(f"Prolog={hooks}/gpunode-prolog\n", line + "\n"))
        assert slurm.cmd("scontrol", "reconfigure").returncode == 0

        _set(chained, "pass", "healthy")
        r = slurm.cmd("srun", "-N1", "--immediate=20", "hostname", timeout=60)
        assert r.returncode == 0, f"{r.stderr}\n{slurm.logs()}"
        assert ran.read_text().startswith("job ")

        _set(chained, "pass", "failing")
        r = slurm.cmd("srun", "-N1", "--immediate=20", "hostname", timeout=60)
        assert r.returncode != 0 and "Prolog" in r.stderr, r.stderr
        assert len(ran.read_text().splitlines()) == 2  # the site's prolog ran for this job too
        assert (slurm.reason() or "").startswith("gpunode: "), slurm.reason()
    finally:
        slurm.conf.write_text(text)
        slurm.cmd("scontrol", "reconfigure")
        _set(chained, "pass", "healthy")
        if slurm.reason():
            slurm.resume()


@pytest.mark.parametrize(("rc", "output"), [
    (2, "/opt/gpunode/bin/python: can't open file '/opt/gpunode/gpunode': [Errno 2] No such file or directory"),
    (3, "gpunode: error: /etc/gpunode/config.yaml: not valid YAML"),
    (1, "Traceback (most recent call last):"),
])
def test_nhc_check_drains_only_on_the_gates_fail_verdict(tmp_path, rc, output):
    """Exit 2 alone is not a FAIL: a Python that cannot start exits 2 too. Only exit 2 with
    the gate's verdict line dies; everything else is logged."""
    require(shutil.which("bash") is not None, "bash")
    fake = tmp_path / "gpunode"
    fake.write_text(f"#!/bin/sh\necho \"{output}\" >&2\nexit {rc}\n")
    fake.chmod(0o755)
    script = (f'die() {{ echo "DIE $*"; }}; log() {{ echo "LOG $*"; }}; source {NHC_CHECK}; '
              f"GPUNODE_BIN={fake} check_gpunode; echo rc=$?")
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert "DIE" not in out.stdout and "rc=0" in out.stdout, out.stdout + out.stderr
    assert f"LOG check_gpunode: gpunode gate exit {rc} (not a FAIL: not draining)" in out.stdout
