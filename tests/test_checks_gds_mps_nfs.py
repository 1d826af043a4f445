"""Issue 24 item 5: MPS daemon vs compute mode (and the inference profile's MPS unit option),
GPUDirect Storage (nvidia-fs, cufile.json, gdscheck -p), NFS options of data mounts and md RAID
read-ahead. Inputs: tests/fixtures/gds/README.md says which are real and which documented."""

from __future__ import annotations

from pathlib import Path

import pytest
from baseline_fixtures import h100_inventory

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.checks import datapaths, gds, mps
from gpunode.config import Config
from gpunode.host.facts.gds import parse_cufile, parse_gdscheck, strip_comments, supported_filesystems
from gpunode.host.runner import ReplayRunner
from gpunode.inputs import InputError
from gpunode.model.profile import Profile
from gpunode.tune.kinds import assess, condition_holds
from gpunode.tune.profiles import load_profile
from testkit import FIXTURES, tree_host, with_gpu

FX = FIXTURES / "gds"
GDSCHECK = "/usr/local/cuda/gds/tools/gdscheck"


def run(tmp_path, check, files=None, runner=None, inventory=None, config=None):
    host = tree_host(tmp_path / "root", files or {}, runner=runner, inventory=inventory)
    ctx = AuditContext(host=host, profile=Profile("t"), config=config or Config())
    return [(r.status.value, r.message) for r in run_checks([check], ctx)]


# --- MPS ---------------------------------------------------------------------------------------
MPS_PROC = {"/proc/4242/cmdline": "nvidia-cuda-mps-control\0-d\0", "/proc/1/cmdline": "/sbin/init\0",
            "/tmp/nvidia-mps/control": ""}


def test_mps_daemon_with_exclusive_process_passes_with_default_mode_warns(tmp_path):
    exclusive = with_gpu(h100_inventory(), compute_mode="exclusive_process")
    ((status, message),) = run(tmp_path / "a", mps.daemon, MPS_PROC, inventory=exclusive)
    assert status == "PASS" and "pid 4242" in message
    ((status, message),) = run(tmp_path / "b", mps.daemon, MPS_PROC, inventory=with_gpu(h100_inventory(),
                                                                                       compute_mode="default"))
    assert status == "WARN" and "GPU0 default: clients may bypass MPS" in message


def test_no_mps_daemon_is_fine_either_way(tmp_path):
    ((status, message),) = run(tmp_path, mps.daemon, {"/proc/1/cmdline": "/sbin/init\0"},
                               inventory=with_gpu(h100_inventory(), compute_mode="default"))
    assert status == "PASS" and "time-slicing" in message
    assert run(tmp_path / "nogpu", mps.daemon)[0][0] == "SKIP"
    ((status, message),) = run(tmp_path / "noproc", mps.daemon, {"/etc/hostname": "x\n"}, inventory=h100_inventory())
    assert status == "SKIP" and "MPS daemon state unknown" in message  # a snapshot without /proc


def test_inference_runs_mps_as_a_unit_only_where_the_site_installed_one(tmp_path):
    setting = load_profile("inference").get("service.nvidia-mps")
    assert setting is not None and setting.when == "mps_unit" and setting.target == "active"
    assert load_profile("inference").get("gpu.compute_mode") is None  # mps.daemon judges the mode
    bare = AuditContext(host=tree_host(tmp_path / "bare"), profile=Profile("t"))
    holds, why = condition_holds(bare, "mps_unit")
    assert not holds and "nvidia-cuda-mps-control -d" in why and "EXCLUSIVE_PROCESS" in why
    assert assess(bare, setting).not_applicable == why
    unit = AuditContext(host=tree_host(tmp_path / "unit", {"/etc/systemd/system/nvidia-mps.service": "[Unit]\n"}),
                        profile=Profile("t"))
    assert condition_holds(unit, "mps_unit") == (True, condition_holds(bare, "mps_unit")[1])


# --- GDS ---------------------------------------------------------------------------------------
def test_cufile_json_with_comments_parses_and_is_sane():
    data, problems = parse_cufile((FX / "cufile.json").read_text())
    assert problems == [] and data["properties"]["max_direct_io_size_kb"] == 16384
    assert strip_comments('{"dir": "http://x//y"} // note\n') == '{"dir": "http://x//y"} \n'


@pytest.mark.parametrize(("props", "said"), [
    ('"max_direct_io_size_kb": 1000', "max_direct_io_size_kb 1000"),
    ('"allow_compat_mode": "yes"', "allow_compat_mode 'yes'"),
    ('"rdma_dev_addr_list": ["10.0.0.1", "mlx5_0"]', "'mlx5_0' is not an IP address"),
])
def test_cufile_values_outside_the_documented_ones(props, said):
    _, problems = parse_cufile('{"properties": {' + props + "}}")
    assert len(problems) == 1 and said in problems[0]


