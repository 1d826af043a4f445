"""Parsers of gpunode.host.facts on real recorded outputs (this Debian 12 VM), including failed,
truncated and foreign ones: none of those may read as a healthy answer."""

import json
from pathlib import Path

import pytest

from gpunode.host.facts import df
from gpunode.host.facts.infiniband import parse_rate, state_code
from gpunode.host.facts.procfs import (
    kernel_params,
    mount_at,
    mount_of,
    parse_meminfo,
    parse_mounts,
    parse_proc_limits,
    parse_size,
    unescape,
)
from gpunode.host.runner import ReplayRunner

PROC = Path(__file__).parent / "fixtures" / "proc"
DF = Path(__file__).parent / "fixtures" / "df"


def recorded(name):
    return json.loads((DF / name).read_text())


def replay(rec, paths):
    runner = ReplayRunner()
    runner.add(df.argv(paths), rec["rc"], rec["stdout"], rec["stderr"])
    return runner


def test_mounts_real_file_with_stacked_dev_shm():
    mounts = parse_mounts((PROC / "mounts.txt").read_text())
    shm = mount_at(mounts, "/dev/shm")
    assert shm.fstype == "tmpfs" and shm.option("size") == "24684084k" and shm.has("relatime")
    root = mount_of(mounts, "/tmp/x")
    assert (root.target, root.fstype, root.source) == ("/", "ext4", "/dev/vda")
    assert mount_of(mounts, "/sys/fs/cgroup/cpu/tasks").target == "/sys/fs/cgroup/cpu"
    assert mount_of(mounts, "/sys/fs/cgroupx").target == "/sys"  # a prefix of the name is not a parent


def test_mounts_escapes_and_truncated_lines():
    text = "/dev/nvme0n1p1 /mnt/my\\040data ext4 rw,noatime 0 0\n/dev/nvme1n1 /raid xf"
    mounts = parse_mounts(text)
    assert [m.target for m in mounts] == ["/mnt/my data"]  # the cut line is dropped, not misread
    assert unescape("a\\134b\\011c") == "a\\b\tc"


def test_meminfo_real_files():
    info = parse_meminfo((PROC / "meminfo.txt").read_text())
    assert info["MemTotal"] == 24684084 * 1024 and info["HugePages_Total"] == 0
    huge = parse_meminfo((PROC / "meminfo-hugepages16.txt").read_text())
    assert (huge["HugePages_Total"], huge["HugePages_Free"], huge["Hugepagesize"], huge["Hugetlb"]) == (
        16, 16, 2 << 20, 32 << 20)
    node = parse_meminfo((PROC / "node0-meminfo.txt").read_text())
    assert node["MemTotal"] == 4286668 * 1024  # "Node 0 " prefix dropped
    assert parse_meminfo("MemTotal:  12") == {"MemTotal": 12}
    assert parse_meminfo("garbage\nMemTotal:\n") == {}


def test_proc_limits_real_file():
    limits = parse_proc_limits((PROC / "limits.txt").read_text())
    assert limits["Max locked memory"].soft == "8388608" and limits["Max locked memory"].units == "bytes"
    assert limits["Max cpu time"].soft == "unlimited"
    assert limits["Max nice priority"].units == ""
    assert "Limit" not in limits and len(limits) == 16


def test_sizes_and_cmdline():
    assert parse_size("24684084k") == (24684084 * 1024, "")
    assert parse_size("64m") == (64 << 20, "") and parse_size("50%") == (50, "%")
    assert parse_size("lots") is None
    params = kernel_params((PROC / "cmdline-firecracker.txt").read_text())
    assert "mitigations=auto,no_guest_host,no_guest_guest" in params
    assert "--firecracker-init" not in params and "--" not in params  # init's arguments are not the kernel's


def test_ib_sysfs_strings():
    assert parse_rate("400 Gb/sec (4X NDR)") == 400.0 and parse_rate("2.5 Gb/sec (1X SDR)") == 2.5
    assert parse_rate("200 Gb/sec (Bonded)") == 200.0 and parse_rate("") is None and parse_rate(None) is None
    assert state_code("4: ACTIVE") == 4 and state_code("5: LinkUp") == 5 and state_code("ACTIVE") is None


def test_df_real_output():
    rec = recorded("ok.json")
    assert rec["argv"] == df.argv(["/dev/shm", "/tmp"])  # the fixture was recorded with our argv
    answer = df.free_space(replay(rec, ["/dev/shm", "/tmp"]), ["/dev/shm", "/tmp"])
    assert answer.error is None and not answer.problems
    assert answer.spaces["/dev/shm"].avail == 25276502016 and answer.spaces["/tmp"].size == 270553174016


def test_df_missing_path_is_named_and_others_still_read():
    rec = recorded("missing.json")
    paths = ["/dev/shm", "/tmp", "/scratch"]
    answer = df.free_space(replay(rec, paths), paths)
    assert rec["rc"] == 1 and answer.problems == {"/scratch": "No such file or directory"}
    assert set(answer.spaces) == {"/dev/shm", "/tmp"} and answer.error is None


def test_df_path_with_space_and_full_filesystem():
    rec = recorded("space.json")
    assert "/tmp/with space" in df.parse(rec["stdout"], rec["stderr"], ["/tmp/with space"]).spaces
    full = recorded("full.json")
    assert df.parse(full["stdout"], "", []).spaces["/tmp/dfcase"].avail == 4194304


@pytest.mark.parametrize("cut", [30, 60, 100])
def test_df_truncated_output_is_an_error_or_misses_the_path(cut):
    rec = recorded("ok.json")
    paths = ["/dev/shm", "/tmp"]
    rec = {**rec, "stdout": rec["stdout"][:cut]}
    answer = df.free_space(replay(rec, paths), paths)
    assert answer.error is not None or set(answer.spaces) != set(paths)


