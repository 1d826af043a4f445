"""`gpunode fleet audit` over real SSH: each node is a network namespace on this machine with a
veth link to the root namespace (10.231.x.0/30 test addresses, only on these veths, so nothing
leaves the machine) and its own sshd (Debian's openssh-server, own config, host key and an
authorized test key). One node's link is taken down: it must be reported UNREACHABLE while the
run completes for the others. Namespaces and sshd processes are removed even when a test fails."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import fleetkit
import pytest

import testkit
from gpunode.host.runner import ReplayRunner, Runner

SSHD = "/usr/sbin/sshd"


@dataclass
class Node:
    name: str  # inventory name
    netns: str
    veth_host: str  # root-namespace end
    address: str  # the namespace's address (sshd listens here)
    pidfile: Path


def _run(argv: list[str], timeout: float = 20) -> str:
    result = Runner().run(argv, timeout=timeout)
    assert result.ok, f"{' '.join(argv)}: rc {result.rc} {result.error or ''} {result.stderr.strip()}"
    return result.stdout


def _require_tools() -> None:
    testkit.require(os.geteuid() == 0, "needs root (network namespaces, sshd)")
    for tool, package in ((SSHD, "openssh-server"), ("ssh", "openssh-client"), ("ssh-keygen", "openssh-client"),
                          ("ip", "iproute2")):
        testkit.require(shutil.which(tool) is not None, f"{tool} not installed (Debian package {package})")
    probe = f"gpnprobe{os.getpid()}"
    made = Runner().run(["ip", "netns", "add", probe], timeout=10)
    if made.ok:
        Runner().run(["ip", "netns", "del", probe], timeout=10)
    testkit.require(made.ok, f"cannot create network namespaces here: {made.stderr.strip() or made.error}")


def _keys(tmp: Path) -> tuple[Path, Path]:
    host_key, client_key = tmp / "ssh_host_ed25519_key", tmp / "client_ed25519"
    for key in (host_key, client_key):
        _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gpunode-fleet-test", "-f", str(key)])
    authorized = tmp / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    authorized.chmod(0o600)
    return host_key, client_key


def _free_subnet(index: int) -> int:
    """N of a 10.231.N.0/30 that no interface uses yet: per run, per node, and never one a killed run
    left behind (a second veth with the same /30 makes the node unreachable)."""
    used = Runner().run(["ip", "-o", "-4", "addr"], timeout=10).stdout
    for step in range(152):
        subnet = 100 + ((os.getpid() % 37) * 4 + index + step * 3) % 152  # 10.231.100-251.0/30
        if f" 10.231.{subnet}." not in used:
            return subnet
    raise AssertionError("no free 10.231.x.0/30 test subnet")


def _start_node(tmp: Path, index: int, tag: str, host_key: Path) -> Node:
    subnet = _free_subnet(index)
    node = Node(name=f"ns{index}", netns=f"gpn{tag}n{index}", veth_host=f"gpv{tag}h{index}",
                address=f"10.231.{subnet}.2", pidfile=tmp / f"sshd-{index}.pid")
    try:
        _bring_up(tmp, node, f"gpv{tag}n{index}", index, subnet, host_key)
    except BaseException:
        _stop_node(node)  # a half-made node must not leave its namespace and veth on the machine
        raise
    return node


def _bring_up(tmp: Path, node: Node, peer: str, index: int, subnet: int, host_key: Path) -> None:
    _run(["ip", "netns", "add", node.netns])
    _run(["ip", "link", "add", node.veth_host, "type", "veth", "peer", "name", peer])
    _run(["ip", "link", "set", peer, "netns", node.netns])
    _run(["ip", "addr", "add", f"10.231.{subnet}.1/30", "dev", node.veth_host])
    _run(["ip", "link", "set", node.veth_host, "up"])
    inside = ["ip", "netns", "exec", node.netns]
    _run([*inside, "ip", "addr", "add", f"{node.address}/30", "dev", peer])
    _run([*inside, "ip", "link", "set", peer, "up"])
    _run([*inside, "ip", "link", "set", "lo", "up"])
    config = tmp / f"sshd-{index}.conf"
    config.write_text("\n".join([
        f"ListenAddress {node.address}",
        "Port 22",
        f"HostKey {host_key}",
        f"PidFile {node.pidfile}",
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}",
        "PermitRootLogin prohibit-password",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "UseDNS no",
        "Subsystem sftp internal-sftp",
        "",
    ]))
    # sshd daemonizes once it listens and writes its pid file; the test stops it by that pid.
    _run([*inside, SSHD, "-f", str(config), "-E", str(tmp / f"sshd-{index}.log")])
    for _ in range(50):
        if node.pidfile.exists() and node.pidfile.read_text().strip():
            break
        time.sleep(0.1)
    assert node.pidfile.exists(), (tmp / f"sshd-{index}.log").read_text()


def _signal(pids: list[str], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(int(pid), sig)
        except (OSError, ValueError):
            pass


def _stop_node(node: Node) -> None:
    """Stop this node's sshd and the sessions it forked (Ansible's persistent connections): every
    process in the node's namespace, each by its pid. Then remove the link and the namespace."""
    try:
        _signal([node.pidfile.read_text().strip()], signal.SIGTERM)
    except OSError:
        pass
    for sig in (signal.SIGTERM, signal.SIGTERM, signal.SIGKILL):  # sessions may still be closing
        pids = Runner().run(["ip", "netns", "pids", node.netns], timeout=10).stdout.split()
        if not pids:
            break
        _signal(pids, sig)
        time.sleep(0.3)
    Runner().run(["ip", "link", "del", node.veth_host], timeout=10)
    Runner().run(["ip", "netns", "del", node.netns], timeout=10)


