"""Storage checks on fixture trees (real /proc/mounts lines) and recorded df outputs."""

import json
import os
from pathlib import Path

from gpunode.checks import storage
from gpunode.config import Config
from gpunode.host.facts import df
from gpunode.host.runner import ReplayRunner
from testkit import run, statuses, tree_host

FIX = Path(__file__).parent / "fixtures"
MOUNTS = (FIX / "proc" / "mounts.txt").read_text()  # this VM: ext4 root, tmpfs /dev/shm, a tmpfs under /mnt
# Lines as the kernel printed them for an ext4 image mounted with each atime option (recorded here).
NOATIME = "/dev/loop0 /mnt/data ext4 rw,noatime 0 0\n"
RELATIME = "/dev/loop0 /mnt/data ext4 rw,relatime 0 0\n"
STRICTATIME = "/dev/loop0 /mnt/data ext4 rw 0 0\n"
READ_ONLY = "/dev/loop0 /mnt/data ext4 ro 0 0\n"


def by_subject(results):
    return {r.subject: r for r in results}


def test_noatime_and_relatime_data_mounts_pass(tmp_path):
    r = run(storage.noatime, tree_host(tmp_path / "a", files={"/proc/mounts": MOUNTS + NOATIME}))
    assert statuses(r) == ["PASS"] and r[0].subject == "/mnt/data" and r[0].message.startswith("noatime (ext4")
    r = run(storage.noatime, tree_host(tmp_path / "b", files={"/proc/mounts": MOUNTS + RELATIME}))
    assert statuses(r) == ["PASS"] and r[0].observed["atime"] == "relatime"


def test_strictatime_data_mount_warns(tmp_path):
    r = run(storage.noatime, tree_host(tmp_path, files={"/proc/mounts": MOUNTS + STRICTATIME}))
    assert statuses(r) == ["WARN"] and "every read writes the inode" in r[0].message


def test_noatime_ignores_virtual_and_network_mounts_and_skips(tmp_path):
    nfs = "10.0.0.5:/datasets /data nfs4 rw,relatime,vers=4.2 0 0\n"
    r = run(storage.noatime, tree_host(tmp_path, files={"/proc/mounts": MOUNTS + nfs}))
    assert statuses(r) == ["SKIP"] and "no local data mounts" in r[0].message  # the /mnt tmpfs is not data
    r = run(storage.noatime, tree_host(tmp_path / "none", files={}))
    assert statuses(r) == ["SKIP"] and "/proc/mounts" in r[0].message


def test_configured_data_mounts(tmp_path):
    config = Config(data_mounts=["/", "/lustre/"])
    r = by_subject(run(storage.noatime, tree_host(tmp_path, files={"/proc/mounts": MOUNTS}), config=config))
    assert r["/"].status.value == "PASS" and r["/"].observed["source"] == "/dev/vda"
    assert r["/lustre/"].status.value == "WARN" and "not mounted" in r["/lustre/"].message


def test_writable_passes_on_rw_mounts(tmp_path):
    r = by_subject(run(storage.writable, tree_host(tmp_path, files={"/proc/mounts": MOUNTS + NOATIME})))
    assert {k: v.status.value for k, v in r.items()} == {"/dev/shm": "PASS", "/tmp": "PASS"}
    assert r["/tmp"].message == "rw (ext4 on /)"


def test_read_only_scratch_dir_fails_read_only_data_mount_is_allowed(tmp_path):
    r = by_subject(run(storage.writable, tree_host(tmp_path / "a", files={"/proc/mounts": MOUNTS + READ_ONLY}),
                       config=Config(scratch_dirs=["/tmp", "/mnt/data/scratch"])))
    assert r["/mnt/data/scratch"].status.value == "FAIL" and r["/tmp"].status.value == "PASS"
    r = by_subject(run(storage.writable, tree_host(tmp_path / "a", files={"/proc/mounts": MOUNTS + READ_ONLY})))
    assert "/mnt/data" not in r and set(statuses(r.values())) == {"PASS"}  # a read-only dataset disk
    ro_root = MOUNTS.replace("/dev/vda / ext4 rw,", "/dev/vda / ext4 ro,")
    r = by_subject(run(storage.writable, tree_host(tmp_path / "b", files={"/proc/mounts": ro_root})))
    assert r["/tmp"].status.value == "FAIL" and "read-only ext4 mount / (/dev/vda)" in r["/tmp"].message


