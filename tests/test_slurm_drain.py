"""`gpunode slurm drain NODE... --reason "gpunode: ..."` (fleet locate's drain, issue 25): usage
errors before anything runs, and on a REAL Slurm (the gate tests' idle local cluster: munged,
slurmctld, slurmd from Debian's packages) the drain, --dry-run, and the etiquette: a reason
someone else set and the watcher's drain are never touched."""

from __future__ import annotations

import json
import socket
import sys

import pytest
from test_trail import received
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.exits import USAGE_EXIT, UsageError
from gpunode.slurm import drain as use_case


@pytest.mark.parametrize("nodes, reason, message", [
    (["n1"], "ops: reseat the cable", "must start with 'gpunode: drain:'"),
    (["n1"], "gpunode: fleet locate tcp: node fault", "must start with 'gpunode: drain:'"),  # a gate's reason
    (["n1"], "gpunode: drain:   ", "must start with 'gpunode: drain:' and say why"),
    (["n1"], "gpunode: drain: bad\nnode", "one line of printable text"),
    (["n1"], "gpunode: drain: " + "x" * 85, "101 characters, at most 100"),
    (["-R"], "gpunode: drain: x", "node '-R' is not a host name"),
    (["n1", "n2;reboot"], "gpunode: drain: x", "node 'n2;reboot' is not a host name"),
    (["nodename=n1"], "gpunode: drain: x", "is not a host name"),
    (["fe80::1"], "gpunode: drain: x", "is not a host name"),
    (["n1%eth0"], "gpunode: drain: x", "is not a host name"),
])
def test_a_bad_reason_or_node_name_is_refused_before_any_node_is_read(nodes, reason, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        use_case.check(nodes, reason)
    result = CliRunner().invoke(app, ["slurm", "drain", "--reason", reason, "--", *nodes])
    assert result.exit_code == USAGE_EXIT and message in result.output
    assert result.output.count("gpunode: error:") == 1


def test_the_reason_goes_to_scontrol_as_one_line():
    assert use_case.check(["gpu-01", "gpu-02.cluster"], "  gpunode: drain: fleet locate   tcp ") == "gpunode: drain: fleet locate tcp"


def test_a_reason_of_exactly_the_most_characters_is_taken():
    from gpunode.slurm.scontrol import REASON_MAX

    longest = "gpunode: drain: " + "x" * (REASON_MAX - len("gpunode: drain: "))
    assert len(longest) == REASON_MAX and use_case.check(["n1"], longest) == longest
    with pytest.raises(UsageError, match=f"{REASON_MAX + 1} characters, at most {REASON_MAX}"):
        use_case.check(["n1"], longest + "y")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from test_gate_slurm import idle_cluster

    with idle_cluster(tmp_path_factory, "drain-slurm") as slurm:
        yield slurm


@pytest.fixture
def slurm(cluster, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))  # scontrol through the Runner finds it
    yield cluster
    cluster.cmd("scontrol", "update", f"nodename={cluster.node}", "state=resume")
    cluster._wait(lambda: "DRAIN" not in cluster.state(), 20, "the node back")


