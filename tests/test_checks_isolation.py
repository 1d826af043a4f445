"""cpu.isolation: isolcpus=/nohz_full=/rcu_nocbs=/irqaffinity= judged on the recorded hosts (their
real command line, then isolation added to it) and on a constructed two-socket host with a GPU on
each NUMA node; the cpulists through the one bounded parser, malformed and huge ones included."""

from __future__ import annotations

from dataclasses import replace

import pytest

from gpunode.checks import isolation
from gpunode.host.facts.cpulist import parse_cpulist
from gpunode.host.facts.isolation import parse_isolation
from gpunode.host.facts.procfs import parse_cmdline
from gpunode.host.facts.slurm_conf import node_values
from gpunode.host.seam import snapshot_host
from testkit import HOSTS, derive_snapshot, fixture_host, run, tree_host

REAL = ["h100-sxm-1gpu", "h200-1gpu"]


def judged(host):
    results = run(isolation.isolation, host)
    assert len(results) == 1
    return results[0].status.value, results[0].message


@pytest.mark.parametrize("name", REAL)
def test_recorded_hosts_isolate_nothing_and_pass(name):
    cmdline = (HOSTS / name / "files/proc/cmdline").read_text()
    assert "isolcpus" not in cmdline and "nohz_full" not in cmdline
    assert judged(fixture_host(name)) == ("PASS", "no isolation configured")


def recorded_with(tmp_path, name, extra):
    """The recorded host, booted with `extra` added to its real command line."""
    cmdline = (HOSTS / name / "files/proc/cmdline").read_text()
    kernel, sep, init = cmdline.partition(" -- ")
    snap = derive_snapshot(name, tmp_path / "snap", files={"/proc/cmdline": f"{kernel} {extra}{sep}{init}"})
    return snapshot_host(snap)


@pytest.mark.parametrize("name", REAL)
def test_recorded_host_with_sound_isolation_passes(tmp_path, name):
    host = recorded_with(tmp_path, name, "isolcpus=managed_irq,domain,2-15 nohz_full=2-15 rcu_nocbs=2-15 "
                                         "irqaffinity=0-1")
    status, message = judged(host)
    assert status == "PASS", message
    assert message.startswith("housekeeping CPUs 0-1 of 0-15")
    assert "no /etc/slurm/slurm.conf" in message


@pytest.mark.parametrize("name", REAL)
def test_recorded_host_isolating_its_gpu_node_warns(tmp_path, name):
    # the VMs' GPU says numa_node -1 on a one-node host: it is node 0's GPU
    status, message = judged(recorded_with(tmp_path, name, "isolcpus=0-15"))
    assert status == "WARN"
    assert "NUMA node 0 (GPU 0000:00:06.0) keeps no housekeeping CPU" in message
    assert "every online CPU is isolated" in message
    assert "no managed_irq flag" in message


@pytest.mark.parametrize("name", REAL)
def test_recorded_host_with_cpus_it_does_not_have_warns(tmp_path, name):
    status, message = judged(recorded_with(tmp_path, name, "nohz_full=8-31 isolcpus=8-31"))
    assert status == "WARN"
    assert "nohz_full= names CPUs 16-31 that are not online (online 0-15)" in message