def test_writable_follows_symlinked_scratch_dirs(tmp_path):
    root = tmp_path / "root"
    host = tree_host(root, files={"/proc/mounts": MOUNTS + "/dev/md0 /raid xfs ro,noatime 0 0\n"})
    os.symlink("/raid/scratch", root / "scratch")  # /scratch -> /raid/scratch, as DGX systems do
    r = by_subject(run(storage.writable, host, config=Config(scratch_dirs=["/scratch/jobs"])))
    assert r["/scratch/jobs"].status.value == "FAIL" and "/raid" in r["/scratch/jobs"].message
    assert storage.resolve(host, "/scratch/jobs") == "/raid/scratch/jobs"
    os.symlink("raid/data", root / "data")  # a relative link
    assert storage.resolve(host, "/data/set1") == "/raid/data/set1"
    assert storage.resolve(host, "/tmp/x") == "/tmp/x"


def df_host(tmp_path, recording, paths):
    rec = json.loads((FIX / "df" / recording).read_text())
    runner = ReplayRunner()
    runner.add(df.argv(paths), rec["rc"], rec["stdout"], rec["stderr"])
    return tree_host(tmp_path, runner=runner)


def test_scratch_space_enough_passes(tmp_path):
    r = by_subject(run(storage.scratch_space, df_host(tmp_path, "ok.json", ["/dev/shm", "/tmp"])))
    assert r["/tmp"].status.value == "PASS" and r["/tmp"].message == "79.6 GiB free of 252.0 GiB"
    assert r["/dev/shm"].status.value == "PASS" and r["/dev/shm"].observed == 25276502016


def test_scratch_space_full_or_below_minimum_fails(tmp_path):
    config = Config(scratch_dirs=["/tmp/dfcase"])
    r = by_subject(run(storage.scratch_space, df_host(tmp_path / "a", "full.json", ["/dev/shm", "/tmp/dfcase"]),
                       config=config))
    assert r["/tmp/dfcase"].status.value == "FAIL" and r["/tmp/dfcase"].message == "4.0 MiB free of 64.0 MiB"
    assert r["/dev/shm"].status.value == "PASS"
    config = Config(min_free_gib=100)
    r = by_subject(run(storage.scratch_space, df_host(tmp_path / "b", "ok.json", ["/dev/shm", "/tmp"]), config=config))
    assert r["/tmp"].status.value == "FAIL" and r["/tmp"].expected == ">= 100 GiB free"


def test_missing_scratch_dir_fails_and_broken_df_is_an_error(tmp_path):
    config = Config(scratch_dirs=["/tmp", "/scratch"])
    r = by_subject(run(storage.scratch_space, df_host(tmp_path / "a", "missing.json", ["/dev/shm", "/tmp", "/scratch"]),
                       config=config))
    assert r["/scratch"].status.value == "FAIL" and r["/scratch"].message == "No such file or directory"
    assert r["/tmp"].status.value == "PASS"
    r = run(storage.scratch_space, df_host(tmp_path / "b", "posix-format.json", ["/dev/shm", "/tmp"]))
    assert statuses(r) == ["ERROR"] and "not df output" in r[0].message
    r = run(storage.scratch_space, df_host(tmp_path / "c", "bad-option.json", ["/dev/shm", "/tmp"]))
    assert statuses(r) == ["ERROR"] and r[0].message.startswith("df failed")


def test_truncated_df_output_never_passes(tmp_path):
    rec = json.loads((FIX / "df" / "ok.json").read_text())
    for cut in range(40, len(rec["stdout"]) - 1, 7):
        runner = ReplayRunner()
        runner.add(df.argv(["/dev/shm", "/tmp"]), 0, rec["stdout"][:cut], "")
        r = run(storage.scratch_space, tree_host(tmp_path / str(cut), runner=runner))
        assert "ERROR" in statuses(r), (cut, statuses(r))


def test_scratch_space_skips_when_df_cannot_run(tmp_path):
    r = run(storage.scratch_space, tree_host(tmp_path))  # an offline sysroot: no commands recorded
    assert statuses(r) == ["SKIP"] and "cannot run df" in r[0].message


def test_scratch_space_live_df_on_this_machine(tmp_path):
    from gpunode.audit.context import AuditContext
    from gpunode.host.seam import live_host
    from gpunode.tune.profiles import load_profile

    ctx = AuditContext(host=live_host(), profile=load_profile("training"), config=Config(scratch_dirs=[str(tmp_path)]))
    found = storage.scratch_space.func(ctx)
    assert [f.subject for f in found] == ["/dev/shm", str(tmp_path)]
    assert all(f.observed is not None and f.observed > 0 for f in found)


