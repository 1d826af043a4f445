"""Topology: the PCI tree and NVLinks read from sysfs and NVML, pairs classified as nvidia-smi
does, wiring checks, and expected figures derived from the links (gpunode topo / expect)."""

from __future__ import annotations

import copy
import json

import pytest
import topology_kit

import testkit
from gpunode.checks import topology as topo_checks
from gpunode.host.facts.pci import Link, parse_lspci_acs, parse_speed, parse_width, place
from gpunode.host.facts.topology import build
from gpunode.topology.expect import expectations

FIXTURES = testkit.FIXTURES


def topo_of(host):
    return build(host, host.gpu.inventory().gpus)


def by_metric(host) -> dict[str, object]:
    return {(e.metric, e.gpu): e for e in expectations(topo_of(host), host.gpu.inventory().gpus)}


def test_sysfs_values_parse_as_the_kernel_prints_them():
    assert parse_speed("32.0 GT/s PCIe") == 5
    assert parse_speed("8 GT/s") == 3
    assert parse_speed("2.5 GT/s PCIe") == 1
    assert parse_speed("Unknown") is None
    assert parse_width("16\n") == 16
    assert parse_width("0") is None  # a link that is down
    assert parse_width("255") is None
    assert Link(5, 16).gbps == pytest.approx(63.0, abs=0.05)
    assert Link(4, 8).gbps == pytest.approx(15.75, abs=0.05)
    assert place("../../../devices/pci0000:15/0000:15:01.0/0000:16:00.0/0000:17:00.0/0000:18:00.0") == (
        "pci0000:15", ("0000:15:01.0", "0000:16:00.0", "0000:17:00.0"))
    assert place("../../../devices/platform/foo") is None
    assert place(None) is None


def test_dgx_h100_pairs_classified_as_nvidia_smi_prints_them(tmp_path):
    topo = topo_of(topology_kit.topology_host(tmp_path, "dgx-h100"))
    gpus, nics = topo.gpus, {n.name: n for n in topo.nics}
    assert topo.path(gpus[0], gpus[0]) == "X"
    assert {topo.path(gpus[0], g) for g in gpus[1:]} == {"NV18"}
    # the User Guide's pairing: each GPU with its own ConnectX-7 behind one switch
    for gpu, nic in zip(gpus, ["mlx5_0", "mlx5_3", "mlx5_4", "mlx5_5", "mlx5_6", "mlx5_9", "mlx5_10", "mlx5_11"],
                        strict=True):
        assert topo.path(gpu, nics[nic]) == "PIX"
    assert topo.path(gpus[0], nics["mlx5_3"]) == "NODE"  # another root complex of socket 0
    assert topo.path(gpus[0], nics["mlx5_6"]) == "SYS"  # across the sockets
    assert topo.nearest_nics(gpus[5]) == ("PIX", [nics["mlx5_9"]])


def test_pcie_cards_with_nvlink_bridges(tmp_path):
    topo = topo_of(topology_kit.topology_host(tmp_path, "h100-pcie-nvlink"))
    g = topo.gpus
    assert topo.path(g[0], g[1]) == "NV12"
    assert topo.path(g[2], g[3]) == "NV12"
    assert topo.path(g[0], g[2]) == "SYS"
    assert topo.path(g[0], topo.nics[0]) == "NODE"
    assert topo.path(g[0], topo.nics[1]) == "SYS"


def test_switch_depth_gives_pix_then_pxb():
    from gpunode.host.facts.pci import PciDevice, PciTree
    from gpunode.host.facts.topology import Endpoint, pci_path

    def dev(bdf, parents):
        return PciDevice(bdf, "pci0000:00", tuple(parents), 0x030200, 0x10de, 0, 0, Link(5, 16), Link(5, 16))

    tree = PciTree({d.bdf: d for d in [
        dev("a", ["rp", "up", "d1"]), dev("b", ["rp", "up", "d2"]),  # one switch
        dev("c", ["rp", "up", "d3", "up2", "d4"]),  # a second switch below
        dev("e", ["rp2"]),  # another root port of the same host bridge
    ]})
    end = {n: Endpoint(n, "gpu", n, 0) for n in "abce"}
    assert pci_path(tree, end["a"], end["b"]) == "PIX"
    assert pci_path(tree, end["a"], end["c"]) == "PXB"
    assert pci_path(tree, end["a"], end["e"]) == "PHB"