@pytest.mark.slow
@pytest.mark.root
class TestOnARealSlurm:
    def _drain(self, *args):
        return CliRunner().invoke(app, ["slurm", "drain", *args])

    def test_dry_run_prints_the_scontrol_argv_and_changes_nothing(self, slurm):
        r = self._drain(slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault", "--dry-run")
        assert r.exit_code == 0, r.output
        assert r.output == (f"scontrol update nodename={slurm.node} state=drain "
                            "'reason=gpunode: drain: fleet locate tcp: node fault'\n")
        assert "DRAIN" not in slurm.state() and slurm.reason() is None

    def test_drains_with_the_reason_then_leaves_it(self, slurm):
        r = self._drain(slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault")
        assert r.exit_code == 0 and r.output.startswith(f"{slurm.node}: drained: "), r.output
        assert "DRAIN" in slurm.state() and slurm.reason() == "gpunode: drain: fleet locate tcp: node fault"
        r = self._drain(slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault")
        assert r.exit_code == 0 and f"{slurm.node}: unchanged: already drained" in r.output

    def test_a_reason_someone_else_set_is_never_touched(self, slurm):
        slurm.drain("ops: reseat the cable")
        for extra in ([], ["--dry-run"]):
            r = self._drain(slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault", *extra)
            assert r.exit_code == 1 and f"{slurm.node}: left-foreign: " in r.output, r.output
            assert "scontrol" not in r.output
            assert slurm.reason() == "ops: reseat the cable" and "DRAIN" in slurm.state()

    def test_a_reason_whose_second_line_looks_like_ours_is_never_touched(self, slurm):
        slurm.drain("ops: cable\nReason=gpunode: drain: fleet locate tcp: node fault")
        for extra in ([], ["--dry-run"]):
            r = self._drain(slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault", *extra)
            assert r.exit_code == 1 and f"{slurm.node}: left-foreign: " in r.output, r.output
        assert slurm.reason() == "ops: cable" and "DRAIN" in slurm.state()

    def test_a_reason_with_shell_and_scontrol_characters_reaches_slurm_as_it_is(self, slurm):
        reason = "gpunode: drain: a=b; $(reboot) `id` 'q' \"x\" | & > ü"
        for expect in ("drained", "unchanged"):
            r = self._drain(slurm.node, "--reason", reason)
            assert r.exit_code == 0 and r.output.startswith(f"{slurm.node}: {expect}: "), r.output
        assert slurm.reason() == reason and "DRAIN" in slurm.state()

    def test_all_is_refused_as_scontrol_drains_every_node_with_it(self, slurm):
        for name in ("ALL", "all"):
            r = self._drain(name, "--reason", "gpunode: drain: fleet locate tcp: node fault")
            assert r.exit_code == 3 and "gpunode: error: node " in r.output, r.output
        assert "DRAIN" not in slurm.state() and slurm.reason() is None

    def test_the_watchers_drain_is_left_to_the_watcher(self, slurm):
        slurm.drain("gpunode: watch: xid 79 on GPU 3")
        r = self._drain(slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault")
        assert r.exit_code == 0 and f"{slurm.node}: unchanged: drained by gpunode watch" in r.output
        assert slurm.reason() == "gpunode: watch: xid 79 on GPU 3"

    def test_an_unknown_node_is_an_error_and_the_others_still_drain(self, slurm):
        r = self._drain("nosuchnode7", slurm.node, "--reason", "gpunode: drain: fleet locate tcp: node fault")
        assert r.exit_code == 3 and "nosuchnode7: error: scontrol show node nosuchnode7" in r.output
        assert slurm.reason() == "gpunode: drain: fleet locate tcp: node fault"

    def _health_check(self, slurm, tmp_path) -> dict:
        """`gpunode gate --health-check` on a healthy snapshot (2 GPUs, as the node's gres)."""
        from gate_fixtures import h100_inventory, write_snapshot

        config = tmp_path / "gpunode.yaml"
        if not config.exists():
            config.write_text(f"snapshot: {write_snapshot(tmp_path / 'healthy', h100_inventory(2))}\naudit_log: 'off'\n")
        r = slurm.cmd(sys.executable, "-m", "gpunode", "gate", "--health-check", "--json", timeout=120,
                      env={**slurm.env, "GPUNODE_CONFIG": str(config), "SLURMD_NODENAME": slurm.node})
        assert r.returncode == 0, r.stdout + r.stderr
        return json.loads(r.stdout)["slurm"]

    def test_a_passing_health_check_leaves_a_drain_someone_asked_for(self, slurm, tmp_path):
        """The health check resumed every `gpunode:` drain once its GPU checks passed: a node
        drained for a network fault (by slurm drain, or fleet locate --drain) was back in service
        within one HealthCheckInterval. The gate's own drain is still resumed (the control)."""
        from gpunode.fleet.locate.report import drain_targets

        slurm.drain("gpunode: gpu.memory.remap GPU0: row remapping failed")
        assert self._health_check(slurm, tmp_path)["action"] == "resumed"
        slurm._wait(lambda: "DRAIN" not in slurm.state(), 20, "the gate's resume")
        fault = {"kind": "node", "nodes": [slurm.node], "failed": 2, "tests": 2}
        for reason in ("gpunode: drain: cable check, port 3", drain_targets([fault], "tcp", exact=True)[0][1]):
            r = self._drain(slurm.node, "--reason", reason)
            assert r.exit_code == 0 and r.output.startswith(f"{slurm.node}: drained: "), r.output
            done = self._health_check(slurm, tmp_path)
            assert done["action"] == "unchanged" and "until a person resumes it" in done["detail"], done
            assert slurm.reason() == reason and "DRAIN" in slurm.state()
            slurm.resume()

    def test_each_drain_made_is_one_line_of_the_audit_trail(self, slurm, tmp_path, monkeypatch):
        """As the gate's drain (tests/test_slurm_chain.py), one line per drain made; none for a dry run."""
        config, path = tmp_path / "gpunode.yaml", tmp_path / "log.sock"
        config.write_text(f"audit_log: {path}\n")
        monkeypatch.setenv("GPUNODE_CONFIG", str(config))
        reason = "gpunode: drain: fleet locate tcp: node fault"
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # the syslog socket (tests/test_trail.py)
            sock.bind(str(path))
            sock.settimeout(0.5)
            for extra in (["--dry-run"], ["--check"], [], []):  # two dry runs, then the drain, then unchanged
                r = self._drain(slurm.node, "--reason", reason, *extra)
                assert r.exit_code == 0, r.output
            lines = received(sock)
        assert len(lines) == 1 and lines[0].startswith("<84>gpunode["), lines  # authpriv.warning, as the gate's
        assert f" drain mode='slurm drain' node={slurm.node} detail='{reason}'" in lines[0], lines
