"""Issue 24 item 4, the audit side: the NVIDIA Container Toolkit, its runtime/CDI setup per
engine, Docker's daemon.json, enroot and pyxis. Documented outputs only (no container engine on
the lent VMs or here): tests/fixtures/containers/README.md."""

from __future__ import annotations

import pytest
from baseline_fixtures import h100_inventory

from gpunode.audit.context import AuditContext
from gpunode.audit.engine import run_checks
from gpunode.checks import containers
from gpunode.host.facts.container_toolkit import parse_cdi_spec, parse_ctk_version
from gpunode.host.facts.enroot import mount_targets, parse_enroot_conf
from gpunode.host.runner import ReplayRunner
from gpunode.inputs import InputError
from gpunode.model.profile import Profile
from testkit import FIXTURES, tree_host

FX = FIXTURES / "containers"
CTK_DAEMON = '{\n    "runtimes": {\n        "nvidia": {\n            "args": [],\n            "path": "nvidia-container-runtime"\n        }\n    }\n}\n'


def fx(name: str) -> str:
    return (FX / name).read_text()


def run(tmp_path, check, files=None, runner=None, inventory=None):
    host = tree_host(tmp_path / "root", files or {}, runner=runner, inventory=inventory)
    results = run_checks([check], AuditContext(host=host, profile=Profile("t")))
    return [(r.status.value, r.message) for r in results]


def ctk_runner(name: str) -> ReplayRunner:
    runner = ReplayRunner()
    runner.add(["nvidia-ctk", "--version"], stdout=fx(name))
    return runner


def test_toolkit_version_new_enough_old_and_absent(tmp_path):
    assert parse_ctk_version(fx("nvidia-ctk-version.txt")) == "1.17.8"
    assert run(tmp_path, containers.toolkit, runner=ctk_runner("nvidia-ctk-version.txt")) == [
        ("PASS", "NVIDIA Container Toolkit 1.17.8")]
    ((status, message),) = run(tmp_path, containers.toolkit, runner=ctk_runner("nvidia-ctk-version-1.14.txt"))
    assert status == "WARN" and "1.14.6: below 1.17.8" in message
    ((status, message),) = run(tmp_path, containers.toolkit, runner=ReplayRunner())
    assert status == "SKIP" and "nvidia-ctk not installed" in message


def test_runtime_per_engine(tmp_path):
    assert run(tmp_path / "none", containers.runtime)[0][0] == "SKIP"
    configured = {"/usr/bin/dockerd": "", "/etc/docker/daemon.json": CTK_DAEMON,
                  "/etc/containerd/config.toml": fx("containerd-config.toml"),
                  "/etc/crio/crio.conf.d/99-nvidia.conf": fx("crio-99-nvidia.conf"),
                  "/usr/bin/podman": "", "/etc/cdi/nvidia.yaml": fx("cdi-nvidia-535.yaml")}
    ((status, message),) = run(tmp_path / "all", containers.runtime, configured)
    assert status == "PASS" and "podman: CDI" in message and "cri-o: runtime nvidia" in message
    bare = {**configured, "/etc/docker/daemon.json": '{"log-driver": "json-file"}',
            "/etc/containerd/config.toml": "version = 2\n"}
    del bare["/etc/cdi/nvidia.yaml"]
    ((status, message),) = run(tmp_path / "bare", containers.runtime, bare)
    assert status == "WARN"
    assert "docker: no NVIDIA runtime or CDI" in message and "containerd: no NVIDIA runtime or CDI" in message
    assert "podman: no NVIDIA runtime or CDI" in message


def test_runtime_docker_through_cdi_and_crio_without_nvidia(tmp_path):
    cdi = {"/usr/bin/dockerd": "", "/etc/docker/daemon.json": '{"features": {"cdi": true}}',
           "/etc/cdi/nvidia.yaml": fx("cdi-nvidia-535.yaml")}
    assert run(tmp_path / "cdi", containers.runtime, cdi) == [("PASS", "docker: CDI (features.cdi)")]
    no_spec = {**cdi, "/etc/crio/crio.conf": "[crio.runtime]\n"}
    del no_spec["/etc/cdi/nvidia.yaml"]  # CDI on, but no NVIDIA spec to give
    assert run(tmp_path / "none", containers.runtime, no_spec) == [
        ("WARN", "docker: no NVIDIA runtime or CDI; cri-o: no NVIDIA runtime or CDI")]


