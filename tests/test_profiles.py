import pytest

from gpunode.tune.profiles import ProfileError, load_profile, parse_set_options, shipped_profiles


def test_shipped_profiles_load_and_inference_extends_training():
    assert shipped_profiles() == ["inference", "training"]
    training, inference = load_profile("training"), load_profile("inference")
    assert training.get("sysfs.thp.enabled").target == "always"
    assert inference.get("sysfs.thp.enabled").target == "madvise"
    assert inference.get("sysctl.vm.swappiness").target == 1
    assert "gpu.mig_mode" in training.settings and "gpu.mig_mode" not in inference.settings
    assert "sysctl.net.ipv4.tcp_rmem" not in inference.settings
    assert inference.get("sysctl.kernel.numa_balancing").target == 0  # inherited
    for s in training.settings.values():
        assert s.why, f"{s.id} has no reason/source"


def write(tmp_path, text, name="p.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "body, message",
    [
        ("settings:\n  - {kind: magic, key: x, target: 1}\n", "unknown kind 'magic'"),
        ("settings:\n  - {kind: sysctl, target: 1}\n", "missing or empty 'key'"),
        ("settings:\n  - {kind: sysctl, key: vm.swappiness}\n", "missing 'target'"),
        ("settings:\n  - {kind: sysctl, key: vm.swappiness, target: [1, 2]}\n", "target must be"),
        ("settings:\n  - {kind: sysctl, key: vm.swappiness, target: 1, op: '>'}\n", "op '>'"),
        ("settings:\n  - {kind: sysctl, key: vm.swappiness, target: abc, op: '<='}\n", "numeric target"),
        ("settings:\n  - {kind: sysfs, key: thp, target: always}\n", "needs 'path'"),
        ("settings:\n  - {kind: gpu, key: persistence_mode, target: yes-please}\n", "true or false"),
        ("settings:\n  - {kind: limits, key: memlock, target: unlimited, colour: red}\n", "unknown field"),
        ("settings: {kind: sysctl}\n", "'settings' must be a list"),
        ("settings:\n  - [1, 2]\n", "must be a mapping"),
        ("bogus: 1\n", "unknown key(s) bogus; known: description, extends, name, settings"),
        ("settings: [\n", "not valid YAML"),
        ("- just a list\n", "mapping at the top level"),
    ],
)
def test_bad_profiles_give_clear_errors(tmp_path, body, message):
    with pytest.raises(ProfileError) as exc:
        load_profile(write(tmp_path, body))
    assert message in str(exc.value)
    assert "p.yaml" in str(exc.value)


def test_unknown_profile_name_lists_shipped_ones():
    with pytest.raises(ProfileError, match="shipped profiles: inference, training"):
        load_profile("trainig")


def test_extends_loop_is_refused(tmp_path):
    write(tmp_path, "extends: b.yaml\n", "a.yaml")
    write(tmp_path, "extends: a.yaml\n", "b.yaml")
    with pytest.raises(ProfileError, match="loops"):
        load_profile(str(tmp_path / "a.yaml"))


def test_overlay_and_set_override_without_editing_shipped_files(tmp_path):
    overlay = write(tmp_path, "settings:\n  - {kind: sysctl, key: vm.swappiness, op: '<=', target: 0, why: site}\n"
                              "  - {kind: cmdline, key: iommu, remove: true}\n", "site.yaml")
    profile = load_profile("training", overlays=[overlay], sets=parse_set_options(["sysctl.net.core.netdev_max_backlog=30000"]))
    assert profile.get("sysctl.vm.swappiness").target == 0
    assert profile.get("cmdline.iommu") is None
    assert profile.get("sysctl.net.core.netdev_max_backlog").target == 30000
    assert profile.get("sysctl.net.core.netdev_max_backlog").op == ">="
    assert load_profile("training").get("sysctl.vm.swappiness").target == 10


def test_bad_set_options():
    with pytest.raises(ProfileError, match="expected KIND.KEY=VALUE"):
        parse_set_options(["vm.swappiness"])
    with pytest.raises(ProfileError, match="no such setting"):
        load_profile("training", sets={"sysctl.vm.nope": "1"})
    with pytest.raises(ProfileError, match="true or false"):
        load_profile("training", sets={"gpu.persistence_mode": "maybe"})


@pytest.mark.parametrize("written", ["010", "1:30", "0b11", "1_000", "+010", "190:20:30.15"])
def test_numbers_yaml_11_and_12_read_differently_are_refused(tmp_path, written):
    # PyYAML (YAML 1.1) made 010 -> 8 and 1:30 -> 90 silently; YAML 1.2 reads 10 and text
    path = write(tmp_path, f"settings:\n  - {{kind: sysctl, key: vm.swappiness, target: {written}}}\n")
    with pytest.raises(ProfileError, match=r"p.yaml:2: a number YAML 1.1 and YAML 1.2 read differently"):
        load_profile(path)
    with pytest.raises(ProfileError, match="YAML 1.1 and YAML 1.2 read differently"):
        load_profile("training", sets={"sysctl.vm.swappiness": written})


def test_plain_numbers_and_quoted_text_still_load(tmp_path):
    assert load_profile("training", sets={"sysctl.vm.swappiness": "10"}).get("sysctl.vm.swappiness").target == 10
    assert load_profile("training", sets={"sysctl.vm.swappiness": "0"}).get("sysctl.vm.swappiness").target == 0
    # quoted "010" is text, and a knob's leading 0 is refused too: the kernel would read it as octal
    with pytest.raises(ProfileError, match="leading 0"):
        load_profile("training", sets={"sysctl.vm.swappiness": "'010'"})
    # a limit is read by pam_limits in base 10: "010" is plain 10 there
    assert load_profile("training", sets={"limits.nofile": "'01048576'"}).get("limits.nofile").target == 1048576


def test_a_file_that_is_not_a_profile_is_never_echoed(tmp_path):
    # /etc/shadow's lines parse as YAML keys: naming them in the error would print the hashes
    shadow = "root:$y$j9T$secretsalt$secrethash:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n"
    (tmp_path / "shadow.yaml").write_text(shadow)
    (tmp_path / "shadow").write_text(shadow)
    for load in (lambda: load_profile(str(tmp_path / "shadow.yaml")),
                 lambda: load_profile("training", overlays=[tmp_path / "shadow"])):
        with pytest.raises(ProfileError, match="2 that are not key names") as err:
            load()
        assert "secret" not in str(err.value) and "daemon" not in str(err.value) and "19000" not in str(err.value)
    # a profile's own typo is still named
    with pytest.raises(ProfileError, match="unknown key.s. setting;"):
        load_profile(write(tmp_path, "setting: []\n"))
