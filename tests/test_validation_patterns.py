"""Every validation pattern matches the whole value: `re.fullmatch` (or `\\Z`), never a pattern
ending in `$`, which also matches before a trailing newline ("pt\\n" would reach the GRUB
drop-in as two lines). Plain tests of the newline case, per kind and per pattern, and a scan
of the source so a new `$`-anchored pattern cannot come back unnoticed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gpunode.model.profile import Setting
from gpunode.tune.kinds.registry import KINDS
from gpunode.tune.kinds.values import SettingInvalid
from gpunode.tune.profiles import ProfileError, load_profile, parse_setting, shipped_profiles

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "agent" / "gpunode", ROOT / "checks"]


def _shipped_settings():
    seen = {}
    for name in shipped_profiles():
        for setting in load_profile(name).settings.values():
            seen.setdefault(setting.id, setting)
    return sorted(seen.values(), key=lambda s: s.id)


def _raw(setting: Setting, **changed) -> dict:
    raw = {"kind": setting.kind, "key": setting.key, "target": setting.target, "op": setting.op}
    if setting.path:
        raw["path"] = setting.path
    return {**raw, **changed}


@pytest.mark.parametrize("setting", _shipped_settings(), ids=lambda s: s.id)
def test_a_trailing_newline_in_any_field_of_a_shipped_setting_is_refused(setting):
    parse_setting(_raw(setting), "p.yaml")  # as shipped: fine
    fields = ["key", "target"] + (["path"] if setting.path else [])
    for field in fields:
        raw = _raw(setting)
        raw[field] = f"{raw[field]}\n"
        with pytest.raises(ProfileError):
            parse_setting(raw, "p.yaml")


# The kinds' own patterns, one newline case each (what the profile-level guard would hide).
KIND_CASES = [
    ("cmdline", "iommu", "pt\n"),
    ("cmdline", "iommu\n", "pt"),
    ("sysctl", "vm.swappiness\n", 10),
    ("sysctl", "net.ipv4.tcp_congestion_control", "bbr\n"),
    ("sysctl", "vm.swappiness", "10 \n"),
    ("service", "nvidia-persistenced.service\n", "active"),
    ("unit", "slurmd\n.LimitMEMLOCK", "infinity"),
    ("sysfs", "thp.enabled\n", "madvise"),
]


@pytest.mark.parametrize("kind, key, target", KIND_CASES)
def test_each_kind_refuses_a_newline_in_its_own_validation(kind, key, target):
    setting = Setting(kind=kind, key=key, target=target)
    if kind == "sysfs":
        setting = Setting(kind=kind, key=key, target=target, path="/sys/kernel/mm/transparent_hugepage/enabled")
    with pytest.raises(SettingInvalid):
        KINDS[kind].validate(setting)


def test_a_sysfs_path_with_a_trailing_newline_is_refused():
    setting = Setting(kind="sysfs", key="thp.enabled", target="madvise",
                      path="/sys/kernel/mm/transparent_hugepage/enabled\n")
    with pytest.raises(SettingInvalid):
        KINDS["sysfs"].validate(setting)
    KINDS["sysfs"].validate(Setting(kind="sysfs", key="thp.enabled", target="madvise",
                                    path="/sys/kernel/mm/transparent_hugepage/enabled"))


def test_the_cmdline_target_pt_newline_never_reaches_the_grub_dropin():
    with pytest.raises(ProfileError, match="control character|must"):
        parse_setting({"kind": "cmdline", "key": "iommu", "target": "pt\n"}, "p.yaml")
    from gpunode.tune.kinds.cmdline import PARAM_VALUE, dropin_tokens, valid_token

    assert valid_token("iommu=pt") and not valid_token("iommu=pt\n") and not valid_token("iommu\n")
    assert PARAM_VALUE.fullmatch("pt") and not PARAM_VALUE.fullmatch("pt\n")
    line = 'GRUB_CMDLINE_LINUX_DEFAULT="${GRUB_CMDLINE_LINUX_DEFAULT} iommu=pt"'
    assert dropin_tokens(line + "\n") == ["iommu=pt"]
    assert dropin_tokens(line + "\nX") is None  # a line glued on: not gpunode's format


def test_other_whole_value_checks_refuse_a_trailing_newline():
    from gpunode.baselines.record import build_baseline
    from gpunode.baselines.schema import BaselineError
    from gpunode.prometheus import Family, exposition
    from gpunode.tune.kinds.gpu import layout_slices
    from gpunode.tune.kinds.values import knob_value

    assert "gpunode_up" in exposition([Family("gpunode_up", "up").add({}, 1)])
    with pytest.raises(ValueError, match="bad metric name"):
        exposition([Family("gpunode_up\n", "up").add({}, 1)])
    with pytest.raises(BaselineError, match="--name"):
        build_baseline([], "h100-lab\n")
    with pytest.raises(BaselineError, match="no bench runs"):  # the name itself is fine
        build_baseline([], "h100-lab")
    assert layout_slices({"1g.10gb": 4}) == 4 and layout_slices({"1g.10gb\n": 4}) == 0
    with pytest.raises(SettingInvalid):
        knob_value("performance\n", "target")


_PATTERN_END = re.compile(r"""\$(["'])""")
# Record parsers (not validation) where matching before one final newline is the intent, by
# (file, pattern name). A validation pattern never belongs here.
RECORD_PARSERS = {
    ("agent/gpunode/watch/sources.py", "_KMSG"): "one /dev/kmsg record, which ends in a newline",
}


def test_no_validation_pattern_in_the_source_ends_in_dollar():
    """A regex literal ending in `$` anchors before a trailing newline too: use fullmatch (or
    \\Z). Only a MULTILINE search over a whole text (one match per line) may end in `$`."""
    offenders = []
    for base in SOURCES:
        for path in sorted(base.rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if not re.search(r"""\br["']""", line) or not _PATTERN_END.search(line):
                    continue
                if "re.MULTILINE" in line or "re.M)" in line:
                    continue
                name = line.split("=", 1)[0].strip()
                if (str(path.relative_to(ROOT)), name) in RECORD_PARSERS:
                    continue
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []
