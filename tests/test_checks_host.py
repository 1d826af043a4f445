"""Host checks (host, cpu, memory, kernel, numa): a passing and a failing fixture tree for each,
built from real file formats (recorded on this Debian 12 VM under fixtures/proc)."""

import json
from pathlib import Path

from gpunode.checks import cpu, host, kernel, memory, numa
from gpunode.host.facts.cpulist import format_cpulist
from gpunode.host.gpu.model import GpuInventory
from testkit import run, statuses, tree_host, with_gpu

FIX = Path(__file__).parent / "fixtures"
PROC = FIX / "proc"
MEMINFO = (PROC / "meminfo.txt").read_text()  # MemTotal 24684084 kB
H100 = GpuInventory.from_json(json.loads((FIX / "nvml" / "h100-sxm-1gpu.json").read_text()))


def one(check, tmp_path, files, **kw):
    results = run(check, tree_host(tmp_path, files=files), **kw)
    assert len(results) == 1, results
    return results[0]


# --- host ---------------------------------------------------------------------------------

def test_os_reports_pretty_name_and_kernel(tmp_path):
    r = one(host.os_version, tmp_path, {"/etc/os-release": (PROC / "os-release-debian12.txt").read_text(),
                                        "/proc/sys/kernel/osrelease": "6.8.0-1015-nvidia\n"})
    assert r.status.value == "PASS" and r.message == "Debian GNU/Linux 12 (bookworm); kernel 6.8.0-1015-nvidia"
    assert r.observed == {"os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.8.0-1015-nvidia"}


def test_os_falls_back_to_usr_lib_and_skips_when_nothing_readable(tmp_path):
    r = one(host.os_version, tmp_path / "a", {"/usr/lib/os-release": 'NAME="Ubuntu"\nVERSION="22.04.4 LTS (Jammy Jellyfish)"\n'})
    assert r.message == "Ubuntu 22.04.4 LTS (Jammy Jellyfish); kernel unknown"
    r = one(host.os_version, tmp_path / "b", {})
    assert r.status.value == "SKIP" and "os-release" in r.message


def test_smt_reported_and_skipped_when_absent(tmp_path):
    r = one(host.smt, tmp_path / "a", {"/sys/devices/system/cpu/smt/control": "on\n",
                                       "/sys/devices/system/cpu/smt/active": "1\n"})
    assert r.status.value == "PASS" and r.message == "control on, siblings active"
    assert one(host.smt, tmp_path / "b", {}).status.value == "SKIP"


# --- cpu ----------------------------------------------------------------------------------

def cpu_tree(online="0-3", present="0-3", smt=None, packages=(0, 0, 1, 1)):
    files = {"/sys/devices/system/cpu/online": online + "\n", "/sys/devices/system/cpu/present": present + "\n",
             "/proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Platinum 8480C\n"}
    for i, pkg in enumerate(packages):
        files[f"/sys/devices/system/cpu/cpu{i}/topology/physical_package_id"] = f"{pkg}\n"
        files[f"/sys/devices/system/cpu/cpu{i}/topology/core_id"] = f"{i}\n"
    if smt:
        files["/sys/devices/system/cpu/smt/control"] = smt + "\n"
    return files


def test_topology_counts_sockets_cores_threads(tmp_path):
    r = one(cpu.topology, tmp_path, cpu_tree())
    assert r.message == "Intel(R) Xeon(R) Platinum 8480C; 2 socket(s), 4 cores, 4 online CPUs"
    assert one(cpu.topology, tmp_path / "none", {}).status.value == "SKIP"


def test_offline_cpus_warn_unless_smt_is_off(tmp_path):
    assert one(cpu.online, tmp_path / "a", cpu_tree()).status.value == "PASS"
    r = one(cpu.online, tmp_path / "b", cpu_tree(online="0-1,3"))
    assert r.status.value == "WARN" and "1 of 4 present CPUs offline: 2" in r.message
    r = one(cpu.online, tmp_path / "c", cpu_tree(online="0-1", smt="off"))
    assert r.status.value == "PASS" and "SMT off took 2-3 offline" in r.message
    r = one(cpu.online, tmp_path / "d", cpu_tree(online="0", smt="off"))  # more than the siblings
    assert r.status.value == "WARN"
    assert format_cpulist({0, 1, 2, 5, 7, 8}) == "0-2,5,7-8"


# --- memory -------------------------------------------------------------------------------

def test_swap_off_passes_and_swap_on_warns(tmp_path):
    r = one(memory.swap, tmp_path / "a", {"/proc/swaps": (PROC / "swaps-none.txt").read_text()})
    assert r.status.value == "PASS" and r.message == "no swap"
    r = one(memory.swap, tmp_path / "b", {"/proc/swaps": (PROC / "swaps-file.txt").read_text()})
    assert r.status.value == "WARN" and r.message == "swap active: /tmp/swaptest (file, 64.0 MiB)"
    assert one(memory.swap, tmp_path / "c", {}).status.value == "SKIP"


def meminfo_with(**values):
    lines = []
    for line in MEMINFO.splitlines():
        key = line.split(":")[0]
        if key in values:
            unit = " kB" if line.rstrip().endswith("kB") else ""
            line = f"{key}:{values[key]:>16}{unit}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_hugepages_none_and_a_healthy_pool_pass(tmp_path):
    r = one(memory.hugepages, tmp_path / "a", {"/proc/meminfo": MEMINFO})
    assert r.status.value == "PASS" and "no static hugepages" in r.message
    r = one(memory.hugepages, tmp_path / "b", {"/proc/meminfo": (PROC / "meminfo-hugepages16.txt").read_text(),
                                               "/proc/cmdline": "BOOT_IMAGE=/vmlinuz hugepages=16\n"})
    assert r.status.value == "PASS" and r.message == "16 x 2.0 MiB pages, 16 free"


def test_hugepages_shortfall_exhaustion_and_hoarding_warn(tmp_path):
    real16 = (PROC / "meminfo-hugepages16.txt").read_text()
    r = one(memory.hugepages, tmp_path / "a", {"/proc/meminfo": real16,
                                               "/proc/cmdline": "ro hugepages=64 quiet\n"})
    assert r.status.value == "WARN" and "only 16 of 64 hugepages" in r.message
    r = one(memory.hugepages, tmp_path / "b", {
        "/proc/meminfo": real16, "/proc/cmdline": "ro hugepagesz=1G hugepages=8\n",
        "/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages": "2\n"})
    assert r.status.value == "WARN" and "only 2 of 8 hugepages (1048576 kB)" in r.message
    exhausted = real16.replace("HugePages_Free:       16", "HugePages_Free:        0")
    r = one(memory.hugepages, tmp_path / "c", {"/proc/meminfo": exhausted})
    assert r.status.value == "WARN" and "pool exhausted" in r.message
    hoard = meminfo_with(HugePages_Total=8000, HugePages_Free=8000, Hugetlb=8000 * 2048)
    r = one(memory.hugepages, tmp_path / "d", {"/proc/meminfo": hoard})
    assert r.status.value == "WARN" and "15.6 GiB of 23.5 GiB RAM is held in hugepage pools" in r.message


def shm_files(shm_line):
    mounts = (PROC / "mounts.txt").read_text().replace("tmpfs /dev/shm tmpfs rw,relatime,size=24684084k 0 0\n", "")
    return {"/proc/meminfo": MEMINFO, "/proc/mounts": mounts + (shm_line + "\n" if shm_line else "")}


def test_shm_big_enough_passes(tmp_path):
    r = one(memory.shm, tmp_path / "a", shm_files("tmpfs /dev/shm tmpfs rw,relatime,size=24684084k 0 0"))
    assert r.status.value == "PASS" and r.message == "23.5 GiB of 23.5 GiB RAM"
    r = one(memory.shm, tmp_path / "b", shm_files("tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0"))  # tmpfs default 50%
    assert r.status.value == "PASS" and r.observed == 24684084 * 1024 // 2