def _published(layout_name: str) -> dict:
    return topology_kit.load_layout(layout_name)["published"]


@pytest.mark.parametrize("layout, pair", [("dgx-h100", ("p2p.0-1", None)), ("h100-pcie-nvlink", ("p2p.0-1", None)),
                                          ("gb200-tray", ("p2p.0-1", None))])
def test_nvlink_figures_match_what_nvidia_publishes(tmp_path, layout, pair):
    """The raw NVLink rate of a GPU pair, both directions, is NVIDIA's published NVLink bandwidth."""
    expected = by_metric(topology_kit.topology_host(tmp_path, layout))[pair]
    assert expected.raw * 2 == pytest.approx(_published(layout)["nvlink_bidirectional_gbps"], rel=0.10)


def test_dgx_h100_all_reduce_expectations_match_nccl_tests(tmp_path):
    exp = by_metric(topology_kit.topology_host(tmp_path, "dgx-h100"))
    published = _published("dgx-h100")
    assert exp[("nccl.all_reduce.busbw", None)].value == pytest.approx(published["nccl_all_reduce_busbw_ring"], rel=0.10)
    assert exp[("nccl.all_reduce.busbw.nvls", None)].value == pytest.approx(
        published["nccl_all_reduce_busbw_nvls"], rel=0.10)
    assert exp[("nic.mlx5_0", None)].value == pytest.approx(400 / 8 * 0.92)


def test_partial_nvlink_gives_no_all_gpu_ring_and_pcie_for_unbridged_pairs(tmp_path):
    exp = by_metric(topology_kit.topology_host(tmp_path, "h100-pcie-nvlink"))
    assert ("nccl.all_reduce.busbw", None) not in exp
    assert exp[("p2p.0-2", None)].raw == pytest.approx(63.0, abs=0.1)  # the PCIe path
    assert "SYS" in exp[("p2p.0-2", None)].arithmetic


def test_gb200_gets_no_pcie_host_link_expectation(tmp_path):
    exp = by_metric(topology_kit.topology_host(tmp_path, "gb200-tray"))
    assert not [k for k in exp if k[0].startswith(("h2d", "d2h"))]
    assert exp[("hbm.d2d", 0)].raw > 0


RECORDED = [("h100-sxm-1gpu", "h100-full.json"), ("h200-1gpu", "h200-full.json"),
            ("h100-sxm-1gpu", "h100-quick.json"), ("h200-1gpu", "h200-quick.json")]


@pytest.mark.parametrize("host, bench", RECORDED)
def test_expectations_lie_within_ten_percent_of_recorded_healthy_runs(host, bench):
    exp = {e.metric: e for e in expectations(*_recorded(host))}
    measured = {m["name"]: m["value"] for m in json.loads((FIXTURES / "bench" / bench).read_text())["metrics"]
                if m["value"] is not None}
    compared = [name for name in measured if name in exp]
    assert len(compared) >= 4, compared
    for name in compared:
        assert measured[name] == pytest.approx(exp[name].value, rel=0.10), (name, exp[name].arithmetic)


def _recorded(name: str):
    host = testkit.fixture_host(name)
    gpus = host.gpu.inventory().gpus
    return build(host, gpus), gpus


def test_expectation_shows_its_arithmetic():
    exp = {e.metric: e for e in expectations(*_recorded("h100-sxm-1gpu"))}
    assert exp["h2d.pinned"].arithmetic == "PCIe Gen5 x16 = 63.0 GB/s x 0.87 = 54.8 GB/s"
    assert exp["hbm.d2d"].arithmetic.startswith("5120-bit (datasheet) x 2619 MHz x 2 = 3,352.3 GB/s")


# ---- derived faulty hosts: each is flagged with its cause named

def test_gpu_link_at_x8_names_the_link_in_the_expectation(tmp_path):
    host = topology_kit.topology_host(tmp_path, "dgx-h100", gpu_changes={2: {"pcie_width_current": 8}})
    exp = by_metric(host)
    h2d = exp[("h2d.pinned", 2)]
    assert h2d.limited_by == "GPU2 link at Gen5 x8 of Gen5 x16"
    assert h2d.limited_value == pytest.approx(63.0 / 2 * 0.87, rel=0.01)
    assert exp[("h2d.pinned", 1)].limited_by is None


