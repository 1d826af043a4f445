"""fio wrapper: real recorded outputs (ok, ENOSPC, open failed, truncated), target safety, and a
real fio run on a temp dir."""

import os
import shutil

import pytest

import testkit
from gpunode.bench import fio
from gpunode.host.runner import Runner
from gpunode.host.sysroot import SysRoot
from testkit import FIXTURES, tree_host

FIO = FIXTURES / "fio"
JOB = {j.name: j for j in fio.JOBS}
COND = {"target": "scratch"}


def metrics_of(job, name, rc=0, why=""):
    try:
        res = fio.parse_json((FIO / name).read_text())
    except ValueError as exc:
        res, why = None, str(exc)
    return fio.job_metrics(JOB[job], res, rc, why, COND)


def test_real_outputs_parse():
    w = fio.parse_json((FIO / "seq_write.debian12-vm.json").read_text())
    r = fio.parse_json((FIO / "seq_read.debian12-vm.json").read_text())
    rr = fio.parse_json((FIO / "rand_read.debian12-vm.json").read_text())
    assert w.error == 0 and w.write_bw_bytes > 0 and w.read_bw_bytes == 0 and w.version == "fio-3.33"
    assert r.read_bw_bytes > 0 and r.options["bs"] == "1M" and r.options["direct"] == "1"
    assert rr.read_iops > 0 and rr.read_p99_ns > 0 and rr.options["rw"] == "randread"
    assert w.runtime_ms > 0


def test_real_outputs_give_metrics_in_decimal_units():
    seq = metrics_of("seq_read", "seq_read.debian12-vm.json")
    res = fio.parse_json((FIO / "seq_read.debian12-vm.json").read_text())
    assert [m.name for m in seq] == ["fio.seq_read"]
    assert seq[0].status == "PASS" and seq[0].unit == "MB/s"
    assert seq[0].value == pytest.approx(res.read_bw_bytes / 1e6, rel=1e-6)
    rand = metrics_of("rand_read", "rand_read.debian12-vm.json")
    rres = fio.parse_json((FIO / "rand_read.debian12-vm.json").read_text())
    assert [m.name for m in rand] == ["fio.rand_read.iops", "fio.rand_read.p99_us"]
    assert rand[1].unit == "us" and rand[1].value == pytest.approx(rres.read_p99_ns / 1e3, rel=1e-6)


def test_real_enospc_is_error():
    """fio printed 'fio: pid=..., err=28/...' before its JSON on stdout and exited 1."""
    text = (FIO / "seq_write_enospc.debian12-vm.json").read_text()
    assert text.startswith("fio: pid=")
    (m,) = metrics_of("seq_write", "seq_write_enospc.debian12-vm.json", rc=1)
    assert m.status == "ERROR" and "ENOSPC" in m.message and m.value is None


def test_real_open_failure_is_error_even_with_job_error_zero():
    """fio could not create the directory: its JSON says error 0, but it exited 1."""
    assert fio.parse_json((FIO / "seq_read_open_failed.debian12-vm.json").read_text()).error == 0
    (m,) = metrics_of("seq_read", "seq_read_open_failed.debian12-vm.json", rc=1,
                      why=(FIO / "seq_read_open_failed.debian12-vm.stderr").read_text().strip())
    assert m.status == "ERROR" and "exited with status 1" in m.message


def test_run_fio_reports_fios_stderr_when_it_exits_non_zero(tmp_path):
    """A run that printed JSON but exited 1 must say why (fio's stderr), not only the status."""
    from gpunode.host.runner import ReplayRunner

    target = fio.FioTarget(str(tmp_path / "f.dat"), "scratch", 1 << 20, True)
    plan = fio.FioPlan(size_bytes=1 << 20, runtime_s=1)
    runner = ReplayRunner()
    for job in fio.JOBS:
        runner.add(fio.argv("fio", job, target, plan), rc=1,
                   stdout=(FIO / "seq_read_open_failed.debian12-vm.json").read_text(),
                   stderr=(FIO / "seq_read_open_failed.debian12-vm.stderr").read_text())
    ms = fio.run_fio(runner, "fio", target, plan)
    assert ms and all(m.status == "ERROR" for m in ms)
    assert all("exited with status 1: fio: failed to create dir" in m.message for m in ms), ms[0].message