def test_shm_docker_default_and_missing_warn(tmp_path):
    # What Docker mounts by default (--shm-size 64m), as /proc/mounts shows it.
    r = one(memory.shm, tmp_path / "a", shm_files("shm /dev/shm tmpfs rw,nosuid,nodev,noexec,relatime,size=65536k 0 0"))
    assert r.status.value == "WARN" and r.message.startswith("64.0 MiB of 23.5 GiB RAM: too small")
    r = one(memory.shm, tmp_path / "b", shm_files("tmpfs /dev/shm tmpfs rw,size=25% 0 0"))
    assert r.status.value == "WARN"
    r = one(memory.shm, tmp_path / "c", shm_files(None))
    assert r.status.value == "WARN" and "not a mount point" in r.message
    assert one(memory.shm, tmp_path / "d", {}).status.value == "SKIP"


def test_shm_above_ram_warns(tmp_path):
    # The recorded H200: 128 GiB of /dev/shm on a 125.9 GiB host. tmpfs pages are RAM: a full
    # /dev/shm above RAM ends in the OOM killer instead of ENOSPC.
    r = one(memory.shm, tmp_path / "a", shm_files("tmpfs /dev/shm tmpfs rw,relatime,size=24684085k 0 0"))
    assert r.status.value == "WARN" and "larger than RAM" in r.message


def test_shm_not_tmpfs_warns_and_an_unreadable_size_skips(tmp_path):
    r = one(memory.shm, tmp_path / "a", shm_files("/dev/sda2 /dev/shm ext4 rw,relatime 0 0"))
    assert r.status.value == "WARN" and r.message == "/dev/shm is ext4, not tmpfs"
    r = one(memory.shm, tmp_path / "b", shm_files("tmpfs /dev/shm tmpfs rw,size=lots 0 0"))
    assert r.status.value == "SKIP" and r.message == "cannot read the tmpfs size option size=lots"
    r = one(memory.shm, tmp_path / "c", shm_files("tmpfs /dev/shm tmpfs rw,size=0 0 0"))  # 0: unlimited
    assert r.status.value == "WARN" and r.message.startswith("unlimited of 23.5 GiB RAM: larger than RAM")
    r = one(memory.shm, tmp_path / "b", shm_files("tmpfs /dev/shm tmpfs rw,size=150% 0 0"))
    assert r.status.value == "WARN" and r.observed == 24684084 * 1024 * 150 // 100
    r = one(memory.shm, tmp_path / "c", shm_files("tmpfs /dev/shm tmpfs rw,size=0 0 0"))  # 0: unlimited
    assert r.status.value == "WARN" and r.message.startswith("unlimited of 23.5 GiB RAM: larger than RAM")


SYSTEM_CONF = "#  This file is part of systemd.\n[Manager]\n#DefaultLimitMEMLOCK=8M\n#DefaultLimitNOFILE=1024:524288\n"


def test_systemd_memlock_infinity_in_a_dropin_passes(tmp_path):
    r = one(memory.memlock_systemd, tmp_path, {
        "/etc/systemd/system.conf": SYSTEM_CONF,
        "/usr/lib/systemd/system.conf.d/10-vendor.conf": "[Manager]\nDefaultLimitMEMLOCK=64M\n",
        "/etc/systemd/system.conf.d/90-gpunode.conf": "[Manager]\nDefaultLimitMEMLOCK=infinity\n"})
    assert r.status.value == "PASS" and "/etc/systemd/system.conf.d/90-gpunode.conf" in r.message


