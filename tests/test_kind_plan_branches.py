"""Plan branches of the json and limits kinds that had no test before issue 21 split their
plan methods: a default-ulimits key that is not an object, and the managed limits file keeping
only the entries that render safely."""

from __future__ import annotations

import base64

from gpunode.model.profile import Profile, Setting
from gpunode.tune.kinds.limits import MANAGED_FILE
from gpunode.tune.kinds.registry import kind_of
from gpunode.tune.plan import make_plan
from testkit import tree_host

DAEMON = "/etc/docker/daemon.json"


def plan(tmp_path, files: dict[str, str], setting: Setting):
    host = tree_host(tmp_path / "root", {"/usr/bin/dockerd": "", **files})
    setting = kind_of(setting).validate(setting)
    return make_plan(host, Profile("t", settings={setting.id: setting}), [setting])


def written(change) -> str:
    return base64.b64decode(change.after["data"]).decode()


def test_default_ulimits_that_is_not_an_object_is_left_to_the_operator(tmp_path):
    memlock = Setting("json", "docker.default-ulimits.memlock", "unlimited", when="docker")
    (change,) = plan(tmp_path, {DAEMON: '{"default-ulimits": ["memlock"]}\n'}, memlock).changes
    assert change.blocked == f"{DAEMON}: default-ulimits is not an object; fix it by hand"
    assert change.after_text == "default-ulimits.memlock unlimited"


def test_a_symlinked_daemon_json_is_blocked_for_that_first(tmp_path):
    memlock = kind_of(Setting("json", "docker.default-ulimits.memlock", "unlimited", when="docker")).validate(
        Setting("json", "docker.default-ulimits.memlock", "unlimited", when="docker"))
    host = tree_host(tmp_path / "root", {"/usr/bin/dockerd": "", "/etc/docker/real.json": '{"default-ulimits": 3}\n'})
    (tmp_path / "root" / "etc/docker/daemon.json").symlink_to("real.json")
    (change,) = make_plan(host, Profile("t", settings={memlock.id: memlock}), [memlock]).changes
    assert change.blocked == f"{DAEMON} is a symbolic link; gpunode replaces regular files only"


def test_the_managed_limits_file_keeps_only_entries_that_render_safely(tmp_path):
    managed = ("* soft memlock unlimited\n"
               "@gpu hard nproc 4096\n"
               "* soft bogusitem 5\n"
               "* soft stack $(reboot)\n")
    nofile = Setting("limits", "nofile", 1048576, op=">=")
    (change,) = plan(tmp_path, {MANAGED_FILE: managed, "/etc/security/limits.conf": "* soft nofile 1024\n"},
                     nofile).changes
    rows = [line.split() for line in written(change).splitlines() if not line.startswith("#")]
    assert rows == [["*", "soft", "memlock", "unlimited"], ["@gpu", "hard", "nproc", "4096"],
                    ["*", "soft", "nofile", "1048576"], ["*", "hard", "nofile", "1048576"]]
