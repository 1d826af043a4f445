"""apply --prove on a fixture tree with a fake bench whose figures depend on the tree itself:
a harmless change is kept, one that hurts is rolled back byte-exactly, noise is the runs' own
spread, and nothing is changed when the first bench measured nothing."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from apply_fixtures import make_tree, picture, with_test_hooks

from gpunode.bench.results import BenchDocument, Metric, Spread
from gpunode.host.gpu.control import NoGpuControl
from gpunode.tune.actions import ApplyEnv
from gpunode.tune.journal import StateDir
from gpunode.tune.plan import select_settings
from gpunode.tune.profiles import load_profile
from gpunode.tune.prove import SAME, WORSE, compare_runs, noise, prove_apply
from gpunode.tune.session import Refused
from testkit import FIXTURES, tree_host

SWAPPINESS = "/proc/sys/vm/swappiness"


def doc(gemm: float, cov: float = 0.005, p99: float = 80.0, status: str = "ok") -> BenchDocument:
    spread = Spread(5, gemm * 0.99, gemm * 1.01, gemm, cov)
    metrics = [Metric("gemm.bf16", 0, gemm if status == "ok" else None, "TFLOP/s", status, "", {"dtype": "bf16"}, spread),
               Metric("fio.rand_read.p99_us", None, p99, "us", "ok", "", {}, Spread(3, p99, p99, p99, 0.0))]
    return BenchDocument("t", "testhost", "", 0.0, "quick", {}, {}, metrics)


class TreeBench:
    """GEMM at 680 TFLOP/s, or `hurt_to` while vm.swappiness holds the profile's value."""

    def __init__(self, root, hurt_to: float | None = None):
        self.root, self.hurt_to, self.runs = root, hurt_to, 0

    def __call__(self, between=None) -> BenchDocument:
        self.runs += 1
        tuned = (self.root / SWAPPINESS.lstrip("/")).read_text().strip() != "60"
        return doc(self.hurt_to if tuned and self.hurt_to is not None else 680.0 + self.runs * 0.5)


def _setup(tmp_path):
    root = make_tree(tmp_path / "root")
    host = tree_host(root)
    profile = load_profile("training")
    settings = select_settings(profile, ["*swappiness"])
    assert len(settings) == 1
    return root, ApplyEnv(host=host, gpu=NoGpuControl()), profile, settings, StateDir(tmp_path / "state")


def test_a_harmless_change_is_kept(tmp_path):
    root, env, profile, settings, state = _setup(tmp_path)
    bench = TreeBench(root)
    out = prove_apply(env, profile, settings, state, bench, persist=False)
    assert out.result == "proven" and out.kept and out.exit_code == 0 and bench.runs == 2
    assert (root / SWAPPINESS.lstrip("/")).read_text().strip() != "60"
    assert [r.verdict for r in out.rows] == [SAME, SAME]


def test_a_change_that_hurts_is_rolled_back_exactly(tmp_path):
    root, env, profile, settings, state = _setup(tmp_path)
    before = picture(root)
    out = prove_apply(env, profile, settings, state, TreeBench(root, hurt_to=640.0), persist=False)
    assert out.result == "rolled-back" and not out.kept and out.exit_code == 3
    assert [r.status for r in out.restored] == ["restored"]
    assert picture(root) == before
    gemm = next(r for r in out.rows if r.metric == "gemm.bf16")
    assert gemm.verdict == WORSE and gemm.change == pytest.approx(640 / 680.5 - 1, abs=1e-4)
    assert "gemm.bf16 GPU0" in out.reason and out.apply.apply_id in out.reason


class Hangup(Exception):
    """What SIGHUP does to the test process while no StopSignals holds it (it would kill gpunode)."""


def _hangup(_signum, _frame):
    raise Hangup


def _cut_in_second_run(cut):
    """A bench of two steps whose second run (after the change) meets `cut(between)` after its first step."""
    def bench(between=None):
        bench.runs += 1
        if bench.runs == 2:
            between()  # the first step starts
            cut(between)  # during it (a between() there: the second step starts)
        bench.ended += 1
        return doc(680.0 + bench.runs * 0.5)

    bench.runs = bench.ended = 0
    return bench


def _interrupt(_between):
    raise KeyboardInterrupt


def _hang_up_between_steps(between):
    os.kill(os.getpid(), signal.SIGHUP)  # the ssh terminal closes during the first step
    between()


def _hang_up_in_the_last_step(_between):
    os.kill(os.getpid(), signal.SIGHUP)  # no step after it: seen when the bench returns