def test_systemd_memlock_unset_or_limited_warns(tmp_path):
    r = one(memory.memlock_systemd, tmp_path / "a", {"/etc/systemd/system.conf": SYSTEM_CONF})
    assert r.status.value == "WARN" and "not set" in r.message
    r = one(memory.memlock_systemd, tmp_path / "b", {
        "/etc/systemd/system.conf": SYSTEM_CONF,
        "/etc/systemd/system.conf.d/50-x.conf": "[Manager]\nDefaultLimitMEMLOCK=infinity\n",
        "/usr/lib/systemd/system.conf.d/60-vendor.conf": "[Manager]\nDefaultLimitMEMLOCK=8M:infinity\n"})
    assert r.status.value == "WARN" and "DefaultLimitMEMLOCK=8M:infinity" in r.message  # later file wins
    # Same file name: /etc hides /usr/lib.
    r = one(memory.memlock_systemd, tmp_path / "c", {
        "/etc/systemd/system.conf": SYSTEM_CONF,
        "/etc/systemd/system.conf.d/60-vendor.conf": "[Manager]\nDefaultLimitMEMLOCK=infinity\n",
        "/usr/lib/systemd/system.conf.d/60-vendor.conf": "[Manager]\nDefaultLimitMEMLOCK=8M\n"})
    assert r.status.value == "PASS"
    # A key outside [Manager] is not the manager's.
    r = one(memory.memlock_systemd, tmp_path / "d", {"/etc/systemd/system.conf": "[Other]\nDefaultLimitMEMLOCK=infinity\n"})
    assert r.status.value == "WARN"
    assert one(memory.memlock_systemd, tmp_path / "e", {}).status.value == "SKIP"


def test_process_memlock(tmp_path):
    real = (PROC / "limits.txt").read_text()
    r = one(memory.memlock_process, tmp_path / "a", {"/proc/self/limits": real})
    assert r.status.value == "WARN" and r.message.startswith("soft/hard 8.0 MiB/8.0 MiB")
    unlimited = real.replace("Max locked memory         8388608              8388608",
                             "Max locked memory         unlimited            unlimited")
    assert unlimited != real
    r = one(memory.memlock_process, tmp_path / "b", {"/proc/self/limits": unlimited})
    assert r.status.value == "PASS" and r.message == "unlimited"
    assert one(memory.memlock_process, tmp_path / "c", {"/proc/self/limits": "Limit  Soft\n"}).status.value == "SKIP"


# --- kernel -------------------------------------------------------------------------------

DGX_CMDLINE = ("BOOT_IMAGE=/boot/vmlinuz-6.8.0-1015-nvidia root=UUID=0f1e ro iommu=pt intel_iommu=on "
               "isolcpus=0-3 nohz_full=0-3 transparent_hugepage=always quiet splash\n")


def test_cmdline_facts_reported(tmp_path):
    r = one(kernel.cmdline_facts, tmp_path / "a", {"/proc/cmdline": DGX_CMDLINE})
    assert r.status.value == "PASS"
    assert r.observed == {"isolcpus": "0-3", "nohz_full": "0-3", "iommu": "pt", "intel_iommu": "on",
                          "transparent_hugepage": "always"}
    assert one(kernel.cmdline_facts, tmp_path / "b", {}).status.value == "SKIP"


def test_cmdline_thp_must_agree_with_the_profile(tmp_path):
    assert one(kernel.cmdline_thp, tmp_path / "a", {"/proc/cmdline": DGX_CMDLINE}).status.value == "PASS"
    r = one(kernel.cmdline_thp, tmp_path / "b", {"/proc/cmdline": DGX_CMDLINE}, profile="inference")
    assert r.status.value == "WARN" and "profile inference wants madvise" in r.message
    never = DGX_CMDLINE.replace("transparent_hugepage=always", "transparent_hugepage=never")
    assert one(kernel.cmdline_thp, tmp_path / "c", {"/proc/cmdline": never}).status.value == "WARN"
    r = one(kernel.cmdline_thp, tmp_path / "d", {"/proc/cmdline": (PROC / "cmdline-firecracker.txt").read_text()})
    assert r.status.value == "PASS" and r.observed is None