def test_cufile_that_is_not_json_fails_the_check(tmp_path):
    with pytest.raises(InputError):
        parse_cufile("[1, 2]")
    ((status, message),) = run(tmp_path, gds.cufile, {"/etc/cufile.json": '{"properties": {,}}'})
    assert status == "WARN" and "not valid JSON" in message
    assert run(tmp_path / "none", gds.cufile)[0][0] == "SKIP"


def test_nvidia_fs_loaded_or_compat_mode(tmp_path):
    cufile = (FX / "cufile.json").read_text()
    loaded = run(tmp_path / "a", gds.nvidia_fs, {"/etc/cufile.json": cufile, "/proc/driver/nvidia-fs/version": "2.24\n"})
    assert loaded == [("PASS", "nvidia-fs loaded (2.24)")]
    ((status, message),) = run(tmp_path / "b", gds.nvidia_fs, {"/etc/cufile.json": cufile})
    assert status == "WARN" and "compatibility mode" in message
    strict = cufile.replace('"allow_compat_mode": true', '"allow_compat_mode": false')
    ((status, message),) = run(tmp_path / "c", gds.nvidia_fs, {"/etc/cufile.json": strict})
    assert status == "WARN" and "cuFile I/O fails" in message


def gdscheck_runner(text: str, rc: int = 0) -> ReplayRunner:
    runner = ReplayRunner()
    runner.add([GDSCHECK, "-p"], rc=rc, stdout=text)
    return runner


def test_gdscheck_report_parsed_and_judged(tmp_path):
    text = (FX / "gdscheck-p.txt").read_text()
    report = parse_gdscheck(text)
    assert report.verified is True and report.gpus == {0: True, 1: True}
    assert supported_filesystems(report) == ["NVMe"] and report.fields["GDS release version"] == "1.13.1.3"
    files = {GDSCHECK: ""}
    ((status, message),) = run(tmp_path / "ok", gds.gdscheck, files, runner=gdscheck_runner(text))
    assert status == "PASS" and "2 GPU(s) support GDS; filesystems: NVMe" in message
    bad = text.replace("GPU index 1 NVIDIA H100 80GB HBM3 bar:1 bar size (MiB):131072 supports GDS",
                       "GPU index 1 NVIDIA H100 80GB HBM3 bar:1 bar size (MiB):131072 does not support GDS")
    bad = bad.replace("Platform verification succeeded", "Platform verification error")
    ((status, message),) = run(tmp_path / "bad", gds.gdscheck, files, runner=gdscheck_runner(bad, rc=1))
    assert status == "WARN" and message == "platform verification failed; GPU1 does not support GDS"


def test_a_gpu_without_gds_on_a_verified_platform_warns(tmp_path):
    text = (FX / "gdscheck-p.txt").read_text().replace(
        "GPU index 0 NVIDIA H100 80GB HBM3 bar:1 bar size (MiB):131072 supports GDS",
        "GPU index 0 NVIDIA H100 80GB HBM3 bar:1 bar size (MiB):131072 does not support GDS")
    assert run(tmp_path, gds.gdscheck, {GDSCHECK: ""}, runner=gdscheck_runner(text)) == [
        ("WARN", "GPU0 does not support GDS")]


def test_gdscheck_cut_off_or_absent(tmp_path):
    cut = (FX / "gdscheck-p.txt").read_text().split(" =========\n GPU INFO")[0]
    with pytest.raises(ValueError):
        parse_gdscheck(cut)
    ((status, _),) = run(tmp_path / "cut", gds.gdscheck, {GDSCHECK: ""}, runner=gdscheck_runner(cut, rc=0))
    assert status == "ERROR"  # a cut-off report never reads as PASS
    assert run(tmp_path / "none", gds.gdscheck)[0][0] == "SKIP"


# --- NFS and md RAID ----------------------------------------------------------------------------
NFS_GOOD = ("10.0.0.5:/datasets /data nfs4 rw,relatime,vers=4.2,rsize=1048576,wsize=1048576,namlen=255,hard,"
            "proto=tcp,nconnect=16,timeo=600,retrans=2,sec=sys,clientaddr=10.0.0.9,local_lock=none,addr=10.0.0.5 0 0")
NFS_BAD = ("10.0.0.6:/ckpt /ckpt nfs rw,relatime,vers=3,rsize=65536,wsize=65536,namlen=255,soft,proto=tcp,"
           "timeo=600,retrans=2,sec=sys,mountaddr=10.0.0.6,mountvers=3,mountport=20048,mountproto=udp,"
           "local_lock=none,addr=10.0.0.6 0 0")
