"""The `json` setting kind (issue 24 item 4): Docker's daemon.json default-shm-size and
default-ulimits, written as one journaled file change that keeps every other key, their order
and the file's indentation, refuses a file that is not a JSON object, and rolls back byte-exact.
daemon.json shapes follow Docker's documented daemon configuration (dockerd reference,
"Daemon configuration file"); there is no Docker on the lent GPU machines or this one."""

from __future__ import annotations

import base64
import json

import pytest
from apply_fixtures import gpunode, picture

from gpunode.host.facts.docker import parse_daemon_json, shm_size, size_bytes, size_text
from gpunode.model.profile import Profile, Setting
from gpunode.tune.kinds.registry import kind_of
from gpunode.tune.kinds.values import SettingInvalid
from gpunode.tune.plan import make_plan
from gpunode.tune.profiles import load_profile
from testkit import tree_host

DAEMON = "/etc/docker/daemon.json"
DOCKERD = {"/usr/bin/dockerd": ""}
# as `nvidia-ctk runtime configure --runtime=docker` leaves it (4-space indent), plus a site key
CTK_DAEMON = ('{\n    "runtimes": {\n        "nvidia": {\n            "args": [],\n'
              '            "path": "nvidia-container-runtime"\n        }\n    },\n    "log-driver": "json-file"\n}\n')
SHM = Setting("json", "docker.default-shm-size", 1073741824, op=">=", when="docker")
MEMLOCK = Setting("json", "docker.default-ulimits.memlock", "unlimited", when="docker")


def plan_for(tmp_path, files: dict[str, str], *settings: Setting):
    host = tree_host(tmp_path / "root", {**DOCKERD, **files})
    settings = tuple(kind_of(s).validate(s) for s in settings)
    return make_plan(host, Profile("t", settings={s.id: s for s in settings}), list(settings))


def written(change) -> str:
    return base64.b64decode(change.after["data"]).decode()


@pytest.mark.parametrize(("text", "n"), [("64m", 64 << 20), ("1G", 1 << 30), ("1gb", 1 << 30), ("2GiB", 2 << 30),
                                         ("512", 512), (1024, 1024), ("lots", None), ("-1", None), (True, None)])
def test_docker_size_strings(text, n):
    assert size_bytes(text) == n


def test_size_text_is_the_shortest_exact_unit():
    assert [size_text(n) for n in (1 << 30, 64 << 20, 1000, 1536 << 20)] == ["1g", "64m", "1000", "1536m"]


def test_an_unset_shm_size_is_dockers_64_mib():
    assert shm_size({}) == 64 << 20 and shm_size({"default-shm-size": "8g"}) == 8 << 30


def test_both_settings_edit_one_file_keeping_keys_order_and_indentation(tmp_path):
    plan = plan_for(tmp_path, {DAEMON: CTK_DAEMON}, SHM, MEMLOCK)
    first, second = plan.changes
    assert first.after_text == "default-shm-size 1g" and first.current_text == "default-shm-size 64m"
    assert "restart" in first.note and "leaves the restart to you" in first.note
    text = written(second)  # the second change starts from the first one's result
    data = json.loads(text)
    assert list(data) == ["runtimes", "log-driver", "default-shm-size", "default-ulimits"]
    assert data["runtimes"] == {"nvidia": {"args": [], "path": "nvidia-container-runtime"}}
    assert data["default-ulimits"] == {"memlock": {"Name": "memlock", "Hard": -1, "Soft": -1}}
    assert text.startswith('{\n    "runtimes"') and text.endswith("}\n")


def test_a_one_line_file_stays_one_line_and_a_bigger_shm_is_never_lowered(tmp_path):
    plan = plan_for(tmp_path, {DAEMON: '{"default-shm-size": "8g", "debug": false}'}, SHM, MEMLOCK)
    (change,) = plan.changes  # shm 8g already >= 1g
    assert change.setting_id == MEMLOCK.id
    assert written(change) == ('{"default-shm-size": "8g", "debug": false, '
                               '"default-ulimits": {"memlock": {"Name": "memlock", "Hard": -1, "Soft": -1}}}')


def test_a_smaller_shm_size_is_raised_to_the_minimum(tmp_path):
    (change,) = plan_for(tmp_path, {DAEMON: '{"default-shm-size": "64M"}\n'}, SHM).changes
    assert change.current_text == "default-shm-size 64m" and written(change) == '{"default-shm-size": "1g"}\n'