def ext4_files(dev, errors=0, first=0, last=0, func=""):
    base = f"/sys/fs/ext4/{dev}"
    return {f"{base}/errors_count": f"{errors}\n", f"{base}/first_error_time": f"{first}\n",
            f"{base}/last_error_time": f"{last}\n", f"{base}/first_error_func": f"{func}\n",
            f"{base}/last_error_func": f"{func}\n", "/sys/fs/ext4/features/lazy_itable_init": "supported\n"}


def test_ext4_without_errors_passes(tmp_path):
    r = run(storage.fs_errors, tree_host(tmp_path, files={"/proc/mounts": MOUNTS, **ext4_files("vda")}))
    assert statuses(r) == ["PASS"] and r[0].subject == "/" and r[0].message == "no errors recorded (/dev/vda)"


def test_ext4_subject_is_the_mount_not_a_later_bind_mount(tmp_path):
    # As /proc/mounts lists a bind mount of the root filesystem (`ip netns add` makes /run/netns).
    bind = "/dev/vda /run/netns ext4 rw,relatime,discard 0 0\n"
    r = run(storage.fs_errors, tree_host(tmp_path, files={"/proc/mounts": MOUNTS + bind, **ext4_files("vda")}))
    assert [f.subject for f in r] == ["/"]


def test_ext4_recorded_error_warns(tmp_path):
    # Values as ext4 reported them after `echo > /sys/fs/ext4/loop0/trigger_fs_error` on a test image.
    files = {"/proc/mounts": MOUNTS + RELATIME, **ext4_files("vda"),
             **ext4_files("loop0", errors=1, first=1795479228, last=1795479228, func="trigger_test_error")}
    r = by_subject(run(storage.fs_errors, tree_host(tmp_path, files=files)))
    assert r["/"].status.value == "PASS"
    assert r["/mnt/data"].status.value == "WARN" and r["/mnt/data"].message == (
        "1 error(s) recorded on /dev/loop0: first in trigger_test_error at 2026-11-24T00:13:48+00:00, "
        "last in trigger_test_error at 2026-11-24T00:13:48+00:00")


def test_fs_errors_skips_without_ext4(tmp_path):
    r = run(storage.fs_errors, tree_host(tmp_path, files={"/proc/mounts": MOUNTS}))
    assert statuses(r) == ["SKIP"] and r[0].message == "no ext4 filesystem mounted"


# === mutation survivors: storage (benchmarks/mutation.py) ======================================

def df_lines(tmp_path, lines, paths=("/dev/shm", "/tmp")):
    runner = ReplayRunner()
    runner.add(df.argv(list(paths)), 0, "   1B-blocks        Used       Avail File\n" + "".join(lines), "")
    return tree_host(tmp_path, runner=runner)


def test_scratch_space_at_exactly_the_minimum_passes(tmp_path):
    gib = 1 << 30
    host = df_lines(tmp_path / "a", [f"{64 * gib} {54 * gib} {10 * gib} /dev/shm\n",
                                     f"{64 * gib} {54 * gib + 1} {10 * gib - 1} /tmp\n"])
    r = by_subject(run(storage.scratch_space, host, config=Config(min_free_gib=10)))
    assert r["/dev/shm"].status.value == "PASS" and r["/dev/shm"].message == "10.0 GiB free of 64.0 GiB"
    assert r["/tmp"].status.value == "FAIL" and r["/tmp"].expected == ">= 10 GiB free"


def test_scratch_space_without_an_avail_figure_is_an_error(tmp_path):
    host = df_lines(tmp_path, ["25276502016 0 25276502016 /dev/shm\n", "- - - /tmp\n"])
    r = by_subject(run(storage.scratch_space, host))
    assert r["/dev/shm"].status.value == "PASS"
    assert r["/tmp"].status.value == "ERROR" and r["/tmp"].message == "df reports no available-space figure"


def test_writable_skips_a_path_no_mount_holds(tmp_path):
    only_shm = "tmpfs /dev/shm tmpfs rw,nosuid,nodev 0 0\n"  # no root filesystem listed
    r = by_subject(run(storage.writable, tree_host(tmp_path, files={"/proc/mounts": only_shm}),
                       config=Config(scratch_dirs=["/scratch"])))
    assert r["/dev/shm"].status.value == "PASS"
    assert r["/scratch"].status.value == "SKIP" and r["/scratch"].message == "no mount holds this path"