def test_cdi_spec_current_or_stale_for_the_driver(tmp_path):
    kind, versions = parse_cdi_spec(fx("cdi-nvidia-535.yaml"), "nvidia.yaml")
    assert kind == "nvidia.com/gpu" and versions == {"535.129.03"}
    inv = h100_inventory()  # driver 580.159.04
    stale = run(tmp_path / "stale", containers.cdi, {"/etc/cdi/nvidia.yaml": fx("cdi-nvidia-535.yaml")}, inventory=inv)
    assert stale == [("WARN", "generated for driver 535.129.03; installed driver 580.159.04")]
    current = fx("cdi-nvidia-535.yaml").replace("535.129.03", inv.driver_version)
    assert run(tmp_path / "ok", containers.cdi, {"/var/run/cdi/nvidia.yaml": current}, inventory=inv) == [
        ("PASS", "driver 580.159.04")]
    assert run(tmp_path / "none", containers.cdi, inventory=inv)[0][0] == "SKIP"
    broken = run(tmp_path / "broken", containers.cdi, {"/etc/cdi/nvidia.yaml": "kind: [\n"}, inventory=inv)
    assert broken[0][0] == "WARN" and "unreadable" in broken[0][1]
    with pytest.raises(InputError):
        parse_cdi_spec("- a list\n", "x.yaml")


def test_docker_daemon_json_valid_or_not(tmp_path):
    ok = run(tmp_path / "ok", containers.docker_config, {"/usr/bin/dockerd": "", "/etc/docker/daemon.json": CTK_DAEMON})
    assert ok == [("PASS", "default /dev/shm 64m, runtimes nvidia")]
    bad = run(tmp_path / "bad", containers.docker_config, {"/usr/bin/dockerd": "", "/etc/docker/daemon.json": "{,}"})
    assert bad[0][0] == "WARN" and "not valid JSON" in bad[0][1]
    assert run(tmp_path / "none", containers.docker_config)[0][0] == "SKIP"


def test_enroot_shm_mount_and_nvidia_hook(tmp_path):
    assert parse_enroot_conf(fx("enroot.conf"))["ENROOT_RESTRICT_DEV"] == "y"
    assert "/dev/shm" in mount_targets(fx("enroot-10-system.fstab"))
    good = {"/etc/enroot/enroot.conf": fx("enroot.conf"), "/etc/enroot/mounts.d/10-system.fstab":
            fx("enroot-10-system.fstab"), "/etc/enroot/hooks.d/98-nvidia.sh": "#!/bin/bash\n"}
    ((status, message),) = run(tmp_path / "good", containers.enroot_config, good)
    assert status == "PASS" and "ENROOT_RUNTIME_PATH /run/enroot/user-$(id -u)" in message
    no_shm = {**good, "/etc/enroot/mounts.d/10-system.fstab": "/proc /proc none x-create=dir,rbind\n"}
    del no_shm["/etc/enroot/hooks.d/98-nvidia.sh"]
    ((status, message),) = run(tmp_path / "bad", containers.enroot_config, no_shm)
    assert status == "WARN" and "no /dev/shm mount" in message and "no NVIDIA hook" in message
    assert run(tmp_path / "none", containers.enroot_config)[0][0] == "SKIP"


def test_pyxis_in_the_plugstack(tmp_path):
    base = {"/etc/enroot/enroot.conf": fx("enroot.conf"), "/etc/slurm/slurm.conf": "ClusterName=c\n"}
    with_pyxis = {**base, "/etc/slurm/plugstack.conf": "include /etc/slurm/plugstack.conf.d/*\n",
                  "/etc/slurm/plugstack.conf.d/pyxis.conf":
                      "required /usr/lib/x86_64-linux-gnu/slurm/spank_pyxis.so\n"}
    assert run(tmp_path / "a", containers.pyxis, with_pyxis)[0][0] == "PASS"
    commented = {**base, "/etc/slurm/plugstack.conf": "# required /usr/lib/slurm/spank_pyxis.so\n"}
    assert run(tmp_path / "b", containers.pyxis, commented)[0][0] == "WARN"
    assert run(tmp_path / "c", containers.pyxis, {"/etc/enroot/enroot.conf": ""})[0][0] == "SKIP"