def test_gpu_at_gen4_names_the_link(tmp_path):
    host = topology_kit.topology_host(tmp_path, "dgx-h100", gpu_changes={0: {"pcie_gen_max": 4}})
    assert by_metric(host)[("h2d.pinned", 0)].limited_by == "GPU0 link at Gen4 x16 of Gen5 x16"


def test_switch_uplink_at_x8_limits_the_gpus_below_it(tmp_path):
    layout = topology_kit.load_layout("dgx-h100")
    uplink = layout["switches"][1]["upstream"]
    host = topology_kit.topology_host(tmp_path, layout, changes={uplink: {"cur_width": 8}})
    h2d = by_metric(host)[("h2d.pinned", 1)]
    assert h2d.limited_by == f"upstream link of bridge {uplink} at Gen5 x8"
    results = testkit.run(topo_checks.link, host)
    assert [r.subject for r in results if r.status.value == "FAIL"] == [uplink]


def test_half_width_nic_fails_the_link_check_and_limits_its_figure(tmp_path):
    host = topology_kit.topology_host(tmp_path, "dgx-h100", changes={"0000:40:00.0": {"cur_width": 8}})
    results = {r.subject: r for r in testkit.run(topo_checks.link, host)}
    assert results["mlx5_3"].status.value == "FAIL"
    assert "x8 of x16" in results["mlx5_3"].message
    assert results["mlx5_0"].status.value == "PASS"
    assert results["nvme0"].status.value == "PASS"
    assert by_metric(host)[("nic.mlx5_3", None)].limited_by == "mlx5_3 PCIe link at Gen5 x8 of Gen5 x16"


def test_healthy_dgx_passes_every_topology_check(tmp_path):
    host = topology_kit.topology_host(tmp_path, "dgx-h100")
    for check in (topo_checks.link, topo_checks.gpu_nic, topo_checks.acs, topo_checks.nic_share):
        assert {r.status.value for r in testkit.run(check, host)} == {"PASS"}, check.id


def test_acs_redirect_between_a_gpu_and_its_nic_is_flagged_with_the_bridge(tmp_path):
    layout = topology_kit.load_layout("dgx-h100")
    up = layout["switches"][0]["upstream"]
    down = f"{up[:5]}{int(up.split(':')[1], 16) + 1:02x}:01.0"  # the GPU's downstream port
    host = topology_kit.topology_host(tmp_path, layout, redirect={down})
    results = {r.subject: r for r in testkit.run(topo_checks.acs, host)}
    assert results["GPU0"].status.value == "FAIL"
    assert down in results["GPU0"].message
    assert results["GPU1"].status.value == "PASS"


def test_acs_skips_without_lspci(tmp_path):
    host = topology_kit.topology_host(tmp_path, "dgx-h100", lspci=False)
    assert {r.status.value for r in testkit.run(topo_checks.acs, host)} == {"SKIP"}


def _nics_moved_to_socket_1(layout: dict) -> dict:
    moved = copy.deepcopy(layout)
    for low, high in zip(moved["switches"][:4], moved["switches"][4:], strict=True):
        nic = next(d for d in low["devices"] if d["kind"] == "nic")
        low["devices"].remove(nic)
        high["devices"].append(nic)
    return moved


def test_gpu_whose_nic_is_across_the_socket_fails_pairing(tmp_path):
    host = topology_kit.topology_host(tmp_path, _nics_moved_to_socket_1(topology_kit.load_layout("dgx-h100")))
    results = {r.subject: r for r in testkit.run(topo_checks.gpu_nic, host)}
    assert results["GPU0"].status.value == "FAIL"
    assert "at SYS" in results["GPU0"].message
    assert results["GPU4"].status.value == "PASS"