def test_cmdline_restrictions(tmp_path):
    assert one(kernel.cmdline_restrictions, tmp_path / "a", {"/proc/cmdline": DGX_CMDLINE}).status.value == "PASS"
    r = one(kernel.cmdline_restrictions, tmp_path / "b", {"/proc/cmdline": "ro mem=64G numa=off maxcpus=8\n"})
    assert r.status.value == "WARN"
    assert r.observed == ["mem=64G (limits the RAM the kernel uses)", "maxcpus=8 (brings up only this many CPUs at boot)",
                          "numa=off (numa=off fakes a single NUMA node: GPU/NIC locality is lost)"]
    # numa=noacpi is something else; init's own arguments after -- are not the kernel's.
    r = one(kernel.cmdline_restrictions, tmp_path / "c", {"/proc/cmdline": "ro numa=noacpi -- mem=1\n"})
    assert r.status.value == "PASS"


def test_tainted(tmp_path):
    assert one(kernel.tainted, tmp_path / "a", {"/proc/sys/kernel/tainted": "0\n"}).message == "not tainted"
    r = one(kernel.tainted, tmp_path / "b", {"/proc/sys/kernel/tainted": "4097\n"})  # P + O: the NVIDIA driver
    assert r.status.value == "PASS" and "[PO]" in r.message
    r = one(kernel.tainted, tmp_path / "c", {"/proc/sys/kernel/tainted": str(4097 | 16 | 128) + "\n"})
    assert r.status.value == "WARN" and "M (machine check exception), D (kernel died (oops or BUG))" in r.message
    assert one(kernel.tainted, tmp_path / "d", {}).status.value == "SKIP"


# --- numa ---------------------------------------------------------------------------------

def node_files(mem=(1056000000, 1056900000), cpus=("0-55,112-167", "56-111,168-223")):
    files = {}
    for i, (m, c) in enumerate(zip(mem, cpus, strict=True)):
        base = f"/sys/devices/system/node/node{i}"
        files[f"{base}/cpulist"] = c + "\n"
        files[f"{base}/meminfo"] = f"Node {i} MemTotal:       {m} kB\nNode {i} MemFree:        {m // 2} kB\n"
    files["/sys/devices/system/node/online"] = f"0-{len(mem) - 1}\n"
    return files


def test_numa_nodes_balanced_pass(tmp_path):
    r = one(numa.nodes, tmp_path, node_files())
    assert r.status.value == "PASS"
    assert r.message == "2 node(s), memory balanced: node0: CPUs 0-55,112-167; node1: CPUs 56-111,168-223"
    assert r.observed["node0"]["memory"] == 1056000000 * 1024


def meminfo_of(kib: int) -> str:
    return MEMINFO.replace("MemTotal:       24684084 kB", f"MemTotal:       {kib} kB")


def test_numa_nodes_message_has_no_figure_that_moves(tmp_path):
    """Free memory and node memory still growing (deferred page init) must not reach the message:
    a live audit and its snapshot, taken moments apart, read the same."""
    first = one(numa.nodes, tmp_path / "a", {**node_files(), "/proc/meminfo": meminfo_of(2112900000)})
    files = node_files()
    files = {k: v.replace("MemFree:        528000000", "MemFree:        1") for k, v in files.items()}
    later = one(numa.nodes, tmp_path / "b", {**files, "/proc/meminfo": meminfo_of(2112900000)})
    assert first.message == later.message and "GiB" not in first.message


def test_numa_nodes_cross_checked_with_meminfo(tmp_path):
    # Two nodes that hold only a part of MemTotal: their balance cannot be judged from them.
    r = one(numa.nodes, tmp_path / "a", {**node_files(mem=(5000000, 5000000)), "/proc/meminfo": meminfo_of(131981020)})
    assert r.status.value == "WARN" and "adds up to 9.5 GiB but /proc/meminfo has 125.9 GiB" in r.message
    assert r.observed["meminfo_total"] == 131981020 * 1024
    # Adding up (within the kernel's own pages): judged as before.
    r = one(numa.nodes, tmp_path / "b", {**node_files(), "/proc/meminfo": meminfo_of(2112900000 + 20000000)})
    assert r.status.value == "PASS" and "do not add up" not in r.message
    # One node on a VM whose memory is still being initialised (the recorded H100/H200): said, not judged.
    single = node_files(mem=(5074416,), cpus=("0-15",))
    r = one(numa.nodes, tmp_path / "c", {**single, "/proc/meminfo": meminfo_of(131981020)})
    assert r.status.value == "PASS" and "do not add up to MemTotal" in r.message