NFS_RDMA = "10.1.0.5:/fast /fast nfs4 rw,vers=4.1,rsize=1048576,wsize=1048576,hard,proto=rdma,port=20049 0 0"
ROOT = "/dev/vda1 / ext4 rw,relatime 0 0"


def test_nfs_options_judged_per_data_mount(tmp_path):
    mounts = {"/proc/mounts": "\n".join((ROOT, NFS_GOOD, NFS_BAD, NFS_RDMA)) + "\n"}
    results = run(tmp_path, datapaths.nfs, mounts)
    assert [s for s, _ in results] == ["PASS", "WARN", "PASS"]
    bad = results[1][1]
    assert "soft mount" in bad and "rsize=65536 below" in bad and "wsize=65536" in bad and "one TCP connection" in bad
    only = run(tmp_path / "cfg", datapaths.nfs, mounts, config=Config(data_mounts=["/data/imagenet", "/"]))
    assert only == [("PASS", "10.0.0.5:/datasets (nfs4, proto=tcp, rsize=1048576)")]


# /proc/self/mountinfo in the kernel's format (proc(5)): NFS mounts get anonymous devices 0:N.
MOUNTINFO = ("22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
             "41 22 0:52 / /data rw,relatime shared:20 - nfs4 10.0.0.5:/datasets rw,vers=4.2\n"
             "42 22 0:53 / /ckpt rw,relatime shared:21 - nfs 10.0.0.6:/ckpt rw,vers=3\n"
             "43 22 0:54 / /fast rw,relatime shared:22 - nfs4 10.1.0.5:/fast rw,vers=4.1\n"
             "44 22 bogus / /x rw - nfs4 a:/x rw\n"
             "45 22 0:55\n")


def test_nfs_read_ahead_below_one_rpc_warns(tmp_path):
    files = {"/proc/mounts": "\n".join((ROOT, NFS_GOOD, NFS_RDMA)) + "\n", "/proc/self/mountinfo": MOUNTINFO,
             "/sys/class/bdi/0:52/read_ahead_kb": "128\n", "/sys/class/bdi/0:54/read_ahead_kb": "15360\n"}
    results = run(tmp_path, datapaths.nfs, files)
    assert [s for s, _ in results] == ["WARN", "PASS"]
    assert "read_ahead_kb=128 below 1024" in results[0][1]
    # exactly at the floor passes; an unreadable bdi judges the options alone
    files["/sys/class/bdi/0:52/read_ahead_kb"] = "1024\n"
    assert [s for s, _ in run(tmp_path / "edge", datapaths.nfs, files)] == ["PASS", "PASS"]
    files["/sys/class/bdi/0:52/read_ahead_kb"] = "12x\n"  # garbage is not a figure
    assert [s for s, _ in run(tmp_path / "bad", datapaths.nfs, files)] == ["PASS", "PASS"]
    del files["/sys/class/bdi/0:52/read_ahead_kb"]
    assert [s for s, _ in run(tmp_path / "none", datapaths.nfs, files)] == ["PASS", "PASS"]


def test_mountinfo_parser_keeps_order_and_drops_malformed_lines():
    from gpunode.host.facts.procfs import parse_mountinfo
    assert parse_mountinfo(MOUNTINFO) == [("/", "252:1"), ("/data", "0:52"), ("/ckpt", "0:53"), ("/fast", "0:54"),
                                          ("", "0:55")]  # cut line: the device stays known as mounted
    assert parse_mountinfo("36 35 0:52 / /mnt/with\\040space rw - nfs4 a:/b rw\n") == [("/mnt/with space", "0:52")]
    assert parse_mountinfo("") == []


def test_no_nfs_on_this_machine_skips(tmp_path):
    real = Path("/proc/mounts").read_text()  # this machine's own table: no NFS
    assert "nfs" not in real.split() or pytest.skip("this machine mounts NFS")
    assert run(tmp_path, datapaths.nfs, {"/proc/mounts": real})[0][0] == "SKIP"


def test_md_raid_read_ahead_is_a_training_setting(tmp_path):
    setting = load_profile("training").get("sysfs.md.read_ahead_kb")
    assert setting is not None and setting.op == ">=" and setting.target == 4096
    host = tree_host(tmp_path, {"/sys/block/md0/queue/read_ahead_kb": "128\n",
                                "/proc/mdstat": "Personalities : [raid0]\nmd0 : active raid0 nvme1n1[1] nvme0n1[0]\n"})
    a = assess(AuditContext(host=host, profile=Profile("t")), setting)
    assert [o.value for o in a.wrong] == ["128"]