def test_fewer_nics_than_gpus_warns_only_for_gpus_with_every_nic_across_the_socket(tmp_path):
    layout = topology_kit.load_layout("h100-pcie-nvlink")
    layout["direct"] = [d for d in layout["direct"] if d.get("name") != "mlx5_1"]
    host = topology_kit.topology_host(tmp_path, layout)
    results = {r.subject: r.status.value for r in testkit.run(topo_checks.gpu_nic, host)}
    assert results == {"GPU0": "PASS", "GPU1": "PASS", "GPU2": "WARN", "GPU3": "WARN"}


def test_eight_gpus_sharing_two_nics_warn_on_network_share(tmp_path):
    layout = topology_kit.load_layout("dgx-h100")
    for sw in layout["switches"][1:]:
        for d in sw["devices"]:
            if d["kind"] == "nic" and d["name"] != "mlx5_6":
                sw["devices"].remove(d)
    host = topology_kit.topology_host(tmp_path, layout)
    result = testkit.run(topo_checks.nic_share, host)[0]
    assert result.status.value == "WARN"
    assert "2 NICs, 8 GPUs" in result.message
    assert testkit.run(topo_checks.nic_share, topology_kit.topology_host(tmp_path / "h", "dgx-h100"))[0].status.value == "PASS"


LSPCI = """0000:16:00.0 PCI bridge: Broadcom / LSI PEX890xx PCIe Gen 5 Switch (rev b0) (prog-if 00 [Normal decode])
\tCapabilities: [220 v1] Access Control Services
\t\tACSCap:\tSrcValid+ TransBlk+ ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl+ DirectTrans+
\t\tACSCtl:\tSrcValid+ TransBlk- ReqRedir+ CmpltRedir+ UpstreamFwd+ EgressCtrl- DirectTrans-
0000:18:00.0 Infiniband controller: Mellanox Technologies MT2910 Family [ConnectX-7]
\tCapabilities: [48] Vital Product Data
0000:1b:00.0 3D controller: NVIDIA Corporation GH100 [H100 SXM5 80GB] (rev a1)
\tCapabilities: [2a0 v1] Access Control Services
\t\tACSCap:\tSrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-
\t\tACSCtl:\tSrcValid- TransBlk- ReqRedir- CmpltRedir- UpstreamFwd- EgressCtrl- DirectTrans-
"""


def test_lspci_acs_control_parsed_per_function():
    acs = parse_lspci_acs(LSPCI)
    assert acs["0000:16:00.0"]["ReqRedir"] is True
    assert acs["0000:16:00.0"]["TransBlk"] is False
    assert acs["0000:1b:00.0"] == dict.fromkeys(("SrcValid", "TransBlk", "ReqRedir", "CmpltRedir", "UpstreamFwd",
                                                 "EgressCtrl", "DirectTrans"), False)
    assert "0000:18:00.0" not in acs
    assert parse_lspci_acs(LSPCI[:200]) == {}  # cut before any ACSCtl line
    assert parse_lspci_acs("") == {}