# A constructed two-socket host: 2 cores x 2 threads per socket, a GPU on each NUMA node.
#   socket 0: cores (0,4) (1,5)  node0 0-1,4-5  GPU 0000:18:00.0
#   socket 1: cores (2,6) (3,7)  node1 2-3,6-7  GPU 0000:9a:00.0
# Slurm's cores: 0={0,4} 1={1,5} 2={2,6} 3={3,7}; its abstract CPU ids 2k, 2k+1 are core k's threads.
def two_socket(tmp_path, cmdline, slurm_conf=None, hostname="testhost"):
    files = {"/proc/cmdline": cmdline + "\n", "/sys/devices/system/cpu/online": "0-7\n",
             "/sys/devices/system/node/node0/cpulist": "0-1,4-5\n",
             "/sys/devices/system/node/node1/cpulist": "2-3,6-7\n"}
    for cpu in range(8):
        package, core = (cpu % 4) // 2, cpu % 2
        files[f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id"] = f"{package}\n"
        files[f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id"] = f"{core}\n"
    for bdf, node in (("0000:18:00.0", 0), ("0000:9a:00.0", 1)):
        base = f"/sys/bus/pci/devices/{bdf}"
        files.update({f"{base}/vendor": "0x10de\n", f"{base}/class": "0x030200\n", f"{base}/numa_node": f"{node}\n"})
    if slurm_conf is not None:
        files["/etc/slurm/slurm.conf"] = slurm_conf
    host = tree_host(tmp_path / "root", files)
    return replace(host, facts=replace(host.facts, hostname=hostname))


GOOD = "isolcpus=managed_irq,domain,1,3,5,7 nohz_full=1,3,5,7 rcu_nocbs=1,3,5,7 irqaffinity=0,2,4,6"


def test_housekeeping_on_each_gpu_node_passes(tmp_path):
    status, message = judged(two_socket(tmp_path, GOOD))
    assert status == "PASS", message
    assert message.startswith("housekeeping CPUs 0,2,4,6 of 0-7")


def test_a_gpu_node_without_housekeeping_warns(tmp_path):
    status, message = judged(two_socket(tmp_path, "isolcpus=managed_irq,domain,2-3,6-7"))
    assert status == "WARN"
    assert message.startswith("NUMA node 1 (GPU 0000:9a:00.0) keeps no housekeeping CPU: all of 2-3,6-7")
    assert "node 0" not in message


def test_isolcpus_with_only_managed_irq_leaves_the_cpus_to_the_scheduler(tmp_path):
    """The kernel adds the domain flag only when no known flag is given: isolcpus=managed_irq,<cpus>
    keeps managed interrupts off those CPUs, and they still run tasks and housekeeping."""
    status, message = judged(two_socket(tmp_path, "isolcpus=managed_irq,2-3,6-7"))
    assert status == "PASS" and "housekeeping CPUs 0-7 of 0-7" in message
    iso = parse_isolation(parse_cmdline("isolcpus=managed_irq,2-3 nohz_full=3"), last=7)
    assert iso.off_scheduler == set() and iso.isolated == {3}
    assert parse_isolation(parse_cmdline("isolcpus=nohz,2-3"), last=7).isolated == {2, 3}


@pytest.mark.parametrize(("cmdline", "said"), [
    (GOOD.replace("irqaffinity=0,2,4,6", "irqaffinity=0-3"), "irqaffinity= sends interrupts to isolated CPUs 1,3"),
    ("isolcpus=managed_irq,domain,5,7 nohz_full=3,5,7", "nohz_full= CPUs 3 are not in isolcpus="),
    ("isolcpus=managed_irq,5,7 nohz_full=5,7", "nohz_full= CPUs 5,7 are in isolcpus= without its domain flag"),
    ("nohz_full=1,3", "nohz_full= CPUs 1,3 are not in isolcpus="),
    ("isolcpus=nohz,domain,managed_irq,1,3,5 nohz_full=1,3,5,7", "isolcpus=nohz and nohz_full= name different CPUs"),
    ("isolcpus=domian,managed_irq,1,3", "isolcpus flag 'domian' is unknown"),
    ("isolcpus=all", "isolcpus flag 'all' is unknown"),  # the kernel's isolcpus= reads a leading word as a flag
    ("nohz_full=2-3,6-7", "NUMA node 1 (GPU 0000:9a:00.0) keeps no housekeeping CPU"),
    ("isolcpus=1-x", "isolcpus=: bad cpulist '1-x'"),
    ("nohz_full=5-3", "nohz_full=: bad cpulist '5-3'"),
    ("isolcpus=0-999999999", "CPU 999999999 is beyond 65535"),
    ("rcu_nocbs=" + "1," * 5000 + "z", "rcu_nocbs=: bad cpulist '1,1,1,1,"),
    ("irqaffinity=", "irqaffinity= names no CPU"),
    ("isolcpus=managed_irq,domain", "isolcpus= names no CPU"),
    ("isolcpus=1,3,64-127", "isolcpus= names CPUs 64-127 that are not online (online 0-7)"),
])
def test_what_the_kernel_would_refuse_or_ignore_warns(tmp_path, cmdline, said):
    status, message = judged(two_socket(tmp_path, cmdline))
    assert status == "WARN"
    assert said in message
    assert len(message) < 2000  # a huge list is named, not echoed


def test_kernel_cpulist_forms_parse_through_the_one_parser():
    # kernel-parameters.rst "cpu lists": groups, N (the last CPU) and all
    assert parse_cpulist("100-200:2/25") == {100, 101, 125, 126, 150, 151, 175, 176, 200}
    assert parse_cpulist("16-N", last=31) == set(range(16, 32))
    assert parse_cpulist("all", last=7) == set(range(8))
    for bad in ("16-N", "0-9:3/2", "0-9:0/2", "1_0", "+3", "٣"):
        with pytest.raises(ValueError, match="bad cpulist"):
            parse_cpulist(bad)
    iso = parse_isolation(parse_cmdline("isolcpus=nohz,domain,2-N nohz_full=2-N rcu_nocbs"), last=7)
    assert iso.cpus == {"isolcpus": set(range(2, 8)), "nohz_full": set(range(2, 8)), "rcu_nocbs": set()}
    assert iso.flags == {"nohz", "domain"} and not iso.errors
    assert parse_isolation(parse_cmdline("isolcpus=3"), last=7).flags == {"domain"}


SLURM = "ClusterName=c\nNodeName=DEFAULT Sockets=2 CoresPerSocket=2 ThreadsPerCore=2 {spec}\nNodeName=gpu[01-04] {line}\n"


@pytest.mark.parametrize(("spec", "line", "status", "said"), [
    ("", "CpuSpecList=0,4", "PASS", None),  # abstract 0 -> core 0 {0,4}, 4 -> core 2 {2,6}
    ("", "CpuSpecList=0-1,4-5", "PASS", None),
    ("CoreSpecCount=2", "", "PASS", None),  # from the DEFAULT line
    ("", "CoreSpecCount=1", "WARN", "CoreSpecCount=1 but the housekeeping CPUs span 2 core(s)"),
    ("", "CpuSpecList=0-3", "WARN", "CpuSpecList=0-3 reserves CPUs 0-1,4-5 but the housekeeping cores are CPUs 0,2,4,6"),
    ("", "CpuSpecList=zz", "WARN", "CpuSpecList=zz is not a CPU list"),
    ("", "RealMemory=1000", "WARN", "reserves no cores for the system"),
])
def test_slurm_reserved_cores_match_the_housekeeping_cores(tmp_path, spec, line, status, said):
    host = two_socket(tmp_path, GOOD, SLURM.format(spec=spec, line=line), hostname="gpu03.cluster")
    got, message = judged(host)
    assert got == status, message
    assert said is None or said in message


def test_without_isolated_cpus_slurm_need_reserve_nothing(tmp_path):
    # rcu_nocbs= and irqaffinity= alone isolate no CPU from the scheduler
    host = two_socket(tmp_path, "rcu_nocbs=1-7 irqaffinity=0", SLURM.format(spec="", line=""), hostname="gpu01")
    assert judged(host) == ("PASS", "housekeeping CPUs 0-7 of 0-7")


def test_slurm_without_this_node_is_not_compared(tmp_path):
    host = two_socket(tmp_path, GOOD, SLURM.format(spec="", line="CoreSpecCount=9"), hostname="login1")
    status, message = judged(host)
    assert status == "PASS" and "no NodeName line for login1" in message


def test_node_line_lookup():
    text = "NodeName=DEFAULT CPUs=8\n# NodeName=gpu01 CoreSpecCount=3\nNodeName=gpu[01-02] CoreSpecCount=2 # x\n"
    assert node_values(text, "gpu01") == {"nodename": "gpu[01-02]", "cpus": "8", "corespeccount": "2"}
    assert node_values(text, "gpu09") is None
    assert node_values("NodeName=gpu[01-\n", "gpu01") is None  # a broken host list is no match
