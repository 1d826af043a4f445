"""checks/roce.py on sysfs trees laid out as the mlx5 driver writes them, mlnx_qos's documented
output and ethtool/proc outputs recorded on this machine (tests/fixtures/roce/README.md)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpunode.audit.context import AuditContext
from gpunode.audit.counters import CounterStore
from gpunode.audit.engine import run_checks
from gpunode.checks import roce
from gpunode.host.facts.roce import parse_ethtool_stats, parse_mlnx_qos, parse_snmp
from gpunode.host.runner import ReplayRunner
from gpunode.tune.profiles import load_profile
from testkit import FIXTURES, run, statuses, tree_host

FIX = FIXTURES / "roce"
QOS = (FIX / "mlnx_qos.doc.txt").read_text()
QOS_ON3 = QOS.replace("enabled     1   0   1   0   0   0   1   1", "enabled     0   0   0   1   0   0   0   0")
MLX5_STATS = (FIX / "ethtool-S.mlx5.doc.txt").read_text()
V2_GID = "0000:0000:0000:0000:0000:ffff:0a00:0001"
ZERO = "0000:0000:0000:0000:0000:0000:0000:0000"


def roce_port(dev="mlx5_0", netdev="ens1f0np0", types=("IB/RoCE v1", "RoCE v2"), np=1, rp=1, counters=None):
    base = f"/sys/class/infiniband/{dev}/ports/1"
    files = {f"{base}/state": "4: ACTIVE\n", f"{base}/phys_state": "5: LinkUp\n", f"{base}/link_layer": "Ethernet\n",
             f"{base}/rate": "400 Gb/sec (4X NDR)\n", f"{base}/gid_attrs/ndevs/0": f"{netdev}\n",
             f"{base}/gids/0": "fe80:0000:0000:0000:0000:0000:0000:0001\n", f"{base}/gids/5": f"{ZERO}\n",
             f"{base}/gid_attrs/types/5": "RoCE v2\n"}  # an unused (zero) GID entry counts for nothing
    for i, kind in enumerate(types):
        files[f"{base}/gids/{i + 2}"] = f"{V2_GID}\n"
        files[f"{base}/gid_attrs/types/{i + 2}"] = f"{kind}\n"
    if np is not None:
        files[f"/sys/class/net/{netdev}/ecn/roce_np/enable/3"] = f"{np}\n"
    if rp is not None:
        files[f"/sys/class/net/{netdev}/ecn/roce_rp/enable/3"] = f"{rp}\n"
    for name, value in (counters or {"out_of_sequence": 0, "packet_seq_err": 0, "np_cnp_sent": 0}).items():
        files[f"{base}/hw_counters/{name}"] = f"{value}\n"
    return files


def ib_port(dev="mlx5_1"):
    base = f"/sys/class/infiniband/{dev}/ports/1"
    return {f"{base}/state": "4: ACTIVE\n", f"{base}/link_layer": "InfiniBand\n"}


def test_parsers_on_recorded_and_documented_outputs():
    qos = parse_mlnx_qos(QOS)
    assert qos.trust == "dscp" and qos.pfc == (0, 2, 6, 7)
    with pytest.raises(ValueError):
        parse_mlnx_qos(QOS[: QOS.index("PFC configuration")])  # cut before the table
    virtio = parse_ethtool_stats((FIX / "ethtool-S.virtio.txt").read_text())
    assert "rx_drops" in virtio and "NIC statistics" not in virtio and all(isinstance(v, int) for v in virtio.values())
    assert parse_ethtool_stats(MLX5_STATS)["rx_discards_phy"] == 0
    tcp = parse_snmp((FIX / "proc-net-snmp.txt").read_text())
    assert {"RetransSegs", "OutSegs", "InSegs"} <= tcp.keys() and tcp["RtoMin"] == 200
    assert parse_snmp("Tcp: RetransSegs\n") == {}


def test_no_roce_port_skips(tmp_path):
    host = tree_host(tmp_path, ib_port())
    for c in (roce.gid, roce.ecn, roce.pfc, roce.loss):
        assert statuses(run(c, host)) == ["SKIP"]


def test_gid_v2_passes_v1_only_and_none_fail(tmp_path):
    files = {**roce_port(), **roce_port("mlx5_2", "ens2", types=("IB/RoCE v1",)), **roce_port("mlx5_3", "ens3", types=())}
    by = {r.subject: r for r in run(roce.gid, tree_host(tmp_path, files))}
    assert by["mlx5_0/1"].status.value == "PASS"
    assert by["mlx5_2/1"].status.value == "WARN" and "RoCE v1 is not routable" in by["mlx5_2/1"].message
    assert by["mlx5_3/1"].status.value == "WARN" and "no GID configured on ens3" in by["mlx5_3/1"].message


def test_ecn_on_the_rdma_priority(tmp_path):
    files = {**roce_port(), **roce_port("mlx5_2", "ens2", rp=0), **roce_port("mlx5_3", "ens3", np=None, rp=None)}
    by = {r.subject: r for r in run(roce.ecn, tree_host(tmp_path, files))}
    assert by["mlx5_0/1"].status.value == "PASS"
    assert by["mlx5_2/1"].status.value == "WARN" and "ECN roce_rp disabled on priority 3" in by["mlx5_2/1"].message
    assert by["mlx5_3/1"].status.value == "SKIP" and "knob absent" in by["mlx5_3/1"].message


def test_pfc_from_mlnx_qos_and_a_missing_tool_skips(tmp_path):
    runner = ReplayRunner()
    runner.add(["mlnx_qos", "-i", "ens1f0np0"], 0, QOS)
    [r] = run(roce.pfc, tree_host(tmp_path / "a", roce_port(), runner=runner))
    assert r.status.value == "WARN" and "PFC off on priority 3 (on: 0, 2, 6, 7)" in r.message
    runner = ReplayRunner()
    runner.add(["mlnx_qos", "-i", "ens1f0np0"], 0, QOS_ON3.replace("trust state: dscp", "trust state: pcp"))
    [r] = run(roce.pfc, tree_host(tmp_path / "b", roce_port(), runner=runner))
    assert r.status.value == "WARN" and r.message == "ens1f0np0: trust state pcp, not dscp"
    runner = ReplayRunner()
    runner.add(["mlnx_qos", "-i", "ens1f0np0"], 0, QOS_ON3)
    assert statuses(run(roce.pfc, tree_host(tmp_path / "c", roce_port(), runner=runner))) == ["PASS"]
    # ReplayRunner answers an unrecorded command as a missing binary: SKIP with why, never ERROR
    [r] = run(roce.pfc, tree_host(tmp_path / "d", roce_port()))
    assert r.status.value == "SKIP" and "mlnx_qos is not installed" in r.message


def _audit_twice(tmp_path, first, second, stats=(MLX5_STATS, MLX5_STATS)):
    results = []
    for n, (files, text) in enumerate(zip((first, second), stats, strict=True)):
        runner = ReplayRunner()
        runner.add(["ethtool", "-S", "ens1f0np0"], 0, text)
        host = tree_host(tmp_path / f"h{n}", files, runner=runner)
        host = replace(host, facts=replace(host.facts, now=host.facts.now + n * 3600))
        ctx = AuditContext(host=host, profile=load_profile("training"), counters=CounterStore.load(tmp_path / "s", host))
        results.append(run_checks([roce.loss], ctx))
        assert ctx.counters.save() is None
    return results


def test_loss_counters_judged_as_growth(tmp_path):
    quiet = roce_port(counters={"out_of_sequence": 7, "packet_seq_err": 0, "np_cnp_sent": 100})
    lossy = roce_port(counters={"out_of_sequence": 7, "packet_seq_err": 12, "np_cnp_sent": 900})
    first, second = _audit_twice(tmp_path, quiet, lossy,
                                 (MLX5_STATS, MLX5_STATS.replace("rx_discards_phy: 0", "rx_discards_phy: 40")))
    assert first[0].status.value == "WARN" and "hw/out_of_sequence=7 (lifetime totals" in first[0].message
    assert second[0].status.value == "WARN"
    assert second[0].message.startswith("hw/packet_seq_err +12, nic/rx_discards_phy +40 in 1.0 h")
    assert "congestion control at work: hw/np_cnp_sent +800" in second[0].message


def test_only_congestion_counters_moving_passes(tmp_path):
    a = roce_port(counters={"out_of_sequence": 0, "np_cnp_sent": 100})
    b = roce_port(counters={"out_of_sequence": 0, "np_cnp_sent": 150})
    _, second = _audit_twice(tmp_path, a, b, (MLX5_STATS, MLX5_STATS.replace("tx_pause_ctrl_phy: 0", "tx_pause_ctrl_phy: 9")))
    assert second[0].status.value == "PASS" and "np_cnp_sent +50" in second[0].message and "tx_pause_ctrl_phy +9" in \
        second[0].message


def test_loss_without_readable_counters_skips_and_says_why(tmp_path):
    bare = {k: v for k, v in roce_port().items() if "/hw_counters/" not in k}
    [r] = run(roce.loss, tree_host(tmp_path / "a", bare))  # no hw_counters, no ethtool
    assert r.status.value == "SKIP" and r.message.startswith(
        "no RoCE hw_counters or NIC counters readable (NIC counters not read: ethtool ")
    runner = ReplayRunner()
    runner.add(["ethtool", "-S", "ens1f0np0"], 94, "")
    [r] = run(roce.loss, tree_host(tmp_path / "b", roce_port(), runner=runner))  # hw counters only
    assert r.status.value == "PASS" and r.message.endswith("(NIC counters not read: ethtool exited 94)")


def _tcp(retrans, out):
    text = (FIX / "proc-net-snmp.txt").read_text()
    names, values = [line for line in text.splitlines() if line.startswith("Tcp:")]
    fields = dict(zip(names.split()[1:], values.split()[1:], strict=True))
    fields.update(RetransSegs=str(retrans), OutSegs=str(out))
    return {"/proc/net/snmp": text.replace(values, "Tcp: " + " ".join(fields.values()))}


def test_tcp_retransmits_growth(tmp_path):
    results = []
    for n, files in enumerate((_tcp(10, 100_000), _tcp(2_010, 150_000), _tcp(2_020, 250_000))):
        host = tree_host(tmp_path / f"h{n}", files)
        host = replace(host, facts=replace(host.facts, now=host.facts.now + n * 3600))
        ctx = AuditContext(host=host, profile=load_profile("training"), counters=CounterStore.load(tmp_path / "s", host))
        results.append(run_checks([roce.tcp_retransmits], ctx)[0])
        ctx.counters.save()
    assert results[0].status.value == "PASS" and "since boot" in results[0].message
    assert results[1].status.value == "WARN" and "2000 of 50000 segments retransmitted in 1.0 h (4.00%)" in results[1].message
    assert results[2].status.value == "PASS" and "(0.01%)" in results[2].message
    assert statuses(run(roce.tcp_retransmits, tree_host(tmp_path / "x", {}))) == ["SKIP"]