def test_topo_and_expect_commands_on_a_recorded_host(tmp_path):
    from typer.testing import CliRunner

    from gpunode.cli import app

    snap = str(FIXTURES / "hosts" / "h200-1gpu")
    runner = CliRunner()
    out = runner.invoke(app, ["expect", "--snapshot", snap, "--format", "json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["schema"] == "gpunode.expect/1"
    assert {e["metric"] for e in doc["expectations"]} >= {"gemm.bf16", "hbm.d2d", "h2d.pinned"}
    out = runner.invoke(app, ["topo", "--snapshot", snap, "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["matrix"] == [{"from": "GPU0", "GPU0": "X"}]
    out = runner.invoke(app, ["expect", "--sysroot", str(tmp_path)])
    assert out.exit_code == 3
    assert "nothing to derive" in out.output


# ---- compare: judged against the links when no baseline matches, shown beside one that does

def _bench_with_topology(host_name: str = "h200-1gpu", bench: str = "h200-full.json", **scale) -> dict:
    from gpunode.bench.run import topology_expectations

    host = testkit.fixture_host(host_name)
    doc = json.loads((FIXTURES / "bench" / bench).read_text())
    doc["topology"] = topology_expectations(host, host.gpu.inventory())
    for metric in doc["metrics"]:
        if metric["name"] in scale and metric["value"] is not None:
            metric["value"] *= scale[metric["name"]]
    return doc


def _verdicts(doc: dict, catalogue=None, baseline=None):
    from gpunode.baselines.compare import compare
    from gpunode.baselines.select import Catalogue
    from gpunode.bench.results import BenchDocument

    return compare(BenchDocument.from_json(doc), catalogue or Catalogue([], include_shipped=False), baseline)


def test_no_matching_baseline_judges_against_the_topology_expectation():
    verdicts = _verdicts(_bench_with_topology())
    assert verdicts.origin == "topology"
    assert "judged against the topology expectation" in verdicts.reason
    rows = {r.metric: r for r in verdicts.rows}
    assert rows["h2d.pinned"].status == "PASS"
    assert rows["hbm.d2d"].expected == pytest.approx(4326.7, abs=0.1)
    assert rows["h2d.pageable"].status == "SKIP"
    assert verdicts.status == "OK"


def test_low_figure_against_the_links_fails_and_names_the_limiting_link():
    doc = _bench_with_topology(**{"h2d.pinned": 0.5})
    for entry in doc["topology"]:
        if entry["metric"] == "h2d.pinned":
            entry["limited_by"], entry["limited_value"] = "GPU0 link at Gen5 x8 of Gen5 x16", 27.4
    rows = {r.metric: r for r in _verdicts(doc).rows}
    assert rows["h2d.pinned"].status == "FAIL"
    assert "limited by GPU0 link at Gen5 x8 of Gen5 x16 (27.4 GB/s)" in rows["h2d.pinned"].message
    assert rows["d2h.pinned"].status == "PASS"


def test_a_matching_baseline_judges_and_the_links_are_shown_beside_it():
    from gpunode.baselines.compare import catalogue_for

    verdicts = _verdicts(_bench_with_topology(**{"hbm.d2d": 0.85}), catalogue_for(None, None))
    assert verdicts.origin == "shipped"
    rows = {r.metric: r for r in verdicts.rows}
    assert rows["gemm.bf16"].topology_expected == pytest.approx(685.1, abs=0.1)
    assert rows["gemm.bf16"].topology_note == ""
    assert "below the topology expectation 4,326.7 GB/s" in rows["hbm.d2d"].topology_note


def test_baseline_topology_can_be_asked_for_and_needs_recorded_expectations():
    from gpunode.baselines.compare import catalogue_for
    from gpunode.baselines.schema import BaselineError

    assert _verdicts(_bench_with_topology(), catalogue_for(None, None), "topology").origin == "topology"
    old = json.loads((FIXTURES / "bench" / "h200-full.json").read_text())
    with pytest.raises(BaselineError, match="records no topology expectations"):
        _verdicts(old, catalogue_for(None, None), "topology")


def test_without_recorded_expectations_no_baseline_is_still_unknown():
    from gpunode.baselines.select import NoBaselineError

    with pytest.raises(NoBaselineError):
        _verdicts(json.loads((FIXTURES / "bench" / "h200-full.json").read_text()))


@pytest.mark.parametrize("field, value", [("value", float("nan")), ("value", -1.0), ("value", True), ("gpu", "0"),
                                          ("arithmetic", "a\nb"), ("metric", None), ("limited_value", float("inf")),
                                          ("max_cov", 0), ("max_cov", 2.0)])
def test_hostile_topology_entries_make_the_result_unreadable(field, value):
    from gpunode.bench.results import BenchDocument

    doc = _bench_with_topology()
    doc["topology"][0][field] = value
    with pytest.raises(ValueError, match="topology"):
        BenchDocument.from_json(doc)


def test_a_failed_bench_metric_stays_failed_against_the_links():
    doc = _bench_with_topology()
    for metric in doc["metrics"]:
        if metric["name"] == "gemm.bf16":
            metric["status"], metric["message"] = "FAIL", "checksum mismatch"
    rows = {r.metric: r for r in _verdicts(doc).rows}
    assert rows["gemm.bf16"].status == "FAIL"
    assert "bench failed: checksum mismatch" in rows["gemm.bf16"].message


# ---- gres.conf: each GPU bound to its own NUMA node's cores, in Slurm's core numbering

# 2 sockets x 2 cores x 2 threads: Linux cpu0-1 socket 0, cpu2-3 socket 1, cpu4-7 their siblings.
CPU_TOPOLOGY = {0: (0, 0), 1: (0, 1), 2: (1, 0), 3: (1, 1), 4: (0, 0), 5: (0, 1), 6: (1, 0), 7: (1, 1)}


def _gres_host(tmp_path, gres_conf: str | None):
    host = topology_kit.topology_host(tmp_path, "h100-pcie-nvlink")
    files = {}
    for cpu, (package, core) in CPU_TOPOLOGY.items():
        files[f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"] = f"{package}\n"
        files[f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id"] = f"{core}\n"
    for g in host.gpu.inventory().gpus:
        files[f"/proc/driver/nvidia/gpus/{g.sysfs_bdf}/information"] = f"Model: H100\nDevice Minor: {g.index}\n"
        files[f"/sys/bus/pci/devices/{g.sysfs_bdf}/local_cpulist"] = "0-1,4-5\n" if g.index < 2 else "2-3,6-7\n"
    if gres_conf is not None:
        files["/etc/slurm/gres.conf"] = gres_conf
    testkit.write_files(tmp_path / "root", files)
    return host


def _gres(tmp_path, conf):
    return {r.subject: r for r in testkit.run(topo_checks.gres, _gres_host(tmp_path, conf))}


def test_gres_cores_on_each_gpus_own_node_pass(tmp_path):
    results = _gres(tmp_path, "# site file\nName=gpu File=/dev/nvidia[0-1] Cores=0-1\n"
                              "Name=gpu File=/dev/nvidia[2-3] Cores=2-3  # socket 1\n")
    assert {s: r.status.value for s, r in results.items()} == dict.fromkeys(
        ("/dev/nvidia0", "/dev/nvidia1", "/dev/nvidia2", "/dev/nvidia3"), "PASS")


def test_gres_cores_of_the_other_socket_fail(tmp_path):
    results = _gres(tmp_path, "Name=gpu File=/dev/nvidia[0-1] Cores=0-1\nName=gpu File=/dev/nvidia[2-3] Cores=0-1\n")
    assert results["/dev/nvidia0"].status.value == "PASS"
    assert results["/dev/nvidia2"].status.value == "WARN"
    assert "off its NUMA node" in results["/dev/nvidia2"].message


def test_gres_cores_given_as_linux_cpu_ids_are_caught(tmp_path):
    results = _gres(tmp_path, "Name=gpu File=/dev/nvidia[0-1] Cores=0-1,4-5\n")
    assert "does not have" in results["/dev/nvidia0"].message
    assert results["/dev/nvidia0"].status.value == "WARN"


def test_gres_lines_of_other_nodes_and_autodetect(tmp_path):
    results = _gres(tmp_path, "NodeName=other[01-04] Name=gpu File=/dev/nvidia[0-3] Cores=2-3\nAutoDetect=nvml\n")
    assert [r.status.value for r in results.values()] == ["PASS"]
    assert "AutoDetect=nvml" in next(iter(results.values())).message


def test_gres_bad_lines_and_missing_file(tmp_path):
    results = _gres(tmp_path, "Name=gpu File=/dev/nvidia[0-1] Cores=zero\nName=gpu File=/dev/nvidia[2-3]\n")
    assert results["/etc/slurm/gres.conf"].status.value == "WARN"
    assert "line 1" in results["/etc/slurm/gres.conf"].message
    assert "no Cores=" in results["/dev/nvidia2"].message
    assert {r.status.value for r in testkit.run(topo_checks.gres, _gres_host(tmp_path / "none", None))} == {"SKIP"}



def test_the_lent_gpus_quick_bench_passes_against_its_links():
    """Recorded on the lent H100 with its expectations: judged against the links alone, every
    figure passes at its family's spread bound (fp8 0.12: the shipped baselines' measured bound)."""
    doc = json.loads((FIXTURES / "device" / "topology-h100" / "bench-quick.json").read_text())
    verdicts = _verdicts(doc, baseline="topology")
    rows = {r.metric: r for r in verdicts.rows}
    assert verdicts.status == "OK"
    assert {r.status for r in rows.values() if r.status != "SKIP"} == {"PASS"}
    assert rows["gemm.bf16"].expected == pytest.approx(685.1, abs=0.1)  # from NVML's SMs and clock
