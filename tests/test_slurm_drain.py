"""`gpunode slurm drain NODE... --reason "gpunode: ..."` (fleet locate's drain, issue 25): usage
errors before anything runs, and on a REAL Slurm (the gate tests' idle local cluster: munged,
slurmctld, slurmd from Debian's packages) the drain, --dry-run, and the etiquette: a reason
someone else set and the watcher's drain are never touched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from gpunode.cli import app
from gpunode.exits import USAGE_EXIT, UsageError
from gpunode.slurm import drain as use_case


@pytest.mark.parametrize("nodes, reason, message", [
    (["n1"], "ops: reseat the cable", "must start with 'gpunode:'"),
    (["n1"], "gpunode:   ", "must start with 'gpunode:' and say why"),
    (["n1"], "gpunode: bad\nnode", "one line of printable text"),
    (["n1"], "gpunode: " + "x" * 100, "at most 100"),
    (["-R"], "gpunode: x", "node '-R' is not a host name"),
    (["n1", "n2;reboot"], "gpunode: x", "node 'n2;reboot' is not a host name"),
    (["nodename=n1"], "gpunode: x", "is not a host name"),
    (["fe80::1"], "gpunode: x", "is not a host name"),
])
def test_a_bad_reason_or_node_name_is_refused_before_any_node_is_read(nodes, reason, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        use_case.check(nodes, reason)
    result = CliRunner().invoke(app, ["slurm", "drain", "--reason", reason, "--", *nodes])
    assert result.exit_code == USAGE_EXIT and message in result.output
    assert result.output.count("gpunode: error:") == 1


def test_the_reason_goes_to_scontrol_as_one_line():
    assert use_case.check(["gpu-01", "gpu-02.cluster"], "  gpunode: fleet locate   tcp ") == "gpunode: fleet locate tcp"


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
        r = self._drain(slurm.node, "--reason", "gpunode: fleet locate tcp: node fault", "--dry-run")
        assert r.exit_code == 0, r.output
        assert r.output == (f"scontrol update nodename={slurm.node} state=drain "
                            "'reason=gpunode: fleet locate tcp: node fault'\n")
        assert "DRAIN" not in slurm.state() and slurm.reason() is None

    def test_drains_with_the_reason_then_leaves_it(self, slurm):
        r = self._drain(slurm.node, "--reason", "gpunode: fleet locate tcp: node fault")
        assert r.exit_code == 0 and r.output.startswith(f"{slurm.node}: drained: "), r.output
        assert "DRAIN" in slurm.state() and slurm.reason() == "gpunode: fleet locate tcp: node fault"
        r = self._drain(slurm.node, "--reason", "gpunode: fleet locate tcp: node fault")
        assert r.exit_code == 0 and f"{slurm.node}: unchanged: already drained" in r.output

    def test_a_reason_someone_else_set_is_never_touched(self, slurm):
        slurm.drain("ops: reseat the cable")
        for extra in ([], ["--dry-run"]):
            r = self._drain(slurm.node, "--reason", "gpunode: fleet locate tcp: node fault", *extra)
            assert r.exit_code == 1 and f"{slurm.node}: left-foreign: " in r.output, r.output
            assert "scontrol" not in r.output
            assert slurm.reason() == "ops: reseat the cable" and "DRAIN" in slurm.state()

    def test_a_reason_whose_second_line_looks_like_ours_is_never_touched(self, slurm):
        slurm.drain("ops: cable\nReason=gpunode: fleet locate tcp: node fault")
        for extra in ([], ["--dry-run"]):
            r = self._drain(slurm.node, "--reason", "gpunode: fleet locate tcp: node fault", *extra)
            assert r.exit_code == 1 and f"{slurm.node}: left-foreign: " in r.output, r.output
        assert slurm.reason() == "ops: cable" and "DRAIN" in slurm.state()

    def test_a_reason_with_shell_and_scontrol_characters_reaches_slurm_as_it_is(self, slurm):
        reason = "gpunode: a=b; $(reboot) `id` 'q' \"x\" | & > ü"
        for expect in ("drained", "unchanged"):
            r = self._drain(slurm.node, "--reason", reason)
            assert r.exit_code == 0 and r.output.startswith(f"{slurm.node}: {expect}: "), r.output
        assert slurm.reason() == reason and "DRAIN" in slurm.state()

    def test_all_is_refused_as_scontrol_drains_every_node_with_it(self, slurm):
        for name in ("ALL", "all"):
            r = self._drain(name, "--reason", "gpunode: fleet locate tcp: node fault")
            assert r.exit_code == 3 and "gpunode: error: node " in r.output, r.output
        assert "DRAIN" not in slurm.state() and slurm.reason() is None

    def test_the_watchers_drain_is_left_to_the_watcher(self, slurm):
        slurm.drain("gpunode: watch: xid 79 on GPU 3")
        r = self._drain(slurm.node, "--reason", "gpunode: fleet locate tcp: node fault")
        assert r.exit_code == 0 and f"{slurm.node}: unchanged: drained by gpunode watch" in r.output
        assert slurm.reason() == "gpunode: watch: xid 79 on GPU 3"

    def test_an_unknown_node_is_an_error_and_the_others_still_drain(self, slurm):
        r = self._drain("nosuchnode7", slurm.node, "--reason", "gpunode: fleet locate tcp: node fault")
        assert r.exit_code == 3 and "nosuchnode7: error: scontrol show node nosuchnode7" in r.output
        assert slurm.reason() == "gpunode: fleet locate tcp: node fault"
