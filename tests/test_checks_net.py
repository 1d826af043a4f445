"""NIC and InfiniBand checks on sysfs trees laid out as on an H100 node with ConnectX-7 rails
(sysfs strings as the mlx5 driver writes them: '4: ACTIVE', '5: LinkUp', '400 Gb/sec (4X NDR)')."""

from pathlib import Path

from gpunode.checks import net
from gpunode.host.runner import ReplayRunner
from testkit import run, statuses, tree_host

CX7, CX6DX, I210 = ("0x15b3", "0x1021"), ("0x15b3", "0x101d"), ("0x8086", "0x1533")


def nic(name, model=CX7, mtu=4092, speed=400000, kind="ib", oper="up", flags="0x1003", carrier=1, rdma=None):
    base = f"/sys/class/net/{name}"
    files = {
        f"{base}/type": "32\n" if kind == "ib" else "1\n",
        f"{base}/mtu": f"{mtu}\n",
        f"{base}/operstate": f"{oper}\n",
        f"{base}/flags": f"{flags}\n",
        f"{base}/device/vendor": f"{model[0]}\n",
        f"{base}/device/device": f"{model[1]}\n",
    }
    if speed is not None:
        files[f"{base}/speed"] = f"{speed}\n"
    if carrier is not None:
        files[f"{base}/carrier"] = f"{carrier}\n"
    if rdma:
        files[f"{base}/device/infiniband/{rdma}/node_type"] = "1: CA\n"
    return files


def node(*nics):
    files = {"/sys/class/net/lo/mtu": "65536\n", "/sys/class/net/lo/operstate": "unknown\n",
             "/sys/class/net/docker0/mtu": "1500\n", "/sys/class/net/docker0/operstate": "down\n"}
    for n in nics:
        files.update(n)
    return files


def rails(over=None):
    return node(*(nic(f"ibp{i}s0", rdma=f"mlx5_{i}", **(over or {}).get(i, {})) for i in range(4)),
                nic("eno1", model=I210, mtu=1500, speed=1000, kind="eth"))


def by_subject(results):
    return {r.subject: r for r in results}


def test_mtu_consistent_rails_pass(tmp_path):
    r = by_subject(run(net.mtu, tree_host(tmp_path, files=rails())))
    assert set(r) == {"ibp0s0", "ibp1s0", "ibp2s0", "ibp3s0", "eno1"}  # lo, docker0 are not data NICs
    assert all(x.status.value == "PASS" for x in r.values())
    assert r["ibp0s0"].message == "MTU 4092 (infiniband, 400 Gb/s)" and r["eno1"].message == "MTU 1500 (ethernet, 1 Gb/s)"


def test_mtu_odd_rail_and_small_mtu_on_fast_ethernet_warn(tmp_path):
    r = by_subject(run(net.mtu, tree_host(tmp_path / "a", files=rails({2: {"mtu": 2044}}))))
    assert r["ibp2s0"].status.value == "WARN" and "3 peer(s) of the same model use 4092" in r["ibp2s0"].message
    assert r["ibp0s0"].status.value == "PASS" and r["eno1"].status.value == "PASS"  # other model, not a peer
    roce = node(nic("ens1f0np0", model=CX6DX, mtu=1500, speed=100000, kind="eth", rdma="mlx5_4"))
    r = run(net.mtu, tree_host(tmp_path / "b", files=roce))
    assert statuses(r) == ["WARN"] and "jumbo frames" in r[0].message and r[0].observed["kind"] == "roce"
    roce9000 = node(nic("ens1f0np0", model=CX6DX, mtu=9000, speed=100000, kind="eth", rdma="mlx5_4"))
    assert statuses(run(net.mtu, tree_host(tmp_path / "c", files=roce9000))) == ["PASS"]


def test_mtu_skips_without_physical_nics(tmp_path):
    r = run(net.mtu, tree_host(tmp_path, files=node()))
    assert statuses(r) == ["SKIP"] and r[0].message == "no physical NIC is up"


def test_link_speed_pass(tmp_path):
    r = by_subject(run(net.link_speed, tree_host(tmp_path, files=rails())))
    assert all(x.status.value == "PASS" for x in r.values()) and r["ibp3s0"].message == "400 Gb/s"


