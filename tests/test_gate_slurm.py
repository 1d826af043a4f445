"""The gate on a REAL Slurm: munged, slurmctld and slurmd (Debian's slurm-wlm) started here for
one node on localhost, with the hooks that `gpunode slurm install` writes, pointed at recorded
snapshots through the config file the hooks pass on (GPUNODE_CONFIG).

1. healthy snapshot -> `srun hostname` runs (and, where the site config allows opt-outs, a job
   with `--comment=gpunode=off` runs on a failing node: the prolog asks scontrol for the comment);
2. failing snapshot (GPU0 row remap failed, one GPU of the two in Slurm's gres missing) ->
   the job does not run, the node is DRAIN with a reason starting `gpunode:`;
3. HealthCheckProgram mode drains with the reason, leaves an operator's reason untouched,
   and resumes only its own drain — run by slurmd itself and by hand like slurmd does;
4. the epilog drains a node whose GPU processes and memory outlive the job.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gate_fixtures import h100_inventory, write_snapshot

from testkit import require

pytestmark = [pytest.mark.slow, pytest.mark.root]

BINARIES = ("munged", "slurmctld", "slurmd", "srun", "scontrol", "sinfo")
HEALTH_INTERVAL = 5


def _free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class LocalSlurm:
    """One-node Slurm under a temp dir; every daemon in its own process group."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: list[subprocess.Popen] = []
        self.node = socket.gethostname().split(".")[0]
        self.conf = root / "etc" / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def start_munge(self) -> None:
        d = self.root / "munge"
        d.mkdir(mode=0o755)
        key = d / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.socket = d / "munge.socket"
        self._spawn("munged", ["munged", "-F", "--force", f"--socket={self.socket}", f"--key-file={key}",
                               f"--log-file={d / 'munged.log'}", f"--pid-file={d / 'munged.pid'}",
                               f"--seed-file={d / 'munged.seed'}"])
        self._wait(lambda: self.socket.exists(), 10, "munged socket")

    def write_conf(self, hooks: Path, interval: int = 0) -> None:
        """interval 0: slurmd runs no periodic health check (it would race the other tests)."""
        for sub in ("etc", "state", "spool", "log", "dev"):
            (self.root / sub).mkdir(exist_ok=True)
        # Slurm's gres/gpu wants device files: two links to /dev/null stand in for /dev/nvidia[01].
        for i in range(2):
            link = self.root / "dev" / f"nvidia{i}"
            if not link.is_symlink():
                link.symlink_to("/dev/null")
        if not hasattr(self, "ports"):
            self.ports = _free_ports(2)
        ctld_port, d_port = self.ports
        r = self.root
        self.conf.write_text(f"""\
ClusterName=gpunodetest
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/linear
MpiDefault=none
ReturnToService=2
MailProg=/bin/true
GresTypes=gpu
Prolog={hooks}/gpunode-prolog
PrologFlags=Alloc
Epilog={hooks}/gpunode-epilog
HealthCheckProgram={hooks}/gpunode-healthcheck
HealthCheckInterval={interval}
HealthCheckNodeState=ANY
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} Gres=gpu:h100:2 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        (r / "etc" / "gres.conf").write_text(f"NodeName={self.node} Name=gpu Type=h100 File={r}/dev/nvidia[0-1]\n")

    def start_slurm(self) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])
        self._wait(lambda: self.sinfo_state() in ("idle", "drain", "drained"), 30, "the node to register")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.out", "w")  # noqa: SIM115 - closed with the process
        self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))
        log.close()

    def _wait(self, cond, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if cond():
                return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def cmd(self, *argv: str, timeout: float = 30, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, env=env or self.env)

    def sinfo_state(self) -> str:
        return self.cmd("sinfo", "-h", "-n", self.node, "-o", "%T", timeout=10).stdout.strip().rstrip("*")

    def node_line(self, key: str) -> str | None:
        for line in self.cmd("scontrol", "show", "node", self.node).stdout.splitlines():
            if line.strip().startswith(key + "="):
                return line.strip()[len(key) + 1:]
        return None

    def reason(self) -> str | None:
        text = self.node_line("Reason")
        return text.rsplit(" [", 1)[0] if text else None

    def state(self) -> str:
        line = self.cmd("scontrol", "show", "node", self.node).stdout
        return next(t.split("=", 1)[1] for t in line.split() if t.startswith("State="))

    def drain(self, reason: str) -> None:
        r = self.cmd("scontrol", "update", f"nodename={self.node}", "state=drain", f"reason={reason}")
        assert r.returncode == 0, r.stderr

    def resume(self) -> None:
        self.cmd("scontrol", "update", f"nodename={self.node}", "state=resume")
        self._wait(lambda: self.reason() is None and "DRAIN" not in self.state(), 10, "resume")

    def logs(self) -> str:
        out = []
        for f in sorted(self.root.glob("*.out")) + sorted((self.root / "log").glob("*.log")):
            out.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(out)

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in reversed(self.procs):
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)


def require_slurm() -> None:
    require(os.geteuid() == 0, "needs root to run munged/slurmctld/slurmd")
    missing = [b for b in BINARIES if shutil.which(b) is None]
    require(not missing, f"needs Debian packages slurm-wlm and munge (missing {', '.join(missing)})")


@contextlib.contextmanager
def idle_cluster(tmp_path_factory, name: str, kind: type[LocalSlurm] = LocalSlurm):
    """munged, slurmctld and slurmd on localhost with no job hooks, the node resumed if drained;
    stopped and removed afterwards (the fleet and watcher tests run no job)."""
    require_slurm()
    root = tmp_path_factory.mktemp(name)
    root.chmod(0o755)  # munged refuses sockets in directories others cannot traverse
    slurm = kind(root)
    try:
        slurm.start_munge()
        slurm.write_conf(root / "no-hooks")
        slurm.start_slurm()
        if "DRAIN" in slurm.state():
            slurm.resume()
        yield slurm
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_slurm()
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o755)  # munged refuses sockets in directories others cannot traverse
    snaps = root / "snapshots"
    healthy = write_snapshot(snaps / "healthy", h100_inventory(2))
    # GPU0's row remapping failed and GPU1 fell off the bus (Slurm's gres says 2).
    failing = write_snapshot(snaps / "failing", h100_inventory(1, remap_failure=True))
    # A process of the job still holds GPU0 and its memory after the job ended.
    leftovers = write_snapshot(snaps / "leftovers", h100_inventory(2, memory_used_bytes=3 << 30, processes=[
        {"pid": 4242, "kind": "compute", "used_memory_bytes": 3 << 30, "name": "python"}]))
    config = root / "gpunode.yaml"
    hooks = root / "hooks"
    hooks.mkdir()
    slurm = LocalSlurm(root)
    try:
        _use(config, healthy)
        slurm.start_munge()
        slurm.write_conf(hooks)
        install = subprocess.run([sys.executable, "-m", "gpunode", "slurm", "install", "--prefix", str(hooks),
                                  "--config", str(config), "--timeout", "8", "--slurm-conf", str(slurm.conf)],
                                 capture_output=True, text=True, timeout=60)
        assert install.returncode == 0, install.stderr
        slurm.start_slurm()
        if slurm.sinfo_state() != "idle":
            slurm.resume()
        yield {"slurm": slurm, "config": config, "healthy": healthy, "failing": failing, "leftovers": leftovers,
               "hooks": hooks}
    finally:
        slurm.stop()
        shutil.rmtree(root, ignore_errors=True)


def _use(config: Path, snapshot: Path) -> None:
    """Point every hook at this snapshot (the hooks read the config on each run)."""
    config.write_text(f"snapshot: {snapshot}\n")


def _srun(slurm: LocalSlurm, *extra: str) -> subprocess.CompletedProcess:
    return slurm.cmd("srun", "-N1", "--immediate=20", *extra, "hostname", timeout=60)


def _healthcheck(c) -> subprocess.CompletedProcess:
    """As slurmd runs it: the hook, no arguments, an empty environment."""
    return c["slurm"].cmd(str(c["hooks"] / "gpunode-healthcheck"), env={})


def test_installed_hooks(cluster):
    for name in ("gpunode-prolog", "gpunode-epilog", "gpunode-healthcheck"):
        path = cluster["hooks"] / name
        st = path.stat()
        assert st.st_mode & 0o7777 == 0o755 and st.st_uid == 0
        assert f"|| GPUNODE_CONFIG={cluster['config']}" in path.read_text()


def test_1_healthy_node_runs_the_job(cluster):
    slurm = cluster["slurm"]
    _use(cluster["config"], cluster["healthy"])
    r = _srun(slurm)
    assert r.returncode == 0, f"{r.stderr}\n{slurm.logs()}"
    assert r.stdout.strip() == socket.gethostname()
    # The epilog (leftovers: none in this snapshot) lets the node go back to idle.
    slurm._wait(lambda: slurm.sinfo_state() == "idle", 20, "the node to be idle after the epilog")


def test_1b_a_job_that_opts_out_runs_on_a_failing_node_where_the_site_allows_it(cluster, tmp_path):
    """The site allows opt-outs (allow_job_opt_out: true, off by default): the job runs on a
    failing node, and the audit trail names the job and its user."""
    slurm = cluster["slurm"]
    log_path = tmp_path / "log.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(log_path))
    sock.settimeout(10)
    cluster["config"].write_text(f"snapshot: {cluster['failing']}\nallow_job_opt_out: true\naudit_log: {log_path}\n")
    try:
        r = _srun(slurm, "--comment=debug run gpunode=off")
        line = sock.recv(4096).decode()
    finally:
        sock.close()
        _use(cluster["config"], cluster["healthy"])
    assert r.returncode == 0, f"{r.stderr}\n{slurm.logs()}"
    assert r.stdout.strip() == socket.gethostname()
    assert slurm.reason() is None
    assert " opt-out mode=prolog job=" in line and " user=root " in line, line
    assert "from=SLURM_JOB_COMMENT" in line or "from='job comment'" in line, line  # 22.05 passes the comment


def test_2_failing_node_is_drained_and_the_job_does_not_run(cluster):
    slurm = cluster["slurm"]
    _use(cluster["config"], cluster["failing"])
    try:
        r = _srun(slurm)
        assert r.returncode != 0 and socket.gethostname() not in r.stdout
        assert "Prolog" in r.stderr, r.stderr  # refused by the prolog (no periodic health check yet)
        assert "DRAIN" in slurm.state()
        reason = slurm.reason()
        assert reason and reason.startswith("gpunode: "), f"reason {reason!r}\n{slurm.logs()}"
        assert reason.split()[1].rstrip(":") in ("gpu.count", "gpu.memory.remap"), reason
    finally:
        _use(cluster["config"], cluster["healthy"])


def test_3_health_check_resumes_only_its_own_drain(cluster):
    slurm = cluster["slurm"]
    # Left drained by test 2 (or drain it the same way): healthy again -> our drain is lifted.
    _use(cluster["config"], cluster["failing"])
    r = _healthcheck(cluster)
    assert r.returncode == 0, r.stderr
    assert "DRAIN" in slurm.state() and slurm.reason().startswith("gpunode: ")
    _use(cluster["config"], cluster["healthy"])
    r = _healthcheck(cluster)
    assert r.returncode == 0, r.stderr
    assert "DRAIN" not in slurm.state() and slurm.reason() is None, r.stdout

    # An operator's drain: a failing node keeps the operator's words, a healthy one stays drained.
    slurm.drain("ops: reseat GPU cable")
    try:
        for snap in ("failing", "healthy"):
            _use(cluster["config"], cluster[snap])
            r = _healthcheck(cluster)
            assert r.returncode == 0, r.stderr
            assert slurm.reason() == "ops: reseat GPU cable" and "DRAIN" in slurm.state()
    finally:
        slurm.resume()
        _use(cluster["config"], cluster["healthy"])


def test_3b_slurmd_runs_the_health_check_itself(cluster):
    slurm = cluster["slurm"]
    slurm.write_conf(cluster["hooks"], interval=HEALTH_INTERVAL)
    r = slurm.cmd("scontrol", "reconfigure")
    assert r.returncode == 0, r.stderr
    _use(cluster["config"], cluster["failing"])
    try:
        slurm._wait(lambda: (slurm.reason() or "").startswith("gpunode: "), HEALTH_INTERVAL * 4,
                    "slurmd's HealthCheckProgram to drain the node")
        assert "DRAIN" in slurm.state()
        _use(cluster["config"], cluster["healthy"])
        slurm._wait(lambda: slurm.reason() is None, HEALTH_INTERVAL * 4,
                    "slurmd's HealthCheckProgram to resume its own drain")
    finally:
        _use(cluster["config"], cluster["healthy"])
        slurm.write_conf(cluster["hooks"], interval=0)
        slurm.cmd("scontrol", "reconfigure")


def test_4_epilog_drains_when_gpu_processes_outlive_the_job(cluster):
    slurm = cluster["slurm"]
    _use(cluster["config"], cluster["leftovers"])  # the prolog only WARNs about it: the job runs
    try:
        r = _srun(slurm)
        assert r.returncode == 0, f"{r.stderr}\n{slurm.logs()}"
        # The epilog polls for the budget of its hook (--timeout 8), then drains.
        slurm._wait(lambda: (slurm.reason() or "").startswith("gpunode: epilog.leftovers GPU0: "), 30,
                    "the epilog to drain the node")
        assert "pid 4242 (python" in slurm.reason() and "DRAIN" in slurm.state()
    finally:
        _use(cluster["config"], cluster["healthy"])
        slurm.resume()