RAID_RO = "/dev/md0 /raid xfs ro,noatime 0 0\n"


def test_writable_follows_an_absolute_link_below_the_top_level(tmp_path):
    root = tmp_path / "root"
    host = tree_host(root, files={"/proc/mounts": MOUNTS + RAID_RO})
    (root / "data").mkdir()
    os.symlink("/raid/scratch", root / "data" / "scratch")  # /data/scratch -> /raid/scratch
    assert storage.resolve(host, "/data/scratch/jobs") == "/raid/scratch/jobs"
    r = by_subject(run(storage.writable, host, config=Config(scratch_dirs=["/data/scratch/jobs"])))
    assert r["/data/scratch/jobs"].status.value == "FAIL" and "read-only xfs mount /raid" in r["/data/scratch/jobs"].message


def test_writable_follows_a_relative_link_with_dotdot(tmp_path):
    root = tmp_path / "root"
    host = tree_host(root, files={"/proc/mounts": MOUNTS + RAID_RO})
    (root / "data").mkdir()
    os.symlink("../raid/scratch", root / "data" / "scratch")  # /data/scratch -> ../raid/scratch
    assert storage.resolve(host, "/data/scratch") == "/raid/scratch"
    r = by_subject(run(storage.writable, host, config=Config(scratch_dirs=["/data/scratch"])))
    assert r["/data/scratch"].status.value == "FAIL" and "/raid" in r["/data/scratch"].message


def test_writable_keeps_the_path_after_a_linked_parent(tmp_path):
    # /data -> /mnt/d, and /mnt/d/scratch is its own (read-only) mount: the rest of the path decides.
    root = tmp_path / "root"
    mounts = MOUNTS + "/dev/md0 /mnt/d xfs rw,noatime 0 0\n/dev/md1 /mnt/d/scratch xfs ro,noatime 0 0\n"
    host = tree_host(root, files={"/proc/mounts": mounts})
    os.symlink("/mnt/d", root / "data")
    assert storage.resolve(host, "/data/scratch") == "/mnt/d/scratch"
    r = by_subject(run(storage.writable, host, config=Config(scratch_dirs=["/data/scratch"])))
    assert r["/data/scratch"].status.value == "FAIL" and "mount /mnt/d/scratch (/dev/md1)" in r["/data/scratch"].message


def test_ext4_without_errors_count_is_a_skip_row(tmp_path):
    files = {"/proc/mounts": MOUNTS + RELATIME, **ext4_files("vda"),
             **{k: v for k, v in ext4_files("loop0").items() if not k.endswith("/errors_count")}}
    r = by_subject(run(storage.fs_errors, tree_host(tmp_path, files=files)))
    assert r["/"].status.value == "PASS" and (r["/"].observed, r["/"].expected) == (0, 0)
    assert r["/mnt/data"].status.value == "SKIP"
    assert r["/mnt/data"].message == "knob absent on this host: /sys/fs/ext4/loop0/errors_count"


def test_ext4_recorded_error_expects_zero(tmp_path):
    files = {"/proc/mounts": MOUNTS, **ext4_files("vda", errors=3)}
    r = run(storage.fs_errors, tree_host(tmp_path, files=files))
    assert statuses(r) == ["WARN"] and (r[0].observed, r[0].expected) == (3, 0)
    assert r[0].message == "3 error(s) recorded on /dev/vda"  # no error times recorded: no details


def test_writable_follows_a_chain_of_as_many_links_as_the_kernel(tmp_path):
    # Linux follows up to 40 symlinks in one lookup (MAXSYMLINKS); so does resolve().
    root = tmp_path / "root"
    host = tree_host(root, files={"/proc/mounts": MOUNTS + RAID_RO})
    for i in range(39):
        os.symlink(f"/l{i + 1}", root / f"l{i}")
    os.symlink("/raid/scratch", root / "l39")  # the 40th link
    assert storage.resolve(host, "/l0") == "/raid/scratch"
    r = by_subject(run(storage.writable, host, config=Config(scratch_dirs=["/l0"])))
    assert r["/l0"].status.value == "FAIL" and "read-only xfs mount /raid" in r["/l0"].message
