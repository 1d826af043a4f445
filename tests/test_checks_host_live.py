"""The host, NIC and storage checks on this machine's live root: none may break (ERROR), and a
snapshot of this machine replays to the same results."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

MINE = "host.*,cpu.*,memory.*,kernel.*,numa.*,storage.*,net.*"
# Live figures that move between the recording and the audit beside it: free space, and the
# kernel's TCP counters (every ssh or apt segment in between counts). Their status still must match.
MOVING = {"storage.scratch_space", "net.tcp_retransmits"}


CONFIG: dict[str, str] = {}


@pytest.fixture(autouse=True)
def empty_site_config(tmp_path_factory):
    """An empty config file, so /etc/gpunode/config.yaml of the machine running the tests is not
    read (the config loader takes regular files only: /dev/null is refused)."""
    if "path" not in CONFIG:
        path = tmp_path_factory.mktemp("config") / "config.yaml"
        path.write_text("")
        CONFIG["path"] = str(path)


def gpunode(*args):
    """Each run with a state dir of its own: error counters read as on a node's first audit, the
    way a snapshot replay reads them, whatever audits ran on this machine before."""
    state = tempfile.mkdtemp(prefix="state-", dir=os.path.dirname(CONFIG["path"]))
    return subprocess.run([sys.executable, "-m", "gpunode", *args], capture_output=True, text=True,
                          env={**os.environ, "GPUNODE_CONFIG": CONFIG["path"], "GPUNODE_STATE_DIR": state},
                          timeout=120)


def results(proc):
    doc = json.loads(proc.stdout)
    return {(c["id"], c["subject"]): c for c in doc["checks"]}


def test_live_host_checks_do_not_error():
    proc = gpunode("audit", "--json", "--only", MINE)
    assert proc.returncode in (0, 1, 2), proc.stderr
    found = results(proc)
    ids = {i for i, _ in found}
    assert {"host.os", "memory.shm", "kernel.tainted", "numa.nodes", "storage.scratch_space", "net.ib.ports"} <= ids
    broken = {k: c["message"] for k, c in found.items() if c["status"] == "ERROR"}
    assert not broken
    assert found[("host.os", None)]["status"] == "PASS"  # every Linux has a kernel release


def test_snapshot_of_this_machine_replays_the_same_results(tmp_path):
    snap = tmp_path / "snap"
    rec = gpunode("snapshot", "-o", str(snap), "--profile", "training")
    assert rec.returncode == 0, rec.stderr
    live = results(gpunode("audit", "--json", "--only", MINE))
    replayed = results(gpunode("audit", "--json", "--only", MINE, "--snapshot", str(snap)))
    assert set(live) == set(replayed)
    for key, c in live.items():
        assert replayed[key]["status"] == c["status"], (key, c["message"], replayed[key]["message"])
        if key[0] not in MOVING:
            assert replayed[key]["message"] == c["message"], key


def recorded_hosts():
    from testkit import HOSTS

    names = sorted(p.name for p in HOSTS.iterdir() if (p / "meta.json").exists()) if HOSTS.exists() else []
    return names or [pytest.param(None, marks=pytest.mark.skip(reason="no host snapshot recorded yet"))]


@pytest.mark.parametrize("name", recorded_hosts())
def test_recorded_real_hosts_replay_without_errors(name):
    from gpunode.audit.engine import select
    from gpunode.checks import static_checks
    from testkit import fixture_host, run

    host = fixture_host(name)
    checks = select(static_checks(), only=MINE.split(","))
    found = [r for c in checks for r in run(c, host)]
    assert not [(r.id, r.subject, r.message) for r in found if r.status.value == "ERROR"]
    by_id = {r.id: r for r in found}
    assert by_id["host.os"].status.value == "PASS" and by_id["kernel.tainted"].status.value != "SKIP"
    if host.gpu.inventory(timeout=5).gpus:  # a GPU host: every GPU's PCI function is in the snapshot
        assert all(r.status.value in ("PASS", "WARN") for r in found if r.id == "numa.gpu")