def test_a_block_device_without_capacity_is_refused(tmp_path, monkeypatch):
    """An unbound loop device has size 0: refused up front instead of four fio errors."""
    host = tree_host(tmp_path, files={"/sys/class/block/loop7/dev": "7:7\n", "/sys/class/block/loop7/size": "0\n"})
    real_stat = os.stat

    def stat(path, *a, **kw):
        if str(path) == "/dev/loop7":
            return os.stat_result((0o60660, 0, 0, 1, 0, 0, 0, 0, 0, 0))  # S_IFBLK
        return real_stat(path, *a, **kw)

    monkeypatch.setattr(fio.os, "stat", stat)
    with pytest.raises(fio.FioRefused, match="no capacity"):
        fio.destructive_target(host.sys, "/dev/loop7", fio.FioPlan.quick())


def test_truncated_output_is_error():
    text = (FIO / "rand_read.debian12-vm.json").read_text()
    with pytest.raises(ValueError, match="truncated"):
        fio.parse_json(text[: len(text) // 2])
    with pytest.raises(ValueError, match="no JSON"):
        fio.parse_json("fio: engine libaio not loadable\n")
    ms = fio.job_metrics(JOB["rand_read"], None, 1, "fio JSON output is truncated", COND)
    assert [m.status for m in ms] == ["ERROR", "ERROR"]


def test_argv_is_direct_json_and_time_based():
    plan = fio.FioPlan(size_bytes=256 << 20, runtime_s=3)
    t = fio.FioTarget("/data/gpunode-fio-x/scratch.dat", "scratch", 256 << 20, True)
    assert fio.argv("fio", JOB["seq_write"], t, plan) == [
        "fio", "--name=seq_write", "--filename=/data/gpunode-fio-x/scratch.dat", "--rw=write", "--bs=1M",
        f"--size={256 << 20}", "--direct=1", "--ioengine=libaio", "--iodepth=16", "--numjobs=1",
        "--runtime=3", "--time_based", "--group_reporting", "--output-format=json", "--end_fsync=1"]
    rand = fio.argv("fio", JOB["rand_read"], fio.FioTarget("/x", "file", 1, False), plan)
    assert "--bs=4k" in rand and "--rw=randread" in rand and "--direct=0" in rand


# ---- safety ----------------------------------------------------------------------------------

MOUNTINFO = ("22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
             "30 22 253:0 / /data rw,relatime shared:5 - xfs /dev/mapper/vg-data rw\n")


def block_tree(tmp_path, extra=None):
    files = {
        "/proc/self/mountinfo": MOUNTINFO,
        "/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n/dev/sdc2 partition 1000 0 -2\n",
        "/sys/class/block/sda/dev": "8:0\n", "/sys/class/block/sda/sda1/dev": "8:1\n",
        "/sys/class/block/sda/holders/.keep": "",
        "/sys/class/block/sdb/dev": "8:16\n", "/sys/class/block/sdb/size": "3907029168\n",
        "/sys/class/block/sdd/dev": "8:48\n", "/sys/class/block/sdd/holders/dm-0": "",
        "/sys/class/block/nvme0n1/dev": "259:0\n",
        "/sys/class/block/nvme0n1/nvme0n1p1/dev": "259:1\n",
        "/sys/class/block/nvme0n1/nvme0n1p1/holders/.keep": "",
        **(extra or {}),
    }
    host = tree_host(tmp_path, files=files)
    for d in ("sda/holders", "nvme0n1/nvme0n1p1/holders"):
        os.unlink(tmp_path / "sys/class/block" / d / ".keep")
    return host


def test_block_device_users(tmp_path):
    host = block_tree(tmp_path)
    assert fio.block_device_users(host.sys, "sdb") == []
    assert fio.block_device_users(host.sys, "sda") == ["/dev/sda1 (8:1) is mounted"]
    assert fio.block_device_users(host.sys, "sdd") == ["/dev/sdd is held by dm-0 (device-mapper, md or LVM)"]
    assert "not a block device" in fio.block_device_users(host.sys, "sdz")[0]
    assert fio.mounted_devices(host.sys) == {"8:1", "253:0"}
    assert fio.swap_paths(host.sys) == {"/dev/sdc2"}


def test_a_disk_whose_partition_is_swap_is_refused(tmp_path):
    host = block_tree(tmp_path, {"/sys/class/block/sdc/dev": "8:32\n", "/sys/class/block/sdc/sdc2/dev": "8:34\n"})
    assert fio.block_device_users(host.sys, "sdc") == ["/dev/sdc2 is in use as swap"]


def test_partition_of_a_mounted_whole_disk_is_refused(tmp_path):
    host = block_tree(tmp_path, {"/proc/self/mountinfo": "22 1 259:0 / /scratch rw - ext4 /dev/nvme0n1 rw\n"})
    # sysfs links a partition under its disk: .../nvme0n1/nvme0n1p1
    os.makedirs(tmp_path / "devices/nvme0n1/nvme0n1p1", exist_ok=True)
    (tmp_path / "devices/nvme0n1/nvme0n1p1/dev").write_text("259:1\n")
    link = tmp_path / "sys/class/block/nvme0n1p1"
    link.symlink_to("../../../devices/nvme0n1/nvme0n1p1")
    assert fio.block_device_users(host.sys, "nvme0n1p1") == ["its disk /dev/nvme0n1 (259:0) is mounted"]
    assert fio.block_device_users(host.sys, "nvme0n1") == ["/dev/nvme0n1 (259:0) is mounted"]


def test_loop_backing_and_swap_files_are_refused(tmp_path):
    victim = tmp_path / "disk.img"
    victim.write_bytes(b"\0" * 4096)
    swapfile = tmp_path / "swapfile"
    swapfile.write_bytes(b"\0" * 4096)
    root = tmp_path / "root"
    host = tree_host(root, files={"/sys/block/loop0/loop/backing_file": f"{victim}\n",
                                  "/proc/swaps": f"Filename Type Size Used Priority\n{swapfile} file 4 0 -2\n"})
    plan = fio.FioPlan(size_bytes=1 << 20, runtime_s=1)
    with pytest.raises(fio.FioRefused, match="backs a loop device"):
        fio.destructive_target(host.sys, str(victim), plan)
    with pytest.raises(fio.FioRefused, match="swap"):
        fio.destructive_target(host.sys, str(swapfile), plan)


def test_existing_file_allowed_only_when_named(tmp_path):
    mine = tmp_path / "bench.dat"
    mine.write_bytes(b"x" * 4096)
    t = fio.destructive_target(SysRoot(tmp_path / "empty"), str(mine), fio.FioPlan(size_bytes=1 << 20, runtime_s=1))
    assert t.kind == "file" and t.path == str(mine) and t.cleanup_dir is None and "overwritten" in t.note


@pytest.mark.parametrize("path,why", [("/nonexistent/fio.dat", "No such file"), ("/dev/null", "not a block device"),
                                      ("/tmp", "not a block device"),
                                      ("/etc/passwd", "file of the operating system"),
                                      ("/usr/bin/env", "file of the operating system")])
def test_destructive_refuses_odd_targets(path, why):
    with pytest.raises(fio.FioRefused, match=why):
        fio.destructive_target(SysRoot("/"), path, fio.FioPlan.quick())


def root_block_device() -> str | None:
    """/dev/NAME of the filesystem holding / on this machine, when it is a real block device."""
    for line in open("/proc/self/mountinfo"):
        parts = line.split()
        if parts[4] == "/":
            name = os.path.basename(os.path.realpath(f"/sys/dev/block/{parts[2]}"))
            return f"/dev/{name}" if os.path.exists(f"/dev/{name}") else None
    return None


def test_live_mounted_root_device_is_refused():
    dev = root_block_device()
    testkit.require(dev is not None, "the root filesystem is not on a block device visible in /dev")
    with pytest.raises(fio.FioRefused, match="mounted"):
        fio.destructive_target(SysRoot("/"), dev, fio.FioPlan.quick())


def test_scratch_target_private_dir_and_space_check(tmp_path):
    t = fio.scratch_target(str(tmp_path), fio.FioPlan(size_bytes=1 << 20, runtime_s=1))
    assert t.kind == "scratch" and os.path.dirname(t.path) == t.cleanup_dir
    assert os.stat(t.cleanup_dir).st_mode & 0o777 == 0o700 and os.stat(t.path).st_mode & 0o777 == 0o600
    with fio.cleaned(t):
        pass
    assert not os.path.exists(t.cleanup_dir)
    with pytest.raises(fio.FioRefused, match="not enough free space"):
        fio.scratch_target(str(tmp_path), fio.FioPlan(size_bytes=1 << 60, runtime_s=1))
    with pytest.raises(fio.FioRefused, match="not a directory"):
        fio.scratch_target(str(tmp_path / "missing"), fio.FioPlan.quick())
    assert os.listdir(tmp_path) == []  # nothing left behind by the refusals


def test_probe_direct_on_tmp_path(tmp_path):
    f = tmp_path / "probe"
    f.write_bytes(b"")
    direct, note = fio.probe_direct(str(f))
    assert direct == (note == "")  # either O_DIRECT works, or we fall back and say so


def test_real_fio_run_on_temp_dir(tmp_path):
    binary = shutil.which("fio")
    testkit.require(binary is not None, "fio is not installed (apt-get install fio)")
    plan = fio.FioPlan(size_bytes=16 << 20, runtime_s=1)
    target = fio.scratch_target(str(tmp_path), plan)
    metrics = fio.run_fio(Runner(), binary, target, plan)
    by = {m.name: m for m in metrics}
    assert sorted(by) == ["fio.rand_read.iops", "fio.rand_read.p99_us", "fio.seq_read", "fio.seq_write"]
    assert all(m.status == "PASS" and m.value > 0 for m in metrics), [m.message for m in metrics]
    assert by["fio.seq_read"].conditions["direct"] == int(target.direct)
    assert os.listdir(tmp_path) == []  # the scratch file and its directory are gone


# ---- mutation survivors: sizes and argv, figures without runtime or data, refusals, the neighbour watch ----


def recorded(name, **changes):
    """A recorded fio JSON document with job 0's fields changed (a key set to None is removed)."""
    import json

    doc = json.loads((FIO / name).read_text())
    job = doc["jobs"][0]
    for key, value in changes.items():
        if value is None:
            job.pop(key)
        else:
            job[key] = value
    return json.dumps(doc)


def test_plans_are_in_binary_mebibytes():
    assert fio.FioPlan.quick() == fio.FioPlan(size_bytes=268435456, runtime_s=3)
    assert fio.FioPlan.full() == fio.FioPlan(size_bytes=4294967296, runtime_s=20)
    assert fio.SPACE_MARGIN == 67108864
    t = fio.FioTarget("/x/scratch.dat", "scratch", fio.FioPlan.quick().size_bytes, True)
    assert "--size=268435456" in fio.argv("fio", JOB["seq_read"], t, fio.FioPlan.quick())


def test_rand_read_argv_is_4k_at_queue_depth_64():
    plan = fio.FioPlan(size_bytes=256 << 20, runtime_s=3)
    t = fio.FioTarget("/data/scratch.dat", "scratch", 256 << 20, True)
    assert fio.argv("fio", JOB["rand_read"], t, plan) == [
        "fio", "--name=rand_read", "--filename=/data/scratch.dat", "--rw=randread", "--bs=4k",
        f"--size={256 << 20}", "--direct=1", "--ioengine=libaio", "--iodepth=64", "--numjobs=1",
        "--runtime=3", "--time_based", "--group_reporting", "--output-format=json"]


def test_a_job_without_runtime_gives_no_figure():
    """No job_runtime in the JSON (a cut or foreign document): no rate can be trusted."""
    res = fio.parse_json(recorded("seq_read.debian12-vm.json", job_runtime=None))
    assert res.runtime_ms == 0 and res.read_bw_bytes > 0
    (m,) = fio.job_metrics(JOB["seq_read"], res, 0, "", COND)
    assert (m.status, m.value, m.message) == ("ERROR", None, "fio job seq_read reported no runtime")


def test_a_zero_runtime_or_missing_percentiles_give_no_figure():
    res = fio.parse_json(recorded("seq_read.debian12-vm.json", job_runtime=0))
    (m,) = fio.job_metrics(JOB["seq_read"], res, 0, "", COND)
    assert (m.status, m.message) == ("ERROR", "fio job seq_read reported no runtime")
    import json

    doc = json.loads((FIO / "rand_read.debian12-vm.json").read_text())
    del doc["jobs"][0]["read"]["clat_ns"]["percentile"]  # fio run with --clat_percentiles=0
    res = fio.parse_json(json.dumps(doc))
    assert res.read_p99_ns is None
    iops, p99 = fio.job_metrics(JOB["rand_read"], res, 0, "", COND)
    assert iops.status == "PASS" and iops.value > 0
    assert (p99.status, p99.value, p99.message) == ("ERROR", None, "fio job rand_read reported no latency percentiles")


def test_a_job_that_moved_no_data_is_error():
    import json

    doc = json.loads((FIO / "seq_read.debian12-vm.json").read_text())
    doc["jobs"][0]["read"]["bw_bytes"] = 0
    (m,) = fio.job_metrics(JOB["seq_read"], fio.parse_json(json.dumps(doc)), 0, "", COND)
    assert (m.status, m.value, m.message) == ("ERROR", None, "fio job seq_read moved no data")


def test_a_swap_file_named_through_a_symlink_is_refused(tmp_path):
    """/proc/swaps names the real file; --fio-destructive may name a link to it."""
    swapfile = tmp_path / "swapfile"
    swapfile.write_bytes(b"\0" * 4096)
    link = tmp_path / "bench.dat"
    link.symlink_to(swapfile)
    host = tree_host(tmp_path / "root", files={"/proc/swaps": f"Filename Type Size Used Priority\n{swapfile} file 4 0 -2\n"})
    with pytest.raises(fio.FioRefused, match="in use as swap"):
        fio.destructive_target(host.sys, str(link), fio.FioPlan(size_bytes=1 << 20, runtime_s=1))
    assert swapfile.read_bytes() == b"\0" * 4096


def test_a_link_to_a_path_fio_cannot_take_is_refused(tmp_path):
    """The named path is plain, but the file it leads to has both '\\' and ':' in its path."""
    odd = tmp_path / "a\\b:c"
    odd.mkdir()
    (odd / "bench.dat").write_bytes(b"x" * 4096)
    link = tmp_path / "bench.dat"
    link.symlink_to(odd / "bench.dat")
    with pytest.raises(fio.FioRefused, match="cannot be handed to fio safely"):
        fio.prepare_target(SysRoot(tmp_path / "empty"), fio.FioPlan(size_bytes=1 << 20, runtime_s=1),
                           destructive=str(link))


def test_probe_direct_falls_back_only_when_the_filesystem_refuses_o_direct(tmp_path, monkeypatch):
    import errno

    f = tmp_path / "probe"
    f.write_bytes(b"")
    real_open = os.open

    def refusing(code):
        def open_(path, flags, *a, **kw):
            if str(path) == str(f) and flags & os.O_DIRECT:
                raise OSError(code, os.strerror(code))
            return real_open(path, flags, *a, **kw)
        return open_

    monkeypatch.setattr(fio.os, "open", refusing(errno.EINVAL))
    direct, note = fio.probe_direct(str(f))
    assert direct is False and "refuses O_DIRECT" in note
    monkeypatch.setattr(fio.os, "open", refusing(errno.EACCES))
    with pytest.raises(fio.FioRefused, match="Permission denied"):
        fio.probe_direct(str(f))


def test_watch_sees_a_neighbour_written_in_place_but_not_fios_own_file(tmp_path):
    target = fio.scratch_target(str(tmp_path), fio.FioPlan(size_bytes=1 << 20, runtime_s=1))
    neighbour = tmp_path / "neighbour"
    neighbour.write_bytes(b"precious data\n")
    same_size = tmp_path / "same-size"
    same_size.write_bytes(b"0123456789")
    os.utime(same_size, ns=(1_000_000_000, 1_000_000_000))
    (tmp_path / "subdir").mkdir()
    with fio.cleaned(target):
        before = fio.watch(target)
        assert {str(neighbour), str(same_size), str(tmp_path / "subdir"), target.path} <= set(before)
        with open(target.path, "wb") as own:
            own.write(b"\0" * 8192)
        with open(neighbour, "r+b") as f:
            f.write(b"\0" * 4096)
        with open(same_size, "r+b") as f:
            f.write(b"9876543210")
        os.utime(same_size, ns=(2_000_000_000, 2_000_000_000))
        (tmp_path / "subdir" / "new").write_text("a new name in a subdirectory is not a write")
        touched = fio.touched_neighbours(before, fio.watch(target), target.path)
    assert touched == [f"{neighbour} was written (size 14 -> 4096)", f"{same_size} was written (size 10 -> 10)"]


def test_a_huge_directory_is_watched_up_to_the_cap(tmp_path, monkeypatch):
    for name in "abc":
        (tmp_path / name).write_text(name)
    assert len(fio.dir_state(str(tmp_path))) == 3
    monkeypatch.setattr(fio, "MAX_WATCHED_ENTRIES", 2)
    assert len(fio.dir_state(str(tmp_path))) == 2


def test_fio_version_without_the_prefix():
    from gpunode.host.runner import ReplayRunner

    runner = ReplayRunner()
    runner.add(["fio", "--version"], stdout="fio-3.33\n")
    assert fio.fio_version(runner, "fio") == "3.33"
    empty = ReplayRunner()
    empty.add(["fio", "--version"], stdout="\n")
    assert fio.fio_version(empty, "fio") is None
    assert fio.fio_version(ReplayRunner(), "fio") is None  # not runnable


def test_run_fio_gives_each_job_three_times_its_runtime_plus_two_minutes(tmp_path):
    from gpunode.host.runner import CommandResult, Runner

    class Recording(Runner):
        def __init__(self):
            self.timeouts = []

        def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
            self.timeouts.append(timeout)
            job = next(a for a in argv if a.startswith("--name=")).split("=", 1)[1]
            return CommandResult(list(argv), 0, (FIO / f"{job}.debian12-vm.json").read_text(), "")

    plan = fio.FioPlan(size_bytes=1 << 20, runtime_s=7)
    runner = Recording()
    metrics = fio.run_fio(runner, "fio", fio.scratch_target(str(tmp_path), plan), plan)
    assert runner.timeouts == [141, 141, 141]
    assert all(m.status == "PASS" for m in metrics), [m.message for m in metrics]