def test_numa_nodes_missing_dimms_or_memoryless_warn(tmp_path):
    r = one(numa.nodes, tmp_path / "a", node_files(mem=(1056000000, 792000000)))
    assert r.status.value == "WARN" and "memory unbalanced" in r.message
    r = one(numa.nodes, tmp_path / "b", node_files(mem=(1056000000, 0)))
    assert r.status.value == "WARN" and "node1 has CPUs but no memory" in r.message
    # A CPU-less node (GPU HBM or CXL memory) is not a missing DIMM.
    files = node_files(mem=(1056000000, 1056900000, 99614720), cpus=("0-55,112-167", "56-111,168-223", ""))
    r = one(numa.nodes, tmp_path / "c", files)
    assert r.status.value == "PASS" and "3 node(s)" in r.message
    assert one(numa.nodes, tmp_path / "d", {}).status.value == "SKIP"


def gpu_host(tmp_path, node, files=None):
    pci = "/sys/bus/pci/devices/0000:00:06.0"
    files = {**(files or {}), f"{pci}/numa_node": f"{node}\n", f"{pci}/local_cpulist": "0-55,112-167\n"}
    return tree_host(tmp_path, files=files, inventory=H100)


def test_gpu_numa_locality(tmp_path):
    r = run(numa.gpu_locality, gpu_host(tmp_path / "a", 0, node_files()))
    assert statuses(r) == ["PASS"] and r[0].subject == "GPU0" and "node 0, local CPUs 0-55,112-167" in r[0].message
    r = run(numa.gpu_locality, gpu_host(tmp_path / "b", -1, node_files()))
    assert statuses(r) == ["WARN"] and "numa_node -1 on a multi-node host" in r[0].message
    single = node_files(mem=(1056000000,), cpus=("0-223",))
    assert statuses(run(numa.gpu_locality, gpu_host(tmp_path / "c", -1, single))) == ["PASS"]


def test_gpu_numa_skips_without_gpu_or_sysfs(tmp_path):
    r = run(numa.gpu_locality, tree_host(tmp_path / "a", files=node_files()))
    assert statuses(r) == ["SKIP"] and "no NVIDIA driver/NVML" in r[0].message
    r = run(numa.gpu_locality, tree_host(tmp_path / "b", files=node_files(), inventory=H100))
    assert statuses(r) == ["SKIP"] and "numa_node" in r[0].message
    no_bus = with_gpu(H100, pci_bus_id=None)
    r = run(numa.gpu_locality, tree_host(tmp_path / "c", files=node_files(), inventory=no_bus))
    assert statuses(r) == ["SKIP"]


# === mutation survivors: kernel, cpu, numa (benchmarks/mutation.py) ===========================
# Kept as one block at the end of the file; each test pins a verdict a surviving mutant changed.