@pytest.mark.parametrize(("cut", "signum", "ended"), [(_interrupt, signal.SIGINT, 1),
                                                      (_hang_up_between_steps, signal.SIGHUP, 1),  # no second step
                                                      (_hang_up_in_the_last_step, signal.SIGHUP, 2)])
def test_a_signal_during_the_bench_after_the_change_rolls_it_back(tmp_path, cut, signum, ended):
    # unproven, the change must not stay: as during the apply, a signal (a closed ssh terminal,
    # Ctrl-C) rolls it back and the exit says which signal (128 + its number)
    root, env, profile, settings, state = _setup(tmp_path)
    before = picture(root)
    bench, previous = _cut_in_second_run(cut), signal.signal(signal.SIGHUP, _hangup)
    try:
        out = prove_apply(env, profile, settings, state, bench, persist=False)
        assert signal.getsignal(signal.SIGHUP) is _hangup  # put back
    except KeyboardInterrupt:  # not let out: it would end the whole test session
        pytest.fail("a KeyboardInterrupt out of the bench left prove_apply (the change stays)")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert bench.ended == ended
    assert out.result == "rolled-back" and not out.kept and out.signal == signum and out.exit_code == 128 + signum
    assert out.reason.startswith(f"stopped by {signal.Signals(signum).name} during the bench after the change")
    assert out.apply.apply_id in out.reason and [r.status for r in out.restored] == ["restored"]
    assert out.apply_fields()["signal"] == signal.Signals(signum).name
    assert picture(root) == before
    assert [r.status for r in state.records()] == ["rolled-back"]


def test_the_prove_bench_looks_for_a_signal_before_each_step(tmp_path):
    from gpunode.tune.prove import bench_for_prove

    class Stop(Exception):
        pass

    def between():
        raise Stop

    bench = bench_for_prove(tree_host(make_tree(tmp_path / "root")))  # no GPU here: one step
    assert bench().metrics  # without between: the whole run
    with pytest.raises(Stop):  # the bench's on_step asks between() before its step
        bench(between=between)


def test_a_bench_that_fails_after_the_change_rolls_it_back(tmp_path):
    root, env, profile, settings, state = _setup(tmp_path)
    before = picture(root)

    def broken(_between):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    out = prove_apply(env, profile, settings, state, _cut_in_second_run(broken), persist=False)
    assert out.result == "rolled-back" and out.exit_code == 3 and out.signal is None
    assert out.reason.startswith("the bench after the change failed: RuntimeError: CUDA error")
    assert picture(root) == before and [r.status for r in state.records()] == ["rolled-back"]


def test_a_drop_inside_the_measured_noise_is_not_worse():
    before, after = doc(680.0, cov=0.02), doc(660.0, cov=0.02)  # -2.9 % with 2 x 2 % noise: same
    assert compare_runs(before, after)[0].verdict == SAME
    assert compare_runs(doc(680.0, cov=0.01), doc(660.0, cov=0.01))[0].verdict == WORSE
    assert noise(before.metrics[0], after.metrics[0]) == pytest.approx(0.04)
    assert noise(doc(1, cov=0.0).metrics[0], doc(1, cov=0.0).metrics[0]) == pytest.approx(0.01)  # the floor


def test_latency_going_up_is_worse_and_a_figure_lost_after_is_worse():
    rows = {r.metric: r for r in compare_runs(doc(680.0), doc(680.0, p99=120.0))}
    assert rows["fio.rand_read.p99_us"].verdict == WORSE and rows["gemm.bf16"].verdict == SAME
    lost = {r.metric: r for r in compare_runs(doc(680.0), doc(0.0, status="error"))}
    assert lost["gemm.bf16"].verdict == WORSE and "ERROR after the change" in lost["gemm.bf16"].note


def test_nothing_measured_before_refuses_and_changes_nothing(tmp_path):
    root, env, profile, settings, state = _setup(tmp_path)
    before = picture(root)
    with pytest.raises(Refused, match="measured nothing"):
        prove_apply(env, profile, settings, state, lambda: doc(0.0, status="skip").__class__(
            "t", "h", "", 0.0, "quick", {}, {}, [Metric("gemm.bf16", 0, None, "TFLOP/s", "skip", "no GPU")]))
    assert picture(root) == before and not state.root.exists()


