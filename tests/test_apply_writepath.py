"""apply's one write path: never out of its root, never blocked by a FIFO, and whatever a kill in
the middle of a write leaves (a temporary file, a new directory, an empty knob) is undone."""

from __future__ import annotations

import json
import os
import time

from apply_fixtures import apply_json, gpunode, make_tree, picture

from gpunode.host.sysroot import SysRoot
from gpunode.tune.journal import StateDir


def _outside(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("precious\n")
    return outside, picture(outside)


def test_a_directory_symlink_in_the_sysroot_does_not_lead_out(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    outside, _ = _outside(tmp_path)
    (outside / "limits").mkdir()
    outside_before = picture(outside)
    # an absolute link and a relative one climbing far above the root: both name places in the root
    for name in os.listdir(root / "etc/sysctl.d"):
        os.unlink(root / "etc/sysctl.d" / name)
    os.rmdir(root / "etc/sysctl.d")
    os.symlink(str(outside), root / "etc/sysctl.d")
    (root / "etc/security/limits.d/10-site.conf").unlink()
    (root / "etc/security/limits.d").rmdir()
    os.symlink("../" * 12 + str(outside / "limits").lstrip("/"), root / "etc/security/limits.d")
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*,limits.*")
    assert rc == 0, doc
    assert picture(outside) == outside_before
    inside = root / str(outside).lstrip("/")
    assert (inside / "90-gpunode.conf").is_file() and (inside / "limits/90-gpunode.conf").is_file()
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert rb.returncode == 0, rb.stderr
    assert picture(root) == before and picture(outside) == outside_before


def test_reads_stay_in_the_root_and_take_regular_files_only(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/hostname").write_text("inside\n")
    secret = tmp_path / "secret"
    secret.write_text("outside\n")
    os.symlink(str(secret), root / "etc/abs")
    os.symlink("../../../../../../" + str(secret).lstrip("/"), root / "etc/rel")
    os.symlink("/etc/hostname", root / "etc/alias")
    os.mkfifo(root / "etc/fifo")
    sysroot = SysRoot(root)
    assert sysroot.read("/etc/abs") is None and sysroot.read("/etc/rel") is None
    assert sysroot.read("/etc/alias") == "inside\n"  # the image's own /etc/hostname
    assert sysroot.read("/etc/../../../etc/hostname") == "inside\n"
    started = time.monotonic()
    assert sysroot.read("/etc/fifo") is None
    assert time.monotonic() - started < 5
    assert sysroot.listdir("/etc/abs") is None
    assert sysroot.path("/etc/abs") == root / "etc/abs"


def test_a_fifo_in_the_sysroot_does_not_hang_a_dry_run(tmp_path):
    root = make_tree(tmp_path / "root")
    (root / "proc/sys/vm/swappiness").unlink()
    os.mkfifo(root / "proc/sys/vm/swappiness")
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / "s"), "--dry-run", "--json",
                   timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["result"] == "planned"


def _index_of(root, tmp_path, subject, *args):
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / "plan"), "--dry-run", "--json",
                   *args)
    writes = [c for c in json.loads(proc.stdout)["changes"] if c["status"] == "planned"]
    return 1 + [c["subject"] for c in writes].index(subject)


def _killed_before_writing_the_boot_spec(tmp_path):
    """An apply SIGKILLed right after journaling the boot spec's write: (root, state, picture before)."""
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    only = ("--only", "sysfs.thp.*")
    n = _index_of(root, tmp_path, "/etc/gpunode/apply-boot.json", *only)
    killed = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), *only,
                     env={"GPUNODE_TEST_CRASH_AFTER": f"journal:{n}"})
    assert killed.returncode == -9, killed.stderr
    return root, state, before


def test_rollback_cleans_a_temp_file_and_new_directory_left_by_a_kill(tmp_path):
    root, state, before = _killed_before_writing_the_boot_spec(tmp_path)
    # what a kill between creating the temporary file and renaming it leaves behind
    (root / "etc/gpunode").mkdir()
    (root / "etc/gpunode/.apply-boot.json.gpunode.0badf00d").write_text('{"half": ')
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert picture(root) == before


def test_a_knob_left_empty_by_a_kill_gets_its_old_bytes_back(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    killed = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.swappiness",
                     env={"GPUNODE_TEST_CRASH_AFTER": "journal:1"})
    assert killed.returncode == -9, killed.stderr
    (root / "proc/sys/vm/swappiness").write_text("")  # killed between truncate and write
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert json.loads(rb.stdout)["restores"][0]["status"] == "restored"
    assert picture(root) == before