def test_tainted_decodes_every_documented_bit(tmp_path):
    # Documentation/admin-guide/tainted-kernels.rst, bits 0-18 in order.
    every = (1 << 19) - 1
    r = one(kernel.tainted, tmp_path / "a", {"/proc/sys/kernel/tainted": f"{every}\n"})
    assert r.status.value == "WARN" and r.expected == 0 and r.observed == every
    assert r.message == (f"tainted {every} [PFSRMBUDAWCIOELKXTN]: M (machine check exception), "
                         "B (bad page referenced), D (kernel died (oops or BUG)), L (soft lockup) since boot")
    # Every bit that is not a health problem, by its meaning.
    harmless = sum(1 << b for b in (0, 1, 2, 3, 6, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18))
    r = one(kernel.tainted, tmp_path / "b", {"/proc/sys/kernel/tainted": f"{harmless}\n"})
    assert r.status.value == "PASS" and r.message == (
        f"tainted {harmless} [PFSRUAWCIOEKXTN]: proprietary module, module force-loaded, unsafe SMP / out of spec, "
        "module force-unloaded, tainted on request, ACPI table overridden, kernel warning, staging driver, "
        "firmware bug workaround, out-of-tree module, unsigned module, live patched, distribution taint, "
        "randstruct plugin, in-kernel test (not a health problem)")


def test_cmdline_facts_show_bare_flags_without_a_value(tmp_path):
    r = one(kernel.cmdline_facts, tmp_path, {"/proc/cmdline": "ro nosmt iommu=pt quiet\n"})
    assert r.status.value == "PASS" and r.message == "nosmt; iommu=pt"
    assert r.observed == {"nosmt": True, "iommu": "pt"}


def test_topology_observed_counts_and_partial_topology(tmp_path):
    r = one(cpu.topology, tmp_path / "a", cpu_tree())
    assert r.observed == {"model": "Intel(R) Xeon(R) Platinum 8480C", "sockets": 2, "cores": 4, "threads": 4}
    # Packages readable but no core_id: no socket/core shape in the message, sockets still counted.
    files = {k: v for k, v in cpu_tree().items() if not k.endswith("/core_id")}
    r = one(cpu.topology, tmp_path / "b", files)
    assert r.status.value == "PASS" and r.message == "Intel(R) Xeon(R) Platinum 8480C; 4 online CPUs"
    assert r.observed == {"model": "Intel(R) Xeon(R) Platinum 8480C", "sockets": 2, "cores": None, "threads": 4}


def test_cpu_online_skips_when_present_or_online_is_missing(tmp_path):
    files = cpu_tree()
    for n, gone in enumerate(("/sys/devices/system/cpu/present", "/sys/devices/system/cpu/online")):
        r = one(cpu.online, tmp_path / str(n), {k: v for k, v in files.items() if k != gone})
        assert r.status.value == "SKIP" and "knob absent on this host" in r.message


def test_numa_nodes_ignores_entries_that_are_not_nodeN(tmp_path):
    files = {**node_files(), "/sys/devices/system/node/has_cpu": "0-223\n",
             "/sys/devices/system/node/possible": "0-1\n", "/sys/devices/system/node/node_x/uevent": "\n"}
    r = one(numa.nodes, tmp_path, files)
    assert r.status.value == "PASS" and r.message.startswith("2 node(s), memory balanced: node0:")


def test_numa_single_node_is_not_called_balanced(tmp_path):
    r = one(numa.nodes, tmp_path, node_files(mem=(1056000000,), cpus=("0-15",)))
    assert r.status.value == "PASS" and r.message == "1 node(s): node0: CPUs 0-15"


def test_numa_memory_balance_at_exactly_the_threshold(tmp_path):
    # Smaller node at exactly MEMORY_BALANCE (0.9) of the larger: balanced; one kB less: not.
    r = one(numa.nodes, tmp_path / "a", node_files(mem=(1000000, 900000)))
    assert r.status.value == "PASS" and "memory balanced" in r.message
    r = one(numa.nodes, tmp_path / "b", node_files(mem=(1000000, 899999)))
    assert r.status.value == "WARN" and "memory unbalanced" in r.message


def test_numa_node_sum_at_exactly_the_tolerance(tmp_path):
    # MemTotal 100000 kB: the nodes may fall short by NODE_SUM_TOLERANCE (2 %, 2000 kB) and still count.
    r = one(numa.nodes, tmp_path / "a", {**node_files(mem=(49000, 49000)), "/proc/meminfo": meminfo_of(100000)})
    assert r.status.value == "PASS" and r.message.startswith("2 node(s), memory balanced") and "add up" not in r.message
    r = one(numa.nodes, tmp_path / "b", {**node_files(mem=(49000, 48999)), "/proc/meminfo": meminfo_of(100000)})
    assert r.status.value == "WARN" and "per-node figures are incomplete" in r.message


