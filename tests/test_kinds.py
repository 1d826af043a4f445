"""Setting kinds: one class per kind in one registry, and every value validated where a profile,
overlay or --set is loaded (issue 11 item 2, issue 13 item 3)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpunode.tune.kinds import base
from gpunode.tune.kinds.cmdline import dropin_tokens, render_dropin, valid_token
from gpunode.tune.kinds.registry import KINDS, kind_of
from gpunode.tune.profiles import ProfileError, load_profile, parse_setting, shipped_profiles

AGENT = Path(__file__).resolve().parent.parent / "agent" / "gpunode"
CHECKS = Path(__file__).resolve().parent.parent / "checks"


def test_every_kind_is_one_class_with_its_facts_as_attributes():
    assert set(KINDS) == {"sysctl", "sysfs", "limits", "cmdline", "service", "unit", "irq", "gpu", "json", "module"}
    for name, kind in KINDS.items():
        assert kind.name == name and isinstance(kind, base.SettingKind)
        assert kind.verify in (base.VERIFY_SUBJECTS, base.VERIFY_ALL, base.VERIFY_NONE)
        assert kind.persists_in in (base.SYSCTL_D, base.BOOT_SPEC, base.ITSELF)
    assert kind_of("gpu").needs_gpu and not kind_of("sysctl").needs_gpu
    assert kind_of("cmdline").needs_reboot and kind_of("cmdline").verify == base.VERIFY_NONE
    assert kind_of("sysctl").persists_in == base.SYSCTL_D and kind_of("sysfs").persists_in == base.BOOT_SPEC


def test_gpu_persistence_depends_on_the_key():
    prof = load_profile("training")
    gpu = kind_of("gpu")
    assert gpu.persistence(prof.get("gpu.power_limit")) == base.BOOT_SPEC
    assert gpu.persistence(prof.get("gpu.ecc_mode")) == base.ITSELF


_NAMES = "(sysctl|sysfs|limits|cmdline|service|irq|gpu|unit)"
_KIND_COMPARE = re.compile(
    rf"""\b(setting|s|existing)\.kind\s*(==|!=|in\b)|setting_id\.startswith\(["']{_NAMES}|"""
    r"""\{\s*["'](sysctl|sysfs|limits|cmdline|service|irq)["']\s*:|"""
    rf"""\bkind(_name)?\s*(==|!=)\s*["']{_NAMES}["']""")


def test_no_kind_name_is_compared_outside_the_registry():
    """Adding a kind is one file and one registry line: nothing else dispatches on kind names."""
    offenders = []
    for path in [*AGENT.rglob("*.py"), *CHECKS.glob("*.py")]:
        if "tune/kinds" in path.as_posix() or path.name == "journal.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if _KIND_COMPARE.search(line):
                offenders.append(f"{path.name}:{n}: {line.strip()}")
    assert offenders == []


def test_shipped_profiles_validate():
    for name in shipped_profiles():
        prof = load_profile(name)
        for s in prof.settings.values():
            assert kind_of(s).validate(s) == s  # shipped values are already normal


def _load(tmp_path, line: str):
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nsettings:\n  - " + line + "\n")
    return load_profile(str(path))


HOSTILE = [
    # (setting line, words the one-line error must carry)
    ('{kind: sysctl, key: kernel.core_pattern, target: "core\\nkernel.modprobe = /tmp/x"}', "control character"),
    ("{kind: sysctl, key: vm.swappiness, target: .nan}", "finite"),
    ("{kind: sysctl, key: vm.swappiness, target: .inf}", "finite"),
    ("{kind: sysctl, key: vm.swappiness, target: -5}", "out of range"),
    ("{kind: sysctl, key: net.ipv4.tcp_keepalive_time, target: -5}", "out of range 0.."),
    ("{kind: sysctl, key: net.core.rmem_max, target: 1e90}", "not a whole number"),
    ("{kind: sysctl, key: net.core.rmem_max, target: 1.0e+90}", "target 1e+90 is out of range"),
    ('{kind: sysctl, key: kernel.hostname, target: "; rm -rf /"}', "one word"),
    ('{kind: sysctl, key: kernel.core_pattern, target: "|/tmp/x %p"}', "one word"),
    ("{kind: sysctl, key: vm/../../etc/passwd, target: 1}", "must look like vm.swappiness"),
    ("{kind: sysctl, key: net.core.default_qdisc, target: 5}", "name such as fq"),
    ("{kind: sysctl, key: vm.swappiness, target: 500}", "out of range 0..200"),
    ('{kind: cmdline, key: iommu, target: "x\\" ; touch /tmp/p ; \\""}', "kernel parameter value"),
    ("{kind: cmdline, key: iommu, target: \"$(reboot)\"}", "kernel parameter value"),
    ("{kind: cmdline, key: iommu, target: \"`id`\"}", "kernel parameter value"),
    ("{kind: cmdline, key: iommu, target: \"pt quiet\"}", "kernel parameter value"),
    ("{kind: cmdline, key: 'iommu=pt', target: true}", "kernel parameter name"),
    ("{kind: cmdline, key: iommu, target: .nan}", "finite"),
    ("{kind: sysfs, key: x, path: /sys/../x, target: 1}", "must stay under /sys/"),
    ("{kind: sysfs, key: x, path: /sys/a/../../x, target: 1}", "must stay under /sys/"),
    ("{kind: sysfs, key: x, path: /etc/passwd, target: 1}", "must stay under /sys/"),
    ("{kind: sysfs, key: x, path: sys/kernel/x, target: 1}", "must be absolute"),
    ("{kind: sysfs, key: x, target: 1}", "needs 'path'"),
    ("{kind: sysctl, key: vm.swappiness, path: /sys/x, target: 1}", "only for sysfs"),
    ("{kind: limits, key: memlock, target: -5}", "out of range"),
    ("{kind: limits, key: memlock, target: 1.5}", "whole number"),
    ("{kind: limits, key: nofile, target: 1e90}", "whole number"),
    ("{kind: service, key: 'irq;balance', target: inactive}", "systemd unit name"),
    ("{kind: service, key: irqbalance, target: stopped}", "active, inactive"),
    ("{kind: unit, key: slurmd.ExecStart, target: infinity}", "UNIT.PROPERTY"),
    ("{kind: unit, key: slurmd.LimitMEMLOCK, target: lots}", "whole number"),
    ("{kind: gpu, key: power_limit, target: .nan}", "finite"),
    ("{kind: gpu, key: power_limit, target: .inf}", "finite"),
    ("{kind: gpu, key: power_limit, target: -5}", "out of range"),
    ("{kind: gpu, key: power_limit, target: 1.0e+90}", "out of range"),
    ("{kind: gpu, key: compute_mode, target: \"default\\n\"}", "control character"),
    ("{kind: gpu, key: applications_clocks, target: '99999999,1980'}", "up to 10000"),
]


@pytest.mark.parametrize(("line", "words"), HOSTILE)
def test_hostile_values_are_refused_in_one_line_naming_file_and_setting(tmp_path, line, words):
    with pytest.raises(ProfileError) as exc:
        _load(tmp_path, line)
    message = str(exc.value)
    assert "\n" not in message and words in message
    assert message.startswith(f"{tmp_path / 'p.yaml'}: ")


def test_set_is_validated_like_the_profile():
    prof = load_profile("training")
    from gpunode.tune.profiles import apply_set

    for value in (".nan", ".inf", "-5", "1e90"):
        with pytest.raises(ProfileError, match=r"^--set: gpu\.power_limit: "):
            apply_set(prof, "gpu.power_limit", value)
    apply_set(prof, "gpu.power_limit", "650")
    assert prof.get("gpu.power_limit").target == 650


def test_values_are_normalised_once_where_loaded(tmp_path):
    sysfs = _load(tmp_path, "{kind: sysfs, key: x, path: /sys/kernel/mm/../mm//transparent_hugepage/enabled, target: always}")
    assert sysfs.get("sysfs.x").path == "/sys/kernel/mm/transparent_hugepage/enabled"
    limits = _load(tmp_path, "{kind: limits, key: memlock, target: infinity}")
    assert limits.get("limits.memlock").target == "unlimited"
    rmem = _load(tmp_path, "{kind: sysctl, key: net.ipv4.tcp_rmem, op: '>=', target: '4096   87380 268435456'}")
    assert rmem.get("sysctl.net.ipv4.tcp_rmem").target == "4096 87380 268435456"
    paranoid = _load(tmp_path, "{kind: sysctl, key: kernel.perf_event_paranoid, target: -1}")
    assert paranoid.get("sysctl.kernel.perf_event_paranoid").target == -1  # a knob that takes -1


def test_cmdline_dropin_round_trips_and_refuses_what_is_not_its_own():
    text = render_dropin(["iommu=pt", "hugepagesz=1G", "nosmt"])
    assert dropin_tokens(text) == ["iommu=pt", "hugepagesz=1G", "nosmt"]
    assert dropin_tokens(None) == []
    assert dropin_tokens('GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} $(id)"\n') is None
    assert dropin_tokens('GRUB_CMDLINE_LINUX="iommu=pt"\n') is None
    with pytest.raises(ValueError):
        render_dropin(['x";id;"'])


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_cmdline_target_is_refused_or_renders_as_one_inert_token(value):
    """Whatever passes validation is a single token with no shell syntax in the sourced file."""
    try:
        setting = parse_setting({"kind": "cmdline", "key": "iommu", "target": value}, "p.yaml")
    except ProfileError:
        return
    token = f"iommu={setting.target}"
    assert valid_token(token)
    text = render_dropin([token])
    body = text.splitlines()[-1]
    assert body == 'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} ' + token + '"'
    assert not set(token) & set("\"'`$;&|<>(){}\\ \t\n*?!#~")


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=30), st.floats(allow_nan=True, allow_infinity=True), st.integers()))
def test_any_sysctl_target_that_passes_is_one_line_of_plain_fields(value):
    try:
        setting = parse_setting({"kind": "sysctl", "key": "kernel.x", "target": value}, "p.yaml")
    except ProfileError:
        return
    text = str(setting.target)
    assert "\n" not in text and "\r" not in text and text.strip() == text and text
    assert re.fullmatch(r"[A-Za-z0-9_.,:+@%\- ]+", text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["sys", "..", ".", "", "kernel", "mm", "x*", "a b", "..%2f", "\n", "etc"]),
                min_size=1, max_size=7))