def test_an_existing_ulimit_entry_keeps_its_name_and_other_limits(tmp_path):
    text = '{"default-ulimits": {"nofile": {"Name": "nofile", "Hard": 65536, "Soft": 1024}, ' \
           '"memlock": {"Name": "memlock", "Hard": 67108864, "Soft": 67108864}}}\n'
    (change,) = plan_for(tmp_path, {DAEMON: text}, MEMLOCK).changes
    assert change.current_text == "default-ulimits.memlock 67108864 67108864"
    assert json.loads(written(change))["default-ulimits"]["nofile"] == {"Name": "nofile", "Hard": 65536, "Soft": 1024}


def test_no_daemon_json_yet_writes_a_new_one(tmp_path):
    (change,) = plan_for(tmp_path, {}, SHM).changes
    assert change.before == {"exists": False, "data": None, "mode": None, "link": None}
    assert written(change) == '{\n  "default-shm-size": "1g"\n}\n'


@pytest.mark.parametrize("text", ['["default-shm-size"]', '{"a": 1,}', '{"a": 1, "a": 2}', ""])
def test_a_file_that_is_not_one_json_object_is_refused_never_rewritten(tmp_path, text):
    plan = plan_for(tmp_path, {DAEMON: text}, SHM, MEMLOCK)
    assert plan.changes == []
    assert all("fix the file by hand" in why for _, why in plan.skipped) and len(plan.skipped) == 2
    with pytest.raises(ValueError):
        parse_daemon_json(text)


def test_without_docker_the_settings_are_not_applicable(tmp_path):
    host = tree_host(tmp_path / "root", {DAEMON: CTK_DAEMON})  # a leftover file, no dockerd
    plan = make_plan(host, Profile("t", settings={SHM.id: SHM}), [SHM])
    assert plan.changes == [] and "Docker is not installed" in plan.skipped[0][1]


@pytest.mark.parametrize(("key", "target"), [("docker.debug", True), ("docker.default-shm-size", "lots"),
                                             ("docker.default-ulimits.memlock", -2), ("podman.x", 1),
                                             ("docker.default-shm-size", 0)])
def test_only_listed_keys_and_their_value_shapes_are_accepted(key, target):
    with pytest.raises(SettingInvalid):
        kind_of("json").validate(Setting("json", key, target))


def test_the_training_profile_sets_both_only_where_docker_is_installed():
    profile = load_profile("training")
    for s in (SHM, MEMLOCK):
        got = profile.get(s.id)
        assert got is not None and got.when == "docker"
    assert profile.get(SHM.id).target == 1 << 30 and profile.get(SHM.id).op == ">="


def test_apply_then_rollback_through_the_cli_is_byte_exact(tmp_path):
    root = tree_host(tmp_path / "root", {**DOCKERD, DAEMON: CTK_DAEMON}).sys.root
    state = tmp_path / "state"
    before = picture(root)
    applied = gpunode("apply", "--sysroot", str(root), "--state-dir", str(state), "--only", "json.*")
    assert applied.returncode == 0, applied.stderr
    assert "leaves the restart to you" in applied.stdout
    data = json.loads((root / DAEMON.lstrip("/")).read_text())
    assert data["default-shm-size"] == "1g" and data["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    audit = gpunode("audit", "--sysroot", str(root), "--only", "json.*")
    assert audit.returncode == 0, audit.stdout
    rolled = gpunode("rollback", "--sysroot", str(root), "--state-dir", str(state))
    assert rolled.returncode == 0, rolled.stderr
    assert picture(root) == before


def test_the_crash_harness_tree_has_docker_so_its_rounds_cover_daemon_json(tmp_path):
    import importlib.util
    import sys
    from pathlib import Path

    from apply_fixtures import make_tree


    path = Path(__file__).resolve().parent.parent / "benchmarks" / "crash_harness.py"
    spec = importlib.util.spec_from_file_location("crash_harness_docker", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    root = make_tree(tmp_path / "root", module.DOCKER_HOST)
    host = tree_host(root)
    training = load_profile("training")
    settings = [training.get(SHM.id), training.get(MEMLOCK.id)]
    plan = make_plan(host, training, settings)
    assert [c.setting_id for c in plan.writes] == [SHM.id, MEMLOCK.id]
