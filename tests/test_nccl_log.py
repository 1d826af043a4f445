"""NCCL transport truth: bench/nccl_log.py on the lent H100's own NCCL INFO log and on real
multi-node logs from NCCL's issues (tests/fixtures/nccl/info/README.md)."""

from __future__ import annotations

from pathlib import Path

from gpunode.bench import nccl_log
from gpunode.bench.nccl_log import Fabric, judge, parse

FIX = Path(__file__).parent / "fixtures"
INFO = FIX / "nccl" / "info"
H100 = FIX / "device" / "topology-h100" / "nccl-info.log"
IB_UP = Fabric(rdma_ports=("mlx5_0/1 (InfiniBand)",))


def _log(name: str):
    return parse((INFO / name).read_text())


def test_lent_h100_single_node_log_is_parsed_and_judged():
    log = parse(H100.read_text())
    assert log.seen and log.version == "2.28.9+cuda13.0"
    assert log.network == "Socket" and log.ib_no_device
    assert log.socket_ifs == ["eth0"] and log.ib_devices == []
    assert log.gdr_hca == {"eth0": False} and log.gdr is False
    assert log.nvls_channels == 0 and log.nranks == 1 and log.nnodes == 1
    assert log.connections == [] and not log.inter_node
    # One GPU, one node: Socket is NCCL's choice for a network it never uses; not a failure even
    # where RDMA ports are up.
    status, why = judge(log, IB_UP)
    assert status == "PASS", why
    assert "single node" in why and "network Socket (IB: no device)" in why and "GDR off" in why
    assert log.to_json()["transports"] == {}


def test_multinode_socket_while_rdma_ports_are_active_fails_with_the_reason():
    log = _log("socket_2node.nccl1232.log")
    assert log.inter_node and log.hosts == {"node0", "node2"}
    assert log.transports()["NET/Socket"] == 9 and log.transports()["SHM/direct/direct"] == 2
    assert log.peers()["0->1"] == "NET/Socket" and log.peers()["2->0"] == "SHM/direct/direct"
    status, why = judge(log, IB_UP)
    assert status == "FAIL"
    assert "TCP sockets (NET/Socket)" in why and "mlx5_0/1" in why and "0 -> 1 via NET/Socket/0" in why


def test_multinode_socket_without_rdma_hardware_is_not_a_failure():
    status, why = judge(_log("socket_2node.nccl1232.log"), Fabric())
    assert status == "PASS", why


def test_socket_fallback_from_nccl_952_and_the_nccl_2_4_format():
    log = _log("socket_2node_p2p.nccl952.log")
    assert log.transports() == {"NET/Socket": 2, "P2P/IPC/read": 14}
    assert judge(log, IB_UP)[0] == "FAIL"
    old = _log("socket_old.nccl226.log")
    assert old.version == "2.4.7+cuda9.2" and old.ib_no_device and old.socket_ifs == ["ens3"]
    assert [c.transport for c in old.connections] == ["NET/Socket"] * 3
    status, why = judge(old, IB_UP)
    assert status == "FAIL" and "NET/IB : No device found" in why


def test_intra_node_shm_where_nvlink_exists_fails():
    log = _log("socket_2node.nccl1232.log")
    status, why = judge(log, Fabric(nvlink=True))
    assert status == "FAIL" and "2 intra-node connection(s) fell back to host shared memory" in why
    assert "2 -> 0 via SHM/direct/direct" in why
    assert judge(log, Fabric(nvlink=False))[0] == "PASS"


def test_ib_with_gdr_passes_and_without_gdr_warns():
    log = _log("ib_expected.siderolabs566.log")
    assert log.network == "IB" and log.gdr is True
    assert log.ib_devices == ["mlx5_0:1/IB", "mlx5_1:1/IB", "mlx5_2:1/IB", "mlx5_3:1/IB"]
    assert judge(log, IB_UP)[0] == "PASS"
    no_gdr = parse((INFO / "ib_expected.siderolabs566.log").read_text().replace("/GDRDMA", ""))
    assert no_gdr.gdr is False
    status, why = judge(no_gdr, IB_UP)
    assert status == "WARN" and "without GPUDirect" in why
    ext = _log("ib_gdr.deepep106.log")
    assert ext.transports() == {"NET/IBext/GDRDMA": 8} and judge(ext, IB_UP)[0] == "PASS"


def test_roce_devices_and_bare_version_banner():
    log = _log("roce_init.nccltests185.log")
    assert log.version == "2.19.3+cuda12.3" and log.network == "IB"
    assert log.ib_devices == ["mlx5_10:1/RoCE", "mlx5_11:1/RoCE"]
    assert log.hosts == {"dgxh100-4", "dgxh100-3"}


def test_no_info_lines_is_never_a_pass():
    status, why = judge(parse("# nccl-tests version 2.19.6\n  1024 256 float sum -1 1 1 1 0\n"), IB_UP)
    assert status == "SKIP" and "no INFO lines" in why


def test_is_nccl_line():
    assert nccl_log.is_nccl_line("vm:1010:1010 [0] NCCL INFO Using network Socket")
    assert nccl_log.is_nccl_line("[1] node2:22555:22555 [0] NCCL INFO Connected all rings")
    assert nccl_log.is_nccl_line("NCCL version 2.4.7+cuda9.2")
    assert not nccl_log.is_nccl_line("  1073741824     268435456     float     sum      -1   4386.2  244.80  458.99  0")
    assert not nccl_log.is_nccl_line("gpu5:6252:6325 [0] transport/net_ib.cu:788 NCCL WARN NET/IB : Got completion")


def test_tuning_tables_new_and_old_formats():
    new = _log("tuning_new.nccl1519.log")
    assert new.tuning_columns == ["LL", "LL128", "Simple"] * 3  # the excerpt has no Algorithm line
    assert new.tuning["AllGather"][5] == ("Simple", 70.0, 21.3)
    assert new.prediction("AllGather") == ("Simple", 21.3) and new.prediction("AllReduce") is None
    old = _log("tuning_old.nccl754.log")
    assert old.tuning_columns[5] == "Ring/Simple" and old.prediction("Broadcast") == ("Ring/Simple", 3.0)
    assert "Max NThreads" not in old.tuning
    joined = parse("h:1:2 [0] NCCL INFO   Algorithm   |   Tree |   Ring |\nh:1:2 [0] NCCL INFO   Protocol    |"
                   "   LL |   Simple |\nh:1:2 [0] NCCL INFO     AllReduce |   5.0/  10.0 |   9.0/ 40.5 |\n")
    assert joined.prediction("AllReduce") == ("Ring/Simple", 40.5)
