"""apply / rollback / history through the real CLI on a fixture root (--sysroot)."""

from __future__ import annotations

import json
import os
import stat

from apply_fixtures import apply_json, gpunode, make_tree, picture

from gpunode.tune.journal import StateDir


def _ids(doc, status=None):
    return [(c["setting"], c["subject"]) for c in doc["changes"] if status is None or c["status"] == status]


def test_dry_run_plans_and_changes_nothing(tmp_path):
    root = make_tree(tmp_path / "root")
    before = picture(root)
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(tmp_path / "state"), "--dry-run")
    assert rc == 0 and doc["schema"] == "gpunode.apply/1" and doc["result"] == "planned"
    rows = {(c["setting"], c["subject"]): c for c in doc["changes"]}
    swap = rows[("sysctl.vm.swappiness", "/proc/sys/vm/swappiness")]
    assert (swap["current"], swap["target"], swap["status"]) == ("60", "10", "planned")
    # >= never lowers a field: only the third tcp_rmem field moves; wmem_max (bigger) is left alone
    assert rows[("sysctl.net.ipv4.tcp_rmem", "/proc/sys/net/ipv4/tcp_rmem")]["target"] == "4096 131072 268435456"
    assert not any(s == "sysctl.net.core.wmem_max" for s, _ in rows)
    # only the governors that are wrong, only the IRQs off the NIC's node (round-robin on node 1)
    assert [s for (k, s) in rows if k == "sysfs.cpu.governor"] == [
        "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "/sys/devices/system/cpu/cpu2/cpufreq/scaling_governor"]
    assert rows[("irq.nic-numa-local", "eth0 IRQ 40")]["target"] == "4 (node 1)"
    assert rows[("irq.nic-numa-local", "eth0 IRQ 42")]["target"] == "6 (node 1)"
    grub = rows[("cmdline.iommu", "/etc/default/grub.d/90-gpunode.cfg")]
    assert grub["reboot_required"] and grub["status"] == "blocked" and "--allow-reboot-settings" in grub["note"]
    assert picture(root) == before
    assert not (tmp_path / "state").exists()


def test_apply_is_idempotent_and_rollback_is_byte_exact(tmp_path):
    root = make_tree(tmp_path / "root")
    os.chmod(root / "etc/default/grub", 0o640)
    before = picture(root)
    state = str(tmp_path / "state")
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", state, "--allow-reboot-settings")
    assert doc["result"] == "applied", doc
    assert rc == 1  # the kernel command line waits for a reboot (issue 12: a pending reboot exits 1)
    assert all(c["status"] == "applied" for c in doc["changes"])
    apply_id = doc["id"]
    # what apply wrote is what the audit checks
    audit = json.loads(gpunode("audit", "--sysroot", str(root), "--json", "--tag", "profile").stdout)
    wrong = [c for c in audit["checks"] if c["status"] in ("WARN", "FAIL") and c["id"] != "cmdline.iommu"]
    assert wrong == []
    assert (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text() == "always\n"
    assert (root / "proc/sys/net/core/wmem_max").read_text() == "1048576000\n"
    # the kernel parameter goes into a drop-in update-grub sources last; /etc/default/grub is left alone
    dropin = (root / "etc/default/grub.d/90-gpunode.cfg").read_text()
    assert dropin.endswith('GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} iommu=pt"\n')
    assert before["/etc/default/grub"] == picture(root)["/etc/default/grub"]
    limits = (root / "etc/security/limits.d/90-gpunode.conf").read_text()
    assert "*        soft  memlock  unlimited" in limits and "*        hard  nofile   1048576" in limits
    sysctl_d = (root / "etc/sysctl.d/90-gpunode.conf").read_text()
    assert "vm.swappiness = 10\n" in sysctl_d and "net.ipv4.tcp_rmem = 4096 131072 268435456\n" in sysctl_d
    unit = (root / "etc/systemd/system/gpunode-apply.service").read_text()
    assert "After=nvidia-persistenced.service nvidia-fabricmanager.service" in unit
    assert f"apply --boot --state-dir {state}" in unit
    assert os.readlink(root / "etc/systemd/system/multi-user.target.wants/gpunode-apply.service") == \
        "/etc/systemd/system/gpunode-apply.service"
    boot = json.loads((root / "etc/gpunode/apply-boot.json").read_text())
    assert {s["kind"] + "." + s["key"] for s in boot["settings"]} == {
        "sysfs.cpu.governor", "sysfs.thp.enabled", "sysfs.nvme.scheduler", "sysfs.nvme.read_ahead_kb",
        "irq.nic-numa-local"}
    assert stat.S_IMODE((root / "etc/gpunode/apply-boot.json").stat().st_mode) == 0o600
    journal = StateDir(tmp_path / "state", root).applies / f"{apply_id}.jsonl"
    assert stat.S_IMODE(journal.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700

    after = picture(root)
    rc, again = apply_json("--sysroot", str(root), "--state-dir", state, "--allow-reboot-settings")
    # only the kernel command line is left: it is in GRUB and waits for a reboot (exit 1)
    assert (rc, again["result"], again["id"]) == (1, "nothing-to-change", None)
    assert [(c["setting"], c["status"]) for c in again["changes"]] == [("cmdline.iommu", "blocked")]
    assert "reboot to take effect" in again["changes"][0]["note"]
    assert picture(root) == after
    plain = gpunode("apply", "--sysroot", str(root), "--state-dir", state, "--allow-reboot-settings")
    assert "nothing to change" in plain.stdout

    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", state, "--json")
    assert rb.returncode == 0, rb.stderr
    assert {r["status"] for r in json.loads(rb.stdout)["restores"]} == {"restored"}
    assert picture(root) == before
    hist = json.loads(gpunode("history", "--state-dir", state, "--sysroot", str(root), "--json").stdout)
    assert [(a["id"], a["status"]) for a in hist["applies"]] == [(apply_id, "rolled-back")]
    nothing = gpunode("rollback", "--sysroot", str(root), "--state-dir", state)
    assert nothing.returncode == 0 and "nothing to roll back" in nothing.stderr  # a fleet may run it twice
    doc = json.loads(gpunode("rollback", "--sysroot", str(root), "--state-dir", state, "--json").stdout)
    assert doc["result"] == "nothing-to-roll-back" and doc["restores"] == []
    assert picture(root) == before
    unknown = gpunode("rollback", "--sysroot", str(root), "--state-dir", state, "--id", "20990101T000000Z-1")
    assert unknown.returncode != 0 and "gpunode: error:" in unknown.stderr
    fresh = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(tmp_path / "never-used"))
    assert fresh.returncode == 0 and "nothing to roll back" in fresh.stderr


def test_rollback_leaves_values_changed_by_someone_else(tmp_path):
    root = make_tree(tmp_path / "root")
    state = str(tmp_path / "state")
    apply_json("--sysroot", str(root), "--state-dir", state, "--only", "sysctl.vm.*,sysfs.thp.*", "--no-persist")
    (root / "proc/sys/vm/swappiness").write_text("33\n")  # an operator changed it since
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", state)
    assert rb.returncode == 1
    assert "vm.swappiness" in rb.stderr and "not what gpunode wrote" in rb.stderr
    assert (root / "proc/sys/vm/swappiness").read_text() == "33\n"
    assert (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text() == "always [madvise] never\n"
    hist = json.loads(gpunode("history", "--state-dir", state, "--sysroot", str(root), "--json").stdout)
    assert hist["applies"][0]["status"] == "partly-rolled-back"


def test_two_applies_roll_back_newest_first(tmp_path):
    root = make_tree(tmp_path / "root")
    before = picture(root)
    state = str(tmp_path / "state")
    _, first = apply_json("--sysroot", str(root), "--state-dir", state, "--only", "sysctl.vm.swappiness")
    _, second = apply_json("--sysroot", str(root), "--state-dir", state, "--only", "sysctl.vm.swappiness",
                           "--set", "sysctl.vm.swappiness=1")
    assert first["result"] == second["result"] == "applied"
    assert (root / "proc/sys/vm/swappiness").read_text() == "1\n"
    assert "vm.swappiness = 1\n" in (root / "etc/sysctl.d/90-gpunode.conf").read_text()
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", state).returncode == 0
    assert (root / "proc/sys/vm/swappiness").read_text() == "10\n"
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", state).returncode == 0
    assert picture(root) == before


def test_boot_reapplies_runtime_settings(tmp_path):
    root = make_tree(tmp_path / "root")
    state = str(tmp_path / "state")
    apply_json("--sysroot", str(root), "--state-dir", state, "--only", "sysfs.thp.enabled,sysctl.vm.swappiness")
    # a reboot: runtime knobs back at the kernel defaults, files kept
    (root / "sys/kernel/mm/transparent_hugepage/enabled").write_text("always [madvise] never\n")
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", state, "--boot")
    assert (rc, doc["result"]) == (0, "applied")
    assert _ids(doc) == [("sysfs.thp.enabled", "/sys/kernel/mm/transparent_hugepage/enabled")]
    assert (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text() == "always\n"
    hist = json.loads(gpunode("history", "--state-dir", state, "--sysroot", str(root), "--json").stdout)
    assert len(hist["applies"]) == 1  # the boot re-apply is not an apply of its own
    assert gpunode("rollback", "--sysroot", str(root), "--state-dir", state).returncode == 0
    assert (root / "sys/kernel/mm/transparent_hugepage/enabled").read_text() == "always [madvise] never\n"
    assert not (root / "etc/gpunode").exists()
    assert apply_json("--sysroot", str(root), "--state-dir", state, "--boot")[1]["result"] == "nothing-to-change"


def test_limits_overridden_by_a_later_file_is_refused(tmp_path):
    root = make_tree(tmp_path / "root", {"/etc/security/limits.d/95-site.conf": "* soft memlock 64\n* hard memlock 64\n"})
    rc, doc = apply_json("--sysroot", str(root), "--state-dir", str(tmp_path / "s"), "--only", "limits.memlock")
    assert rc == 1 and doc["result"] == "nothing-to-change"
    assert "95-site.conf sorts after" in doc["changes"][0]["note"]


def test_a_partial_rollback_journals_exactly_the_values_it_left(tmp_path):
    root = make_tree(tmp_path / "root")
    state = tmp_path / "state"
    _, doc = apply_json("--sysroot", str(root), "--state-dir", str(state), "--only", "sysctl.vm.*,sysfs.thp.*",
                        "--no-persist")
    (root / "proc/sys/vm/swappiness").write_text("33\n")  # an operator changed it since
    rb = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state), "--json")
    assert rb.returncode == 1, rb.stdout + rb.stderr
    restores = json.loads(rb.stdout)["restores"]
    assert len(restores) > 1 and [r["status"] for r in restores].count("left") == 1
    end = json.loads((StateDir(state, root).applies / f"{doc['id']}.jsonl").read_text().splitlines()[-1])
    assert end["type"] == "rollback-end" and end["result"] == "partial"
    assert [(r["subject"], r["status"]) for r in end["left"]] == [("/proc/sys/vm/swappiness", "left")]