def test_the_boot_unit_is_enabled_by_systemctl_and_disabled_on_rollback(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysfs.thp.*")
    assert rc == 0 == doc["exit_code"], doc
    enable = [c for c in doc["changes"] if c["subject"] == "gpunode-apply.service"]
    assert [(c["setting"], c["status"]) for c in enable] == [("persist.boot", "applied")]
    link = root / "etc/systemd/system/multi-user.target.wants/gpunode-apply.service"
    assert os.readlink(link) == "/etc/systemd/system/gpunode-apply.service"
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state)).returncode == 0
    assert picture(root) == before


def test_without_systemctl_the_boot_unit_is_blocked(tmp_path, monkeypatch):
    import shutil

    from gpunode.host.seam import sysroot_host
    from gpunode.tune.kinds.change import PlannedFiles
    from gpunode.tune.persist import plan_persistence
    from gpunode.tune.plan import make_plan, select_settings
    from gpunode.tune.profiles import load_profile

    host = sysroot_host(make_tree(tmp_path / "root"))
    profile = load_profile("training")
    files = PlannedFiles(host.sys)
    plan = make_plan(host, profile, select_settings(profile, ["sysfs.thp.*"]), files=files)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    boot = [c for c in plan_persistence(plan, files, ["gpunode", "apply", "--boot"]) if c.setting_id == "persist.boot"]
    assert boot and all(c.blocked.startswith("no systemctl on this machine") for c in boot)


def test_a_file_write_syncs_the_data_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    import stat

    from gpunode.tune.files import FileState, write_file_state

    events = []
    real_fsync, real_rename = os.fsync, os.rename
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "rename", lambda *a, **kw: events.append(("rename", a[1])) or real_rename(*a, **kw))
    created = write_file_state(SysRoot(tmp_path), "/etc/new/x.conf", FileState(True, b"a = 1\n", 0o640))
    assert created == ["/etc", "/etc/new"]
    where = [e for e in events if e[0] == "rename"]
    assert where == [("rename", "x.conf")]
    i = events.index(where[0])
    assert any(p.startswith(str(tmp_path / "etc/new/.x.conf.gpunode.")) for _, p in events[:i])  # data first
    assert events[i + 1:] == [("fsync", str(tmp_path / "etc/new"))]  # then the rename itself
    assert ("fsync", str(tmp_path)) in events[:i]  # the new directory's entry too
    target = tmp_path / "etc/new/x.conf"
    assert target.read_bytes() == b"a = 1\n" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert os.listdir(tmp_path / "etc/new") == ["x.conf"]


def test_a_file_changed_by_someone_else_is_left_but_a_killed_write_s_temp_file_is_cleaned(tmp_path):
    root, state, _ = _killed_before_writing_the_boot_spec(tmp_path)
    # gpunode's write was killed after making its temporary file; someone wrote the file since
    (root / "etc/gpunode").mkdir()
    (root / "etc/gpunode/apply-boot.json").write_text('{"theirs": true}\n')
    (root / "etc/gpunode/.apply-boot.json.gpunode.0badf00d").write_text('{"half": ')
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    left = [r for r in json.loads(rb.stdout)["restores"] if r["status"] == "left"]
    assert [r["subject"] for r in left] == ["/etc/gpunode/apply-boot.json"]
    assert os.listdir(root / "etc/gpunode") == ["apply-boot.json"]
    assert (root / "etc/gpunode/apply-boot.json").read_text() == '{"theirs": true}\n'


def test_a_directory_kept_by_someone_s_file_is_removed_by_the_rerun_of_a_killed_rollback(tmp_path):
    root, state = make_tree(tmp_path / "root"), tmp_path / "state"
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysfs.thp.*")
    assert rc == 0, doc
    (root / "etc/gpunode/notes").write_text("someone's\n")  # keeps the directory gpunode made
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state)).returncode == 0
    assert os.listdir(root / "etc/gpunode") == ["notes"]
    journal = StateDir(state, root).applies / f"{doc['id']}.jsonl"
    lines = journal.read_text().splitlines()
    assert json.loads(lines[-1])["type"] == "rollback-end"
    journal.write_text("\n".join(lines[:-1]) + "\n")  # killed just before writing rollback-end
    (root / "etc/gpunode/notes").unlink()
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert {r["status"] for r in json.loads(rb.stdout)["restores"]} == {"restored"}
    assert picture(root) == before
