"""Bad inventories and missing or malformed playbook vars stop `gpunode fleet` before anything
runs: one `gpunode: error:` line, exit 2, and no run directory created (Ansible never started).
The inventory is parsed by Ansible's own ansible-inventory, as the run would parse it."""

from __future__ import annotations

import fleetkit
import pytest

from gpunode.fleet.specs import PLAYBOOKS
from gpunode.fleet.validate import FleetError, FleetInventory, check_vars, parse_inventory_list


@pytest.fixture(autouse=True)
def _ansible():
    fleetkit.require_ansible()


def refused(tmp_path, args: list[str]) -> str:
    state = tmp_path / "state"
    result = fleetkit.fleet([*args, "--state-dir", str(state)], timeout=120)
    assert result.rc == 3, f"rc {result.rc}: {result.stdout[-2000:]} {result.stderr[-2000:]}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpunode: error: "), result.stderr
    assert result.stdout == ""
    assert not state.exists(), "nothing may run (or be created) before the inputs are valid"
    return lines[0]


def inventory(tmp_path, text: str):
    path = tmp_path / "inv.ini"
    path.write_text(text)
    return str(path)


def test_missing_inventory_file(tmp_path):
    err = refused(tmp_path, ["audit", "-i", str(tmp_path / "nope.ini")])
    assert "nope.ini: no such file" in err


def test_unparsable_inventory_is_an_error_not_an_empty_fleet(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-01\n[h100:vars]\ngpunode_profile\n")  # a var line without '='
    err = refused(tmp_path, ["audit", "-i", inv])
    assert "inv.ini" in err and "gpunode_profile" in err


def test_limit_that_matches_nothing(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-01\ngpu-02\n")
    err = refused(tmp_path, ["audit", "-i", inv, "--limit", "h200"])
    assert "no hosts match --limit 'h200'" in err


def test_apply_needs_a_profile_for_every_host(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-01\ngpu-02 gpunode_profile=inference\n[h200]\ngpu-03\n")
    err = refused(tmp_path, ["apply", "-i", inv])
    assert "gpu-01: gpunode_profile is not set" in err and "gpu-03: gpunode_profile is not set" in err
    assert "gpu-02" not in err and "-e NAME=VALUE" in err


def test_malformed_vars_are_named(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-01 gpunode_expected_gpus=eight gpunode_snapshot=snaps/a\n"
                              "gpu-02 gpunode_slurm_drain=maybe gpunode_audit_args=--skip\n")
    err = refused(tmp_path, ["audit", "-i", inv])
    assert "gpu-01: gpunode_expected_gpus='eight' is not a whole number >= 0" in err
    assert "gpu-01: gpunode_snapshot='snaps/a' is not an absolute path" in err
    assert "gpu-02: gpunode_slurm_drain='maybe' is not true or false" in err
    assert "gpu-02: gpunode_audit_args must be a list of strings" in err


def test_mode_and_node_paths_are_checked_before_every_node_fails_on_them(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-03 gpunode_bench_mode=fast gpunode_config=etc/gpunode.yaml\n")
    err = refused(tmp_path, ["bench", "-i", inv])
    assert "gpu-03: gpunode_bench_mode='fast' is not one of quick, full" in err
    assert "gpu-03: gpunode_config='etc/gpunode.yaml' is not an absolute path" in err


def test_install_needs_a_wheel_or_an_index_spec(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-01\n")
    assert "gpu-01: set one of gpunode_wheel, gpunode_pip_spec" in refused(tmp_path, ["install", "-i", inv])
    assert "not a .whl file" in refused(tmp_path, ["install", "-i", inv, "--wheel", inv])


def test_bad_options(tmp_path):
    inv = inventory(tmp_path, "[h100]\ngpu-01 gpunode_profile=training\n")
    assert "expected NAME=VALUE" in refused(tmp_path, ["audit", "-i", inv, "-e", "justaword"])
    assert "--batch 'half'" in refused(tmp_path, ["apply", "-i", inv, "--batch", "half"])
    assert "--margin 1.5" in refused(tmp_path, ["bench", "-i", inv, "--margin", "1.5"])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "audit.yml not found" in refused(tmp_path, ["audit", "-i", inv, "--playbooks", str(empty)])


def test_extra_vars_satisfy_and_override_the_inventory(tmp_path):
    inv = FleetInventory(path="inv", limit=None, hosts=["a", "b"], groups={"a": ["h100"], "b": ["h100"]},
                         hostvars={"a": {"gpunode_expected_gpus": "x"}, "b": {}})
    with pytest.raises(FleetError, match="a: gpunode_profile is not set; a: gpunode_expected_gpus='x'"):
        check_vars(PLAYBOOKS["apply"], inv, {})
    check_vars(PLAYBOOKS["apply"], inv, {"gpunode_profile": "training", "gpunode_expected_gpus": 8})


def test_sku_group_of_a_host():
    data = {"_meta": {"hostvars": {"c": {"gpunode_sku": "h100-pcie"}}},
            "all": {"children": ["ungrouped", "gpu", "h100", "rack1"]},
            "gpu": {"children": ["h100"]}, "h100": {"hosts": ["a", "c"]}, "rack1": {"hosts": ["a"]},
            "ungrouped": {"hosts": ["lone"]}}
    inv = parse_inventory_list(data, "inv", None)
    assert inv.hosts == ["a", "c", "lone"]
    assert inv.groups == {"a": ["h100", "rack1"], "c": ["h100"], "lone": []}
    assert [inv.sku(h) for h in inv.hosts] == ["h100", "h100-pcie", "ungrouped"]


def test_example_inventory_is_valid_for_every_playbook():
    from gpunode.fleet.specs import playbooks_dir
    from gpunode.fleet.validate import validate

    example = fleetkit.FIXTURES.parent.parent / "inventory.example.ini"
    for spec in PLAYBOOKS.values():
        extra = {"gpunode_pip_spec": "gpunode==0.1.0"} if spec.name == "install" else {}
        inv = validate(spec, example, None, extra, playbooks_dir())
        assert len(inv.hosts) == 7
    assert {inv.sku(h) for h in inv.hosts} == {"h100-sxm-8", "h200-8"}
    assert inv.hostvars["gpu-h200-03.example.net"]["gpunode_expected_gpus"] == 7
    assert inv.hostvars["gpu-h100-01.example.net"]["gpunode_profile"] == "training"


def test_playbooks_pass_ansible_syntax_check():
    from gpunode.fleet.specs import playbooks_dir
    from gpunode.fleet.validate import ansible_env, ansible_tool
    from gpunode.host.runner import Runner

    pdir = playbooks_dir()
    files = [str(pdir / spec.file) for spec in PLAYBOOKS.values()]
    result = Runner().run([ansible_tool("ansible-playbook"), "--syntax-check", "-i", "localhost,", *files],
                          timeout=120, env=ansible_env(), cwd=str(pdir))
    assert result.rc == 0, result.stdout + result.stderr
    assert "ERROR" not in result.stderr and "WARNING" not in result.stderr, result.stderr


def test_binary_inventory_error_stays_printable(tmp_path):
    # Ansible quotes the line it cannot parse; a wheel in an inventory dir is control bytes.
    (tmp_path / "inv").mkdir()
    (tmp_path / "inv" / "hosts.ini").write_bytes(b"[h100]\ngpu-01 " + b"\x1b[2J\x07\xdd\xa7Y\x1aPK\x03\x04" * 60 + b"\n")
    err = refused(tmp_path, ["audit", "-i", str(tmp_path / "inv")])
    assert "Expected key=value host variable assignment" in err
    assert err.isprintable() and len(err) < 400, repr(err)