def test_cli_apply_prove_prints_the_table_and_exits_3_when_rolled_back(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from gpunode.cli import app
    from gpunode.tune import prove

    root = make_tree(tmp_path / "root")
    before = picture(root)
    monkeypatch.setattr(prove, "bench_for_prove", lambda host: TreeBench(root, hurt_to=600.0))
    res = CliRunner().invoke(app, ["apply", "--profile", "training", "--only", "*swappiness", "--no-persist",
                                   "--sysroot", str(root), "--state-dir", str(tmp_path / "state"), "--prove"])
    assert res.exit_code == 3, res.output
    assert "before and after the change" in res.stdout and "worse" in res.stdout and "rolled-back" in res.stdout
    assert "then rolled back by --prove" in res.stdout and "undo with" not in res.stdout  # nothing left to undo
    assert picture(root) == before
    monkeypatch.setattr(prove, "bench_for_prove", lambda host: TreeBench(root))
    res = CliRunner().invoke(app, ["apply", "--profile", "training", "--only", "*swappiness", "--no-persist",
                                   "--sysroot", str(root), "--state-dir", str(tmp_path / "state"), "--prove", "--json"])
    assert res.exit_code == 0, res.output
    import json

    doc = json.loads(res.stdout)
    assert doc["result"] == "applied" and doc["prove"]["result"] == "proven" and doc["prove"]["kept"] is True


def _prove_cli(tmp_path, root, monkeypatch, bench, *extra):
    """`gpunode apply --prove` in-process with `bench`; -> (result, the trail's apply fields)."""
    from typer.testing import CliRunner

    from gpunode import trail
    from gpunode.cli import app
    from gpunode.tune import prove

    logged = []
    monkeypatch.setattr(trail, "log", lambda event, fields, config=None: logged.append((event, fields)))
    monkeypatch.setattr(prove, "bench_for_prove", lambda host: bench)
    res = CliRunner().invoke(app, ["apply", "--profile", "training", "--only", "*swappiness", "--no-persist",
                                   "--sysroot", str(root), "--state-dir", str(tmp_path / "state"), "--prove", *extra])
    assert [event for event, _ in logged] == ["apply"], res.output
    return res, logged[0][1]


def test_cli_a_closed_terminal_during_the_bench_after_rolls_back_and_exits_129(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "root")
    before = picture(root)
    previous = signal.signal(signal.SIGHUP, _hangup)
    try:
        res, logged = _prove_cli(tmp_path, root, monkeypatch, _cut_in_second_run(_hang_up_between_steps), "--json")
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert res.exit_code == 129, res.output
    assert picture(root) == before
    doc = json.loads(res.stdout)
    assert doc["result"] == doc["prove"]["result"] == "rolled-back" and doc["signal"] == "SIGHUP"
    assert doc["exit_code"] == 129 and [r["status"] for r in doc["prove"]["restores"]] == ["restored"]
    # the terminal that would show the report is gone: the trail says what became of the change
    assert logged["result"] == "rolled-back" and logged["signal"] == "SIGHUP"
    assert logged["reason"].startswith("stopped by SIGHUP during the bench after the change; rolled back ")


class DeadTerminal(io.TextIOBase):
    """A terminal after its ssh session closed: every write fails with EIO."""

    def write(self, _text):
        raise OSError(errno.EIO, os.strerror(errno.EIO))


def test_cli_a_terminal_gone_during_the_bench_after_drops_the_report_and_keeps_129(tmp_path, monkeypatch):
    def terminal_closes(between):
        monkeypatch.setattr(sys, "stdout", DeadTerminal())
        monkeypatch.setattr(sys, "stderr", DeadTerminal())
        _hang_up_between_steps(between)

    root = make_tree(tmp_path / "root")
    before = picture(root)
    previous = signal.signal(signal.SIGHUP, _hangup)
    try:
        res, logged = _prove_cli(tmp_path, root, monkeypatch, _cut_in_second_run(terminal_closes))
    finally:
        signal.signal(signal.SIGHUP, previous)
    assert res.exit_code == 129, res.exception  # the report to the dead terminal dropped, not a crash
    assert picture(root) == before and logged["result"] == "rolled-back" and logged["signal"] == "SIGHUP"


def test_cli_a_prove_rollback_the_journal_cannot_record_restores_and_says_so(tmp_path, monkeypatch):
    # the disk under the state dir fills up between the apply and --prove's rollback: the restores
    # go on, and the command says so as `gpunode rollback` does (not a bare "journal" error)
    from gpunode.tune import journal

    root = make_tree(tmp_path / "root")
    before = picture(root)
    hurts = TreeBench(root, hurt_to=600.0)

    def bench(between=None):
        if hurts.runs == 1:  # the bench after the change: the disk is full from here on
            def full(self, record):
                raise journal.JournalWriteError(f"journal {self.path}: cannot write: No space left on device")

            monkeypatch.setattr(journal.JournalWriter, "append", full)
        return hurts(between)

    res, logged = _prove_cli(tmp_path, root, monkeypatch, bench, "--json")
    assert res.exit_code == 3, res.output
    assert picture(root) == before
    doc = json.loads(res.stdout)
    assert doc["result"] == "rolled-back" and [r["status"] for r in doc["prove"]["restores"]] == ["restored"]
    unrecorded = doc["prove"]["journal_unrecorded"]
    assert unrecorded["records"][0] == "start of the rollback" and "No space left" in unrecorded["reason"]
    lines = res.stderr.splitlines()
    assert lines[-3].startswith(f"gpunode: error: the journal could not record {len(unrecorded['records'])} "
                                "record(s) of this rollback (journal ")
    assert lines[-2] == (f"gpunode: the restores went on: 1 change(s) restored, 0 found unchanged, 0 NOT restored "
                         f"under {root} (state dir {tmp_path / 'state'})")
    apply_id = doc["id"]
    assert f"`gpunode rollback --id {apply_id} --sysroot {root} --state-dir {tmp_path / 'state'}` once" in lines[-1]
    assert logged["result"] == "rolled-back" and logged["unrecorded"] == len(unrecorded["records"])
    monkeypatch.undo()  # the disk has room again: the rollback it names settles the journal
    from typer.testing import CliRunner

    from gpunode.cli import app

    again = CliRunner().invoke(app, ["rollback", "--id", apply_id, "--sysroot", str(root),
                                     "--state-dir", str(tmp_path / "state")])
    assert again.exit_code == 0, again.output
    assert picture(root) == before
    homes = sorted((tmp_path / "state").rglob("applies"))  # a --sysroot's applies: under the state dir
    assert [r.status for d in homes for r in StateDir(d.parent).records()] == ["rolled-back"]


def test_fleet_canary_must_prove_the_change_before_the_rest(tmp_path):
    """Through Ansible: with a bench that gets worse after the change (the recorded H200 runs, alone
    then beside a co-running job), the canary rolls back and the other nodes are never touched;
    with one that does not, every node keeps it."""
    import json

    import fleetkit
    from test_fleet_local import _apply_hosts, _apply_inventory

    fleetkit.require_ansible()
    device = FIXTURES / "device"
    idle, busy = (json.loads((device / f"interference-h200-{n}.json").read_text()) for n in ("idle", "load10"))
    roots = _apply_hosts(tmp_path, ["n1", "n2", "n3"])
    inv = _apply_inventory(tmp_path, roots)
    state = ["--state-dir", str(tmp_path / "state")]
    hurts = tmp_path / "hurts.json"
    hurts.write_text(json.dumps({"before": idle, "after": busy}))
    result, doc = fleetkit.fleet_json(["apply", "-i", str(inv), "--prove", *state],
                                      env={"GPUNODE_TEST_PROVE_BENCH": str(hurts),
                                           "PYTHONPATH": with_test_hooks(os.environ.get("PYTHONPATH"))})
    assert result.rc == 2, result.stderr[-3000:]  # the canary's change did not go through: FAIL
    hosts = fleetkit.by_host(doc)
    assert hosts["n1"]["status"] == "FAIL" and hosts["n1"]["message"].startswith("rolled-back: ")
    assert hosts["n2"]["status"] == hosts["n3"]["status"] == "NOT_RUN"
    report = json.loads(Path(hosts["n1"]["report"]).read_text())
    assert report["result"] == "rolled-back" and report["prove"]["result"] == "rolled-back"
    assert "gemm.bf16 GPU0" in report["prove"]["reason"]
    assert all((r / "proc/sys/vm/swappiness").read_text() == "60\n" for r in roots.values())

    fine = tmp_path / "fine.json"
    fine.write_text(json.dumps({"before": idle, "after": idle}))
    result, doc = fleetkit.fleet_json(["apply", "-i", str(inv), "--prove", *state],
                                      env={"GPUNODE_TEST_PROVE_BENCH": str(fine),
                                           "PYTHONPATH": with_test_hooks(os.environ.get("PYTHONPATH"))})
    assert result.rc == 0, result.stderr[-3000:]
    assert all((r / "proc/sys/vm/swappiness").read_text().strip() == "10" for r in roots.values())
