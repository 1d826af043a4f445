import json

from gpunode.host.sysroot import FsIndex, RecordingSysRoot, SysRoot, active_choice, load_snapshot_sysroot
from testkit import write_files


def test_active_choice_parses_bracketed_value():
    assert active_choice("always [madvise] never\n") == "madvise"
    assert active_choice("[none] mq-deadline kyber bfq") == "none"
    assert active_choice("performance\n") == "performance"
    assert active_choice(None) is None


def test_missing_and_unreadable_files_are_none(tmp_path):
    write_files(tmp_path, {"/proc/sys/vm/swappiness": "60\n"})
    root = SysRoot(tmp_path)
    assert root.read_value("/proc/sys/vm/swappiness") == "60"
    assert root.read_int("/proc/sys/vm/swappiness") == 60
    assert root.read("/proc/sys/vm/nope") is None
    assert root.read_int("/proc/sys/vm") is None  # a directory, not a file
    assert root.listdir("/nope") is None


def test_glob_per_component(tmp_path):
    write_files(tmp_path, {
        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "performance\n",
        "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "powersave\n",
        "/sys/devices/system/cpu/cpufreq/policy0/x": "",
    })
    found = SysRoot(tmp_path).glob("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")
    assert found == [
        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor",
        "/sys/devices/system/cpu/cpu1/cpufreq/scaling_governor",
    ]


def test_relative_paths_are_refused(tmp_path):
    import pytest

    with pytest.raises(ValueError):
        SysRoot(tmp_path).path("etc/passwd")


def test_recording_round_trip(tmp_path):
    live = tmp_path / "live"
    write_files(live, {"/etc/os-release": 'PRETTY_NAME="Debian"\n', "/sys/class/net/eth0/mtu": "9000\n"})
    (live / "sys/class/net/lo").mkdir(parents=True)
    rec = RecordingSysRoot(live)
    assert rec.read("/etc/os-release").startswith("PRETTY")
    assert rec.read("/etc/missing") is None
    assert rec.listdir("/sys/class/net") == ["eth0", "lo"]
    assert rec.exists("/sys/class/net/lo")
    assert not rec.exists("/sys/class/infiniband")
    assert rec.glob("/sys/class/net/*/mtu") == ["/sys/class/net/eth0/mtu"]
    rec.read("/sys/class/net/eth0/mtu")
    snap = tmp_path / "snap"
    rec.save(snap)
    replay = load_snapshot_sysroot(snap)
    assert replay.read("/etc/os-release") == rec.read("/etc/os-release")
    assert replay.read("/etc/missing") is None
    assert replay.listdir("/sys/class/net") == ["eth0", "lo"]
    assert replay.exists("/sys/class/net/lo")  # a directory never read, known from the listing
    assert not replay.exists("/sys/class/infiniband")
    assert replay.glob("/sys/class/net/*/mtu") == ["/sys/class/net/eth0/mtu"]  # what was recorded replays
    assert replay.read("/sys/class/net/eth0/mtu") == "9000\n"
    assert json.loads((snap / "fs.json").read_text())["absent"] == ["/etc/missing", "/sys/class/infiniband", "/sys/class/net/lo/mtu"]


def test_snapshot_sysroot_is_read_only(tmp_path):
    import pytest

    # The file exists and is writable on disk: only the read-only flag can refuse the write.
    write_files(tmp_path, {"/proc/sys/vm/swappiness": "60\n"})
    root = SysRoot(tmp_path, index=FsIndex(), writable=False)
    with pytest.raises(OSError):
        root.write("/proc/sys/vm/swappiness", "10")
    assert (tmp_path / "proc/sys/vm/swappiness").read_text() == "60\n"
    assert SysRoot(tmp_path, index=FsIndex(), writable=True).read("/proc/sys/vm/swappiness") == "60\n"