def test_any_sysfs_path_that_passes_stays_under_sys(parts):
    path = "/" + "/".join(parts)
    try:
        setting = parse_setting({"kind": "sysfs", "key": "k", "path": path, "target": 1}, "p.yaml")
    except ProfileError:
        return
    assert setting.path.startswith("/sys/") and ".." not in setting.path.split("/")
    import os

    assert os.path.normpath(setting.path) == setting.path


@pytest.mark.parametrize("args", [
    ["--set", "gpu/power_limit=.nan"],
    ["--set", 'cmdline.iommu=x" ; touch /tmp/p ; "'],
    ["--set", "sysctl.vm.swappiness=1e90"],
    ["--overlay", "OVERLAY"],
])
def test_cli_refuses_hostile_values_in_one_line_and_changes_nothing(tmp_path, args):
    from apply_fixtures import gpunode, make_tree, picture

    root = make_tree(tmp_path / "root")
    overlay = tmp_path / "o.yaml"
    overlay.write_text('settings:\n  - {kind: sysctl, key: kernel.core_pattern, target: "x\\n|/tmp/evil %p"}\n')
    before = picture(root)
    args = [str(overlay) if a == "OVERLAY" else a for a in args]
    proc = gpunode("apply", "--sysroot", str(root), "--state-dir", str(tmp_path / "state"), "--yes", *args)
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("gpunode: error: ")
    assert picture(root) == before and not (tmp_path / "state").exists()