# --- memory: edges and inputs the checks must read right (mutation survivors) -------------------

HUGE16 = (PROC / "meminfo-hugepages16.txt").read_text()  # 16 x 2 MiB, all free, none reserved


def test_hugepages_one_free_page_is_not_exhaustion(tmp_path):
    one_free = HUGE16.replace("HugePages_Free:       16", "HugePages_Free:        1")
    r = one(memory.hugepages, tmp_path / "a", {"/proc/meminfo": one_free})
    assert r.status.value == "PASS" and r.message == "16 x 2.0 MiB pages, 1 free"
    # The one free page promised to a mapping: nothing is left.
    promised = one_free.replace("HugePages_Rsvd:        0", "HugePages_Rsvd:        1")
    r = one(memory.hugepages, tmp_path / "b", {"/proc/meminfo": promised})
    assert r.status.value == "WARN" and "pool exhausted: 1 free, 1 promised to mappings" in r.message
    # A meminfo without HugePages_Rsvd (kernels before 2.6.17) promises nothing.
    no_rsvd = one_free.replace("HugePages_Rsvd:        0\n", "")
    r = one(memory.hugepages, tmp_path / "c", {"/proc/meminfo": no_rsvd})
    assert r.status.value == "PASS" and r.observed["reserved"] == 0


def test_hugepages_only_hugepages_tokens_are_requests(tmp_path):
    # Other numeric kernel parameters are not hugepage requests.
    r = one(memory.hugepages, tmp_path, {"/proc/meminfo": MEMINFO,
                                         "/proc/cmdline": "BOOT_IMAGE=/vmlinuz ro loglevel=3 nr_cpus=64 quiet\n"})
    assert r.status.value == "PASS" and r.message == "no static hugepages (transparent hugepages serve large pages)"
    assert memory.hugepage_requests(["loglevel=3", "hugepages=8", "hugepagesz=1G", "hugepages=2",
                                     "hugepages=many"]) == {0: 8, 1048576: 2}


def test_shm_skips_when_either_input_is_missing(tmp_path):
    mounts = shm_files("tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0")["/proc/mounts"]
    r = one(memory.shm, tmp_path / "a", {"/proc/mounts": mounts})
    assert r.status.value == "SKIP" and "knob absent" in r.message
    r = one(memory.shm, tmp_path / "b", {"/proc/meminfo": MEMINFO})
    assert r.status.value == "SKIP" and "knob absent" in r.message


def test_systemd_memlock_slurmd_unit_decides(tmp_path):
    # slurmd's own limit is what Slurm jobs inherit, whatever DefaultLimitMEMLOCK says.
    unit = "[Service]\nExecStart=/usr/sbin/slurmd\nLimitMEMLOCK=infinity\n"
    r = one(memory.memlock_systemd, tmp_path / "a", {"/etc/systemd/system.conf": SYSTEM_CONF,
                                                     "/lib/systemd/system/slurmd.service": unit})
    assert r.status.value == "PASS"
    assert r.message == "slurmd LimitMEMLOCK=infinity (/lib/systemd/system/slurmd.service)"
    r = one(memory.memlock_systemd, tmp_path / "b", {
        "/etc/systemd/system.conf": "[Manager]\nDefaultLimitMEMLOCK=infinity\n",
        "/lib/systemd/system/slurmd.service": unit,
        "/etc/systemd/system/slurmd.service.d/50-site.conf": "[Service]\nLimitMEMLOCK=64M\n"})
    assert r.status.value == "WARN" and r.message.startswith(
        "slurmd LimitMEMLOCK=64M (/etc/systemd/system/slurmd.service.d/50-site.conf): Slurm jobs inherit it")