def test_snapshot_of_a_hung_driver_records_the_hang(tmp_path):
    """A wedged driver is when a support bundle is wanted: the snapshot is written and says so."""
    from gpunode.checks.gpu import nvml_responsive
    from gpunode.host.gpu.source import GpuSource
    from gpunode.host.runner import RecordingRunner
    from gpunode.host.seam import Facts, Host, snapshot_host
    from gpunode.host.snapshot import write_snapshot
    from testkit import run

    class Hung(GpuSource):
        def inventory(self, timeout=None):
            raise TimeoutError(f"NVML did not answer within {timeout:.1f}s")

    live = tmp_path / "live"
    write_files(live, {"/sys/bus/pci/devices/0000:18:00.0/vendor": "0x10de\n",
                       "/sys/bus/pci/devices/0000:18:00.0/class": "0x030200\n"})
    rec = RecordingSysRoot(live)
    host = Host(sys=rec, gpu=Hung(), runner=RecordingRunner(), facts=Facts(True, "h", 0.0))
    run(nvml_responsive, host)  # records the PCI bus view
    write_snapshot(tmp_path / "snap", host, rec, host.runner)
    [result] = run(nvml_responsive, snapshot_host(tmp_path / "snap"))
    assert result.status.value == "FAIL" and "NVML hung" in result.message


def test_the_live_root_walks_its_own_links_inside_it():
    # /proc/self and /sys/class/net/lo are links (relative, `..` included): the chain reads them
    # component by component from `/`'s fd and gets what a plain open gets
    import os

    live = SysRoot("/")
    assert live.read("/proc/self/status") is not None and "Pid:" in live.read("/proc/self/status")
    assert live.readlink("/proc/self") == os.readlink("/proc/self")
    if os.path.exists("/sys/class/net/lo/mtu"):
        assert live.read_value("/sys/class/net/lo/mtu") == open("/sys/class/net/lo/mtu").read().strip()
        assert "lo" in live.listdir("/sys/class/net")


def test_links_inside_a_root_resolve_component_by_component(tmp_path):
    import os

    write_files(tmp_path, {"/real/dir/knob": "1\n"})
    os.symlink("../real", tmp_path / "rel")  # relative, one level up: still inside
    os.symlink("/real/dir", tmp_path / "real/abs")  # absolute: from the root, not from /
    os.symlink("loop", tmp_path / "loop")
    root = SysRoot(tmp_path)
    assert root.read("/rel/dir/knob") == "1\n"
    assert root.read("/real/abs/knob") == "1\n"
    assert root.read("/rel/abs/../dir/knob") == "1\n"
    assert root.read("/loop/x") is None  # ELOOP after MAX_LINKS, no hang
    assert root.exists("/rel") and not root.exists("/rel/nope") and root.exists("/")
    assert root.listdir("/rel/abs") == ["knob"]
    assert root.missing_dirs("/rel/abs/new/deeper") == ["/real/dir/new/deeper", "/real/dir/new"]
    fd, created = root.open_dir("/rel/abs/new/deeper", create=True)
    os.close(fd)
    assert created == ["/real/dir/new", "/real/dir/new/deeper"]
    assert (tmp_path / "real/dir/new/deeper").is_dir()
    root.write("/rel/abs/knob", "2\n")
    assert (tmp_path / "real/dir/knob").read_text() == "2\n"
    os.chmod(tmp_path / "real/dir/knob", 0o640)
    assert root.file_state("/rel/abs/knob") == (b"2\n", 0o640, None)
    assert root.file_state("/rel") == (None, None, "../real")
    assert root.file_state("/rel/nope") is None


def test_a_knob_that_is_a_link_out_of_the_root_is_read_and_written_inside_it(tmp_path):
    import os

    outside = tmp_path / "outside"
    outside.write_text("outside\n")
    write_files(tmp_path / "root", {str(outside): "inside\n"})  # the image's own file of that name
    (tmp_path / "root/knobs").mkdir()
    os.symlink(str(outside), tmp_path / "root/knobs/k")
    root = SysRoot(tmp_path / "root")
    assert root.read("/knobs/k") == "inside\n"
    root.write("/knobs/k", "new\n")
    assert outside.read_text() == "outside\n"
    assert root.read("/knobs/k") == "new\n"