def test_link_down_or_slow_rail_warns_admin_down_is_ignored(tmp_path):
    files = rails({1: {"speed": 200000}, 3: {"oper": "down", "carrier": 0, "speed": -1}})
    files.update(nic("ens9", model=CX6DX, mtu=1500, speed=None, kind="eth", oper="down", flags="0x1002", carrier=None))
    r = by_subject(run(net.link_speed, tree_host(tmp_path, files=files)))
    assert r["ibp1s0"].status.value == "WARN" and r["ibp1s0"].message == "200 Gb/s, below its peers' 400 Gb/s"
    assert r["ibp3s0"].status.value == "WARN" and r["ibp3s0"].message.startswith("link down (operstate down")
    assert r["ibp0s0"].status.value == "PASS" and "ens9" not in r


def ib_port(dev, port=1, state="4: ACTIVE", phys="5: LinkUp", rate="400 Gb/sec (4X NDR)", layer="InfiniBand",
            hca="MT4129", counters=None):
    base = f"/sys/class/infiniband/{dev}"
    files = {f"{base}/hca_type": f"{hca}\n", f"{base}/ports/{port}/state": f"{state}\n",
             f"{base}/ports/{port}/phys_state": f"{phys}\n", f"{base}/ports/{port}/rate": f"{rate}\n",
             f"{base}/ports/{port}/link_layer": f"{layer}\n"}
    all_counters = {name: 0 for name in ("symbol_error", "link_error_recovery", "link_downed", "port_rcv_errors",
                                         "port_rcv_remote_physical_errors", "local_link_integrity_errors",
                                         "excessive_buffer_overrun_errors", "port_xmit_discards", "VL15_dropped")}
    all_counters.update(counters or {})
    for name, value in all_counters.items():
        files[f"{base}/ports/{port}/counters/{name}"] = f"{value}\n"
    return files


def fabric(*ports):
    files = {}
    for p in ports:
        files.update(p)
    return files


def test_ib_ports_active_pass(tmp_path):
    files = fabric(*(ib_port(f"mlx5_{i}") for i in range(4)),
                   ib_port("mlx5_4", rate="100 Gb/sec (2X NDR)", layer="Ethernet", hca="MT4125"))
    r = by_subject(run(net.ib_port_state, tree_host(tmp_path, files=files)))
    assert all(x.status.value == "PASS" for x in r.values()), r
    assert r["mlx5_0/1"].message == "4: ACTIVE, 5: LinkUp, 400 Gb/sec (4X NDR) (InfiniBand)"
    assert r["mlx5_4/1"].subject == "mlx5_4/1"  # another HCA model at 100G is not a slow peer


def test_ib_port_down_fails_no_sm_explained_slow_port_warns(tmp_path):
    files = fabric(ib_port("mlx5_0"), ib_port("mlx5_1", state="1: DOWN", phys="2: Polling", rate="10 Gb/sec (4X SDR)"),
                   ib_port("mlx5_2", state="2: INIT"), ib_port("mlx5_3", rate="200 Gb/sec (4X HDR)"),
                   ib_port("mlx5_5", state="1: DOWN", phys="3: Disabled"),
                   ib_port("mlx5_6", state="1: DOWN", phys="3: Disabled", layer="Ethernet", hca="MT4125"),
                   ib_port("mlx5_6", port=2, state="1: DOWN", phys="2: Polling", layer="Ethernet", hca="MT4125"))
    r = by_subject(run(net.ib_port_state, tree_host(tmp_path, files=files)))
    assert r["mlx5_0/1"].status.value == "PASS"
    assert r["mlx5_1/1"].status.value == "FAIL" and r["mlx5_1/1"].expected == "4: ACTIVE, 5: LinkUp"
    assert r["mlx5_2/1"].status.value == "FAIL" and "no subnet manager" in r["mlx5_2/1"].message
    assert r["mlx5_3/1"].status.value == "WARN" and "below its peers' 400 Gb/sec" in r["mlx5_3/1"].message
    assert r["mlx5_5/1"].status.value == "PASS" and r["mlx5_5/1"].message.startswith("disabled")
    assert r["mlx5_6/2"].status.value == "WARN"  # an unused Ethernet port is a warning, not a drain
    assert "gate" in net.ib_port_state.tags


def test_ib_checks_skip_without_rdma_devices(tmp_path):
    host = tree_host(tmp_path, files=rails())
    for c in (net.ib_port_state, net.ib_errors, net.peermem):
        r = run(c, host)
        assert statuses(r) == ["SKIP"] and r[0].message == "no InfiniBand/RDMA device"