def test_df_foreign_or_failed_output_is_an_error():
    paths = ["/dev/shm", "/tmp"]
    posix = recorded("posix-format.json")
    answer = df.free_space(replay(posix, paths), paths)
    assert answer.error and "not df output" in answer.error and not answer.spaces
    failed = recorded("bad-option.json")
    answer = df.free_space(replay(failed, paths), paths)
    assert answer.error.startswith("df failed: df: option --output") and not answer.spaces


def test_df_not_run_and_timeout():
    answer = df.free_space(ReplayRunner(), ["/tmp"])
    assert answer.not_run and "not recorded" in answer.error
    runner = ReplayRunner()
    runner.add(df.argv(["/tmp"]), -9, "", "", timed_out=True)
    answer = df.free_space(runner, ["/tmp"])
    assert not answer.not_run and "did not answer" in answer.error


# --- architecture and IOMMU ------------------------------------------------------------------
# cpuinfo-arm64-neoverse-v2.txt is derived: written in the format of the arm64 kernel's
# /proc/cpuinfo (arch/arm64/kernel/cpuinfo.c) for a Neoverse V2 (Grace) CPU, not recorded.
H200_FILES = Path(__file__).parent / "fixtures" / "hosts" / "h200-1gpu" / "files"


def test_arch_from_kernel_then_cpuinfo(tmp_path):
    from gpunode.host.facts.arch import arch_from_cpuinfo, machine
    from testkit import tree_host

    assert arch_from_cpuinfo((H200_FILES / "proc/cpuinfo").read_text()) == "x86_64"  # recorded on the H200
    assert arch_from_cpuinfo((PROC / "cpuinfo-arm64-neoverse-v2.txt").read_text()) == "aarch64"
    assert arch_from_cpuinfo("processor\t: 0\nCPU implementer\t: 0x41\nCPU architecture: 7\n") == "armv7l"
    assert arch_from_cpuinfo("") is None and arch_from_cpuinfo("processor\t: 0\nvendor_id") is None  # truncated
    host = tree_host(tmp_path / "a", files={"/proc/sys/kernel/arch": "aarch64\n",
                                            "/proc/cpuinfo": (H200_FILES / "proc/cpuinfo").read_text()})
    assert machine(host) == "aarch64"  # the kernel's own word wins
    assert machine(tree_host(tmp_path / "b", files={})) is None


@pytest.mark.parametrize(("files", "groups", "why"), [
    ({"/proc/sys/kernel/arch": "x86_64\n", "/sys/kernel/iommu_groups/0/type": "identity\n",
      "/sys/kernel/iommu_groups/1/type": "identity\n"}, 2, None),
    ({"/proc/sys/kernel/arch": "x86_64\n"}, 0, "no IOMMU translates DMA here"),  # the recorded VMs: SWIOTLB
    ({"/sys/kernel/iommu_groups/7/type": "DMA\n"}, 1, None),  # architecture unknown: never ruled out on a guess
    ({"/proc/cpuinfo": (PROC / "cpuinfo-arm64-neoverse-v2.txt").read_text(),
      "/sys/kernel/iommu_groups/0/type": "DMA\n"}, 1, "this kernel is aarch64; its counterpart there is iommu.passthrough=1"),
])
def test_iommu_pt_applicability(tmp_path, files, groups, why):
    from gpunode.host.facts.iommu import iommu_groups, param_not_applicable
    from testkit import tree_host

    host = tree_host(tmp_path, files=files)
    assert iommu_groups(host) == groups
    found = param_not_applicable(host, "iommu", "pt")
    assert (found is None) if why is None else (why in found), found
    assert param_not_applicable(host, "transparent_hugepage", "always") is None  # not an IOMMU parameter


def test_iommu_enable_params_need_x86_only(tmp_path):
    from gpunode.host.facts.iommu import param_not_applicable
    from testkit import tree_host

    x86_without = tree_host(tmp_path / "a", files={"/proc/sys/kernel/arch": "x86_64\n"})
    assert param_not_applicable(x86_without, "intel_iommu", "on") is None  # turning it on is what it is for
    arm = tree_host(tmp_path / "b", files={"/proc/sys/kernel/arch": "aarch64\n"})
    assert "x86 IOMMU drivers" in param_not_applicable(arm, "intel_iommu", "on")


# --- tc qdiscs ----------------------------------------------------------------------------------
TC = Path(__file__).parent / "fixtures" / "tc"


def test_qdisc_parse_real_outputs():
    from gpunode.host.facts.qdisc import leaf_kinds, parse

    host = parse((TC / "host-eth0-pfifo_fast.json").read_text())
    assert [(q.dev, q.kind, q.root) for q in host] == [("lo", "noqueue", True), ("eth0", "pfifo_fast", True)]
    assert leaf_kinds(host, "eth0") == ["pfifo_fast"] and leaf_kinds(host, "eth9") == []
    mq = parse((TC / "netns-veth-mq-pfifo_fast.json").read_text())
    assert leaf_kinds(mq, "v0") == ["pfifo_fast", "pfifo_fast"]  # the children of mq, not mq itself
    assert [q.parent for q in mq if q.dev == "v0"] == [None, "8002:2", "8002:1"]


@pytest.mark.parametrize("text", ["", "[{\"kind\":\"noqueue\",\"handle\"", 'Option "-j" is unknown, try "tc -help".',
                                  '{"kind": "fq"}', '[{"handle": "0:"}]'])
def test_qdisc_parse_refuses_what_is_not_tcs_list(text):
    from gpunode.host.facts.qdisc import parse

    with pytest.raises(ValueError):
        parse(text)
