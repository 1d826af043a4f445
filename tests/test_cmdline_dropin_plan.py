"""The GRUB drop-in branches of the cmdline kind's plan (issue 21 split Cmdline.plan: these pin
each way the drop-in plan can go, the foreign-format one included, which had no test)."""

from __future__ import annotations

from gpunode.model.profile import Profile, Setting
from gpunode.tune.kinds.cmdline import DROPIN, render_dropin
from gpunode.tune.plan import make_plan
from testkit import tree_host

DEBIAN_GRUB = {"/etc/default/grub": 'GRUB_CMDLINE_LINUX_DEFAULT="quiet"\n', "/etc/default/grub.d/.keep": ""}
CMDLINE = "BOOT_IMAGE=/vmlinuz ro quiet\n"


def plan(tmp_path, files, setting=None, allow_reboot=True):
    setting = setting or Setting("cmdline", "pcie_aspm", "off")
    host = tree_host(tmp_path, {**DEBIAN_GRUB, "/proc/cmdline": CMDLINE, **files})
    return make_plan(host, Profile("t", settings={setting.id: setting}), [setting], allow_reboot=allow_reboot).changes


def test_a_dropin_not_in_gpunodes_format_is_left_to_the_operator(tmp_path):
    (change,) = plan(tmp_path, {DROPIN: "GRUB_TIMEOUT=$(reboot)\n"})
    assert change.blocked == f"{DROPIN} is not in the format gpunode writes; fix or remove it by hand"
    assert (change.action, change.target, change.before, change.after) == ("file", DROPIN, None, None)
    assert change.reboot_required and change.after_text == "pcie_aspm=off"


def test_a_parameter_already_in_the_dropin_waits_for_the_reboot(tmp_path):
    (change,) = plan(tmp_path, {DROPIN: render_dropin(["pcie_aspm=off"])})
    assert change.blocked == f"already in {DROPIN}; reboot to take effect"


def test_without_allow_reboot_the_dropin_change_is_gated(tmp_path):
    (change,) = plan(tmp_path, {}, allow_reboot=False)
    assert change.blocked.startswith("needs a reboot: rerun with --allow-reboot-settings")
    assert change.post == [["update-grub"]] and change.note == f"{DROPIN}: pcie_aspm=off"