def test_ib_error_counters(tmp_path):
    files = fabric(ib_port("mlx5_0", counters={"port_xmit_discards": 1200, "VL15_dropped": 3}),
                   ib_port("mlx5_1", counters={"symbol_error": 65535, "link_downed": 2}))
    r = by_subject(run(net.ib_errors, tree_host(tmp_path, files=files)))
    assert r["mlx5_0/1"].status.value == "PASS" and r["mlx5_0/1"].message == "7 error counters at 0"  # congestion only
    assert r["mlx5_1/1"].status.value == "WARN"
    assert r["mlx5_1/1"].message == "symbol_error=65535, link_downed=2 (lifetime totals; no earlier reading)"
    assert r["mlx5_1/1"].observed == {"symbol_error": 65535, "link_downed": 2}


def test_ib_error_counters_unreadable_skip(tmp_path):
    files = {k: v for k, v in ib_port("mlx5_0").items() if "/counters/" not in k}
    r = run(net.ib_errors, tree_host(tmp_path, files=files))
    assert statuses(r) == ["SKIP"] and r[0].subject == "mlx5_0/1"


PROC_MODULES = ("nvidia_uvm 4956160 0 - Live 0x0000000000000000 (PO)\n"
                "nvidia 97337344 1 nvidia_uvm, Live 0x0000000000000000 (PO)\n"
                "mlx5_ib 495616 0 - Live 0x0000000000000000 (OE)\n")
PEERMEM = "nvidia_peermem 16384 0 - Live 0x0000000000000000 (PO)\n"
PROPRIETARY = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.161.08  Tue Mar  5 22:42:15 UTC 2024\n"
OPEN = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)\n"


def test_peermem_loaded_passes(tmp_path):
    files = {**ib_port("mlx5_0"), "/proc/modules": PROC_MODULES + PEERMEM, "/proc/driver/nvidia/version": PROPRIETARY}
    r = run(net.peermem, tree_host(tmp_path, files=files))
    assert statuses(r) == ["PASS"] and r[0].message == "nvidia_peermem loaded"


def test_peermem_missing_warns_unless_dmabuf_is_possible(tmp_path):
    files = {**ib_port("mlx5_0"), "/proc/modules": PROC_MODULES, "/proc/driver/nvidia/version": PROPRIETARY,
             "/proc/sys/kernel/osrelease": "6.8.0-1015-nvidia\n"}
    r = run(net.peermem, tree_host(tmp_path / "a", files=files))
    assert statuses(r) == ["WARN"] and "no GPUDirect RDMA" in r[0].message
    files["/proc/driver/nvidia/version"] = OPEN
    r = run(net.peermem, tree_host(tmp_path / "b", files=files))
    assert statuses(r) == ["PASS"] and "DMA-BUF" in r[0].message
    files["/proc/sys/kernel/osrelease"] = "5.4.0-150-generic\n"  # DMA-BUF needs 5.12+
    assert statuses(run(net.peermem, tree_host(tmp_path / "c", files=files))) == ["WARN"]


def test_peermem_skips_without_nvidia_driver(tmp_path):
    files = {**ib_port("mlx5_0"), "/proc/modules": "mlx5_ib 495616 0 - Live 0x0000000000000000\n"}
    r = run(net.peermem, tree_host(tmp_path, files=files))
    assert statuses(r) == ["SKIP"] and "NVIDIA driver is not loaded" in r[0].message


# --- qdiscs the NICs run (tc -j qdisc show, recorded on this Debian 12 VM and in a netns there) ---
TC = Path(__file__).parent / "fixtures" / "tc"
HOST_TC = (TC / "host-eth0-pfifo_fast.json").read_text()  # lo noqueue, eth0 pfifo_fast at the root
MQ_TC = (TC / "netns-veth-mq-pfifo_fast.json").read_text()  # v0: mq root, pfifo_fast per TX queue


def tc_host(tmp_path, tc_stdout, default="fq", rc=0, nics=("eth0",), stderr=""):
    runner = ReplayRunner()
    runner.add(["tc", "-j", "qdisc", "show"], rc, tc_stdout, stderr)
    files = node(*(nic(n, model=CX6DX, mtu=9000, speed=200000, kind="eth") for n in nics))
    files["/proc/sys/net/core/default_qdisc"] = f"{default}\n"
    return tree_host(tmp_path, files=files, runner=runner)


def test_qdisc_left_from_before_the_sysctl_warns(tmp_path):
    # After `apply` set default_qdisc=fq the NIC still runs what it got at link-up.
    r = run(net.interface_qdiscs, tc_host(tmp_path / "a", HOST_TC))
    assert statuses(r) == ["WARN"] and r[0].subject == "eth0"
    assert r[0].message.startswith("runs pfifo_fast while net.core.default_qdisc is fq")
    r = run(net.interface_qdiscs, tc_host(tmp_path / "b", MQ_TC, nics=("v0",)))
    assert statuses(r) == ["WARN"] and "runs pfifo_fast x2 while" in r[0].message
    assert r[0].observed == {"qdiscs": ["pfifo_fast", "pfifo_fast"], "default_qdisc": "fq"}