@pytest.fixture
def ssh_nodes(tmp_path):
    fleetkit.require_ansible()
    _require_tools()
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    keydir = tmp_path / "keys"
    keydir.mkdir(mode=0o700)
    host_key, client_key = _keys(keydir)
    tag = f"{os.getpid() % 10000}"
    nodes: list[Node] = []
    try:
        for i in range(3):
            nodes.append(_start_node(keydir, i, tag, host_key))
        yield nodes, client_key
    finally:
        for node in nodes:
            _stop_node(node)


def test_fleet_audit_over_ssh_with_one_node_unreachable(tmp_path, ssh_nodes):
    nodes, client_key = ssh_nodes
    snaps = tmp_path / "snaps"
    healthy = fleetkit.make_snapshot(snaps / "healthy", "gpu-h100-01", files=fleetkit.TUNED_FILES)
    broken = fleetkit.make_snapshot(snaps / "broken", "gpu-h100-02", files=fleetkit.TUNED_FILES,
                                    gpu={"ecc_mode_current": False, "ecc_mode_pending": False})
    snapshot = {"ns0": healthy, "ns1": broken, "ns2": healthy}
    inv = fleetkit.write_inventory(tmp_path / "inv.ini", {"h100": [
        f"{n.name} ansible_host={n.address} gpunode_snapshot={snapshot[n.name]}" for n in nodes]}, {
        "ansible_connection": "ssh",
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(client_key),
        "ansible_ssh_common_args": "'-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ConnectTimeout=5'",
        # the namespaces share this filesystem: the test venv's python has gpunode
        "ansible_python_interpreter": sys.executable,
        "gpunode_bin": fleetkit.gpunode_bin(),
        "gpunode_audit_args": '["--tag", "profile"]',
    })
    # The real thing first: sshd in ns2 answers before its link goes down.
    probe = Runner().run(["ssh", "-i", str(client_key), "-o", "StrictHostKeyChecking=no", "-o",
                          "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                          f"root@{nodes[2].address}", "ip", "-br", "addr"], timeout=30)
    assert probe.ok and nodes[2].address in probe.stdout, probe.stderr
    _run(["ip", "link", "set", nodes[2].veth_host, "down"])

    result, doc = fleetkit.fleet_json(["audit", "-i", str(inv), "--state-dir", str(tmp_path / "state")], timeout=180)
    assert result.rc == 2, result.stderr[-3000:]
    hosts = fleetkit.by_host(doc)
    assert {h: r["status"] for h, r in hosts.items()} == {"ns0": "OK", "ns1": "FAIL", "ns2": "UNREACHABLE"}
    assert nodes[2].address in hosts["ns2"]["message"] and hosts["ns2"]["run"] == "unreachable"
    assert fleetkit.check_row(doc, "gpu.ecc_mode")["fail_hosts"] == ["ns1"]
    assert hosts["ns0"]["reported_host"] == "gpu-h100-01" and hosts["ns1"]["reported_host"] == "gpu-h100-02"
    assert sorted(p.name for p in Path(doc["report_dir"]).iterdir()) == ["ns0.audit.json", "ns1.audit.json"]
    assert doc["ansible"]["stats"]["dark"] == {"ns2": 1}


def test_a_node_that_fails_half_way_is_removed(tmp_path, monkeypatch):
    """Setup failing after `ip netns add` (seen in a chroot: `ip netns exec` could not remount /)
    must not leave the namespace and veth behind: a leftover /30 made the next run's node unreachable."""
    fake = ReplayRunner()
    monkeypatch.setattr(sys.modules[__name__], "Runner", lambda: fake)
    subnet = _free_subnet(0)
    for argv in (["ip", "netns", "add", "gpn1n0"],
                 ["ip", "link", "add", "gpv1h0", "type", "veth", "peer", "name", "gpv1n0"],
                 ["ip", "link", "set", "gpv1n0", "netns", "gpn1n0"],
                 ["ip", "addr", "add", f"10.231.{subnet}.1/30", "dev", "gpv1h0"],
                 ["ip", "link", "set", "gpv1h0", "up"]):
        fake.add(argv)  # everything up to `ip netns exec` works
    with pytest.raises(AssertionError, match="ip netns exec gpn1n0 ip addr add"):
        _start_node(tmp_path, 0, "1", tmp_path / "key")
    assert ["ip", "link", "del", "gpv1h0"] in fake.calls and ["ip", "netns", "del", "gpn1n0"] in fake.calls


def test_free_subnet_skips_one_a_killed_run_left_behind(monkeypatch):
    fake = ReplayRunner()
    monkeypatch.setattr(sys.modules[__name__], "Runner", lambda: fake)
    first = _free_subnet(0)
    fake.add(["ip", "-o", "-4", "addr"], stdout=f"95: gpv8383h0    inet 10.231.{first}.1/30 scope global gpv8383h0\n")
    assert _free_subnet(0) != first and 100 <= _free_subnet(0) <= 251