def test_qdisc_matching_the_sysctl_or_configured_on_purpose_passes(tmp_path):
    r = run(net.interface_qdiscs, tc_host(tmp_path / "a", HOST_TC, default="pfifo_fast"))
    assert statuses(r) == ["PASS"] and r[0].message == "runs pfifo_fast (default_qdisc pfifo_fast)"
    # Derived from the recorded mq output: the children re-created after the sysctl said fq.
    fq = MQ_TC.replace('"kind":"pfifo_fast"', '"kind":"fq"')
    r = run(net.interface_qdiscs, tc_host(tmp_path / "b", fq, nics=("v0",)))
    assert statuses(r) == ["PASS"] and r[0].message == "runs fq x2 (default_qdisc fq)"
    # One queue still on the old default is enough to warn.
    mixed = MQ_TC.replace('"kind":"pfifo_fast"', '"kind":"fq"', 1)
    assert statuses(run(net.interface_qdiscs, tc_host(tmp_path / "c", mixed, nics=("v0",)))) == ["WARN"]
    # A shaper someone configured (htb at the root) is theirs, not a leftover.
    htb = HOST_TC.replace('"kind":"pfifo_fast","handle":"0:","dev":"eth0"', '"kind":"htb","handle":"1:","dev":"eth0"')
    r = run(net.interface_qdiscs, tc_host(tmp_path / "d", htb))
    assert statuses(r) == ["PASS"] and "configured on purpose" in r[0].message


def test_qdisc_unreadable_is_never_a_pass(tmp_path):
    r = run(net.interface_qdiscs, tc_host(tmp_path / "a", "", rc=1, stderr='Cannot find device "eth0"\n'))
    assert statuses(r) == ["ERROR"] and 'tc exited 1: Cannot find device "eth0"' in r[0].message
    r = run(net.interface_qdiscs, tc_host(tmp_path / "b", HOST_TC[:100]))  # truncated
    assert statuses(r) == ["ERROR"] and "cannot read tc's output" in r[0].message
    no_tc = tc_host(tmp_path / "c", HOST_TC)
    no_tc.runner.results.clear()  # tc not installed (or not recorded in an old snapshot)
    r = run(net.interface_qdiscs, no_tc)
    assert statuses(r) == ["SKIP"] and "cannot see the interfaces' qdiscs" in r[0].message
    r = run(net.interface_qdiscs, tree_host(tmp_path / "d", files=rails()))
    assert statuses(r) == ["SKIP"] and "default_qdisc" in r[0].message


# === mutation survivors: net (benchmarks/mutation.py) ==========================================

def test_mtu_unreadable_is_a_skip_row_and_peers_still_judged(tmp_path):
    files = {k: v for k, v in rails().items() if k != "/sys/class/net/ibp1s0/mtu"}
    r = by_subject(run(net.mtu, tree_host(tmp_path, files=files)))
    assert set(r) == {"ibp0s0", "ibp1s0", "ibp2s0", "ibp3s0", "eno1"}
    assert r["ibp1s0"].status.value == "SKIP" and r["ibp1s0"].message == "knob absent on this host: /sys/class/net/ibp1s0/mtu"
    assert r["ibp0s0"].status.value == "PASS" and r["ibp0s0"].message == "MTU 4092 (infiniband, 400 Gb/s)"


def test_ib_port_without_state_is_a_skip_row(tmp_path):
    files = fabric(ib_port("mlx5_0"), {k: v for k, v in ib_port("mlx5_1").items() if not k.endswith("/ports/1/state")})
    r = by_subject(run(net.ib_port_state, tree_host(tmp_path, files=files)))
    assert set(r) == {"mlx5_0/1", "mlx5_1/1"} and r["mlx5_0/1"].status.value == "PASS"
    assert r["mlx5_1/1"].status.value == "SKIP" and r["mlx5_1/1"].message == "knob absent on this host: ports/1/state"


def test_ib_error_lifetime_totals_expect_zero(tmp_path):
    files = fabric(ib_port("mlx5_0", counters={"link_downed": 1}))
    r = run(net.ib_errors, tree_host(tmp_path, files=files))
    assert statuses(r) == ["WARN"] and r[0].expected == 0 and r[0].message.startswith("link_downed=1 (lifetime totals")
