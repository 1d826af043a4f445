"""agent/gate.py: verdicts, reasons, opt-out, --strict, the watchdog and budget, the epilog,
with a fake scontrol that answers in the format of the recorded real outputs."""

from __future__ import annotations

import threading
import time

import pytest
from gate_fixtures import h100_inventory, slurm_text
from gpu_fixtures import make_host

from gpunode.audit.engine import Result, Status, check, fail, ok, warn
from gpunode.audit.run import choose_checks
from gpunode.checks.gpu_common import LEFTOVER_MEMORY_BYTES
from gpunode.config import Config
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import LiveGpuSource, ReplayGpuSource
from gpunode.host.runner import CommandResult, Runner
from gpunode.slurm.gate import (
    GateOptions,
    GateRun,
    blocking_results,
    env_opt_out,
    gate_document,
    gate_reason,
    job_gpu_indices,
    reason_line,
    render_text,
    run_gate,
)
from gpunode.slurm.scontrol import REASON_MAX, Slurm
from gpunode.tune.profiles import load_profile
from testkit import run, tree_host


class FakeScontrol(Runner):
    """A one-node Slurm: show node / show job / update, rendered like the real outputs."""

    def __init__(self, state="IDLE", reason=None, comment=None, gres="gpu:h100:2", broken=False):
        self.state, self.reason, self.comment, self.gres, self.broken = state, reason, comment, gres, broken
        self.calls: list[list[str]] = []

    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if self.broken:
            return CommandResult(argv, 127, error="scontrol: command not found")
        if argv == ["hostname", "-s"]:
            return CommandResult(argv, 0, "vm\n")
        if argv[:3] == ["scontrol", "show", "node"]:
            text = slurm_text("show-node-idle.txt").replace("State=IDLE ", f"State={self.state} ")
            text = text.replace("Gres=gpu:h100:2", f"Gres={self.gres}")
            if self.reason:
                text += f"   Reason={self.reason} [root@2026-11-24T00:07:06]\n"
            return CommandResult(argv, 0, text)
        if argv[:3] == ["scontrol", "show", "job"]:
            text = slurm_text("show-job-comment.txt").replace("Comment=gpunode=off x", f"Comment={self.comment}")
            return CommandResult(argv, 0, text)
        if argv[:2] == ["scontrol", "update"]:
            opts = dict(a.split("=", 1) for a in argv[2:])
            if opts["state"] == "drain":
                self.state, self.reason = "IDLE+DRAIN", opts["reason"]
            else:
                self.state, self.reason = "IDLE", None
            return CommandResult(argv, 0)
        raise AssertionError(f"unexpected command {argv}")

    @property
    def updates(self):
        return [c for c in self.calls if c[:2] == ["scontrol", "update"]]

    @property
    def job_lookups(self):
        return [c for c in self.calls if c[:3] == ["scontrol", "show", "job"]]


@check("test.ok", "always fine", area="test", severity="critical", tags=["gate"])
def passing(ctx):
    return ok("fine")


@check("test.remap", "fails on GPU0", area="test", severity="critical", tags=["gate"])
def failing(ctx):
    return [fail("row remapping failed", subject="GPU0"), ok("fine", subject="GPU1")]


@check("test.broken", "raises", area="test", severity="critical", tags=["gate"])
def broken(ctx):
    raise RuntimeError("cannot read /proc/driver/nvidia")


@check("test.warn", "warns", area="test", severity="warning", tags=["gate"])
def warning(ctx):
    return warn("a bit slow")


def _run(tmp_path, checks, mode="check", scontrol=None, env=None, config=None, inventory=None, **opts):
    host = tree_host(tmp_path / "root", inventory=inventory)
    return run_gate(GateRun(
        host=host, source="test", profile=load_profile("training"), config=config or Config(),
        checks=checks, options=GateOptions(mode, **opts), env=env or {},
        slurm=Slurm(scontrol) if scontrol is not None else None,
    ))


def _result(id_, status, message, subject=None):
    return Result(id=id_, title="", area="gpu", severity="critical", status=status, message=message, subject=subject)


# --- reasons -----------------------------------------------------------------------------------

def test_reason_line_format():
    r = _result("gpu.memory.remap", Status.FAIL, "row remapping failed", "GPU3")
    assert reason_line(r) == "gpunode: gpu.memory.remap GPU3: row remapping failed"
    assert reason_line(_result("gpu.count", Status.FAIL, "1 GPU, expected 8")) == "gpunode: gpu.count: 1 GPU, expected 8"


def test_reason_is_one_short_line():
    r = _result("gpu.xid", Status.FAIL, "Xid 79 at 2026-11-23T10:00:00\n  GPU has fallen off the bus. " * 5, "GPU0")
    line = reason_line(r)
    assert len(line) <= REASON_MAX and "\n" not in line and line.endswith("...")
    assert line.startswith("gpunode: gpu.xid GPU0: Xid 79 at")


def test_gate_reason_counts_the_others():
    blocking = [_result("gpu.count", Status.FAIL, "1 GPU, expected 8" + " x" * 80),
                _result("gpu.memory.remap", Status.FAIL, "failed", "GPU0"),
                _result("gpu.xid", Status.FAIL, "Xid 79", "GPU1")]
    reason = gate_reason(blocking)
    assert reason.startswith("gpunode: gpu.count: 1 GPU") and reason.endswith("... (+2 more)")
    assert len(reason) <= REASON_MAX
    assert gate_reason([]) is None


def test_only_fail_blocks_unless_strict():
    results = [_result("a", Status.FAIL, "x"), _result("b", Status.ERROR, "y"), _result("c", Status.WARN, "z"),
               _result("d", Status.SKIP, "s")]
    assert [r.id for r in blocking_results(results, strict=False)] == ["a"]
    assert [r.id for r in blocking_results(results, strict=True)] == ["a", "b"]


# --- opt-out -----------------------------------------------------------------------------------

OPT_OUT_ON = Config(allow_job_opt_out=True)  # the site allows jobs to opt out (off by default)


@pytest.mark.parametrize(
    ("env", "source"),
    [
        ({"SLURM_JOB_EXTRA": "gpunode=off"}, "SLURM_JOB_EXTRA"),
        ({"SLURM_JOB_EXTRA": "team=vision,gpunode=off"}, "SLURM_JOB_EXTRA"),
        ({"SLURM_JOB_COMMENT": "debugging node gpunode=off please"}, "SLURM_JOB_COMMENT"),
        ({"SLURM_JOB_COMMENT": "gpunode=offline"}, None),
        ({"SLURM_JOB_COMMENT": "xgpunode=off"}, None),
        ({"SLURM_JOB_COMMENT": "gpunode=on"}, None),
        ({}, None),
    ],
)
def test_env_opt_out(env, source):
    assert env_opt_out(env) == source


def test_prolog_opt_out_from_env_runs_nothing(tmp_path):
    scontrol = FakeScontrol()
    v = _run(tmp_path, [failing], "prolog", scontrol, env={"SLURM_JOB_EXTRA": "gpunode=off"}, config=OPT_OUT_ON)
    assert v.opted_out == "SLURM_JOB_EXTRA" and v.results == [] and v.exit_code == 0
    assert scontrol.calls == []


def test_opt_out_is_off_unless_the_site_allows_it(tmp_path):
    """By default no job can switch the gate off: gpunode=off in the job's environment or in its
    comment is neither honoured nor looked up."""
    scontrol = FakeScontrol(comment="gpunode=off x")
    env = {"SLURM_JOB_EXTRA": "gpunode=off", "SLURM_JOB_ID": "7", "SLURMD_NODENAME": "vm"}
    v = _run(tmp_path, [failing], "prolog", scontrol, env=env)
    assert Config().allow_job_opt_out is False
    assert v.opted_out is None and v.blocked and v.exit_code == 2 and scontrol.job_lookups == []


def test_prolog_opt_out_from_job_comment_is_asked_only_on_a_block(tmp_path):
    scontrol = FakeScontrol(comment="gpunode=off x")
    env = {"SLURM_JOB_ID": "2", "SLURMD_NODENAME": "vm"}
    config = Config(expected_gpus=2, allow_job_opt_out=True)
    v = _run(tmp_path, [passing], "prolog", scontrol, env=env, config=config)
    assert v.exit_code == 0 and scontrol.calls == []  # healthy: no RPC at all
    v = _run(tmp_path, [failing], "prolog", scontrol, env=env, config=config)
    assert v.opted_out == "job comment" and v.exit_code == 0 and not v.blocked
    assert scontrol.job_lookups == [["scontrol", "show", "job", "2"]] and scontrol.updates == []


def test_job_comment_without_opt_out_still_blocks(tmp_path):
    scontrol = FakeScontrol(comment="resnet run 5")
    v = _run(tmp_path, [failing], "prolog", scontrol, env={"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "vm"},
             config=OPT_OUT_ON)
    assert v.opted_out is None and v.blocked and v.exit_code == 2


# --- modes -------------------------------------------------------------------------------------

def test_check_mode_exit_codes(tmp_path):
    assert _run(tmp_path, [passing]).exit_code == 0
    assert _run(tmp_path, [passing, warning]).exit_code == 1
    assert _run(tmp_path, [passing, broken]).exit_code == 3
    assert _run(tmp_path, [passing, broken], strict=True).exit_code == 2
    v = _run(tmp_path, [passing, failing, broken])
    assert v.exit_code == 2 and v.reason == "gpunode: test.remap GPU0: row remapping failed"


def test_prolog_fail_drains_with_our_reason_and_exits_non_zero(tmp_path):
    scontrol = FakeScontrol()
    v = _run(tmp_path, [passing, failing], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"})
    assert v.exit_code == 2 and v.blocked
    assert scontrol.state == "IDLE+DRAIN" and scontrol.reason == "gpunode: test.remap GPU0: row remapping failed"
    assert v.slurm.action == "drained"


def test_prolog_fail_keeps_a_foreign_reason_but_still_blocks(tmp_path):
    scontrol = FakeScontrol(state="MIXED+DRAIN", reason="ops: replace PSU")
    v = _run(tmp_path, [failing], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"})
    assert v.exit_code == 2 and scontrol.updates == [] and scontrol.reason == "ops: replace PSU"
    assert v.slurm.action == "left-foreign"


def test_prolog_error_does_not_block_by_default(tmp_path):
    scontrol = FakeScontrol()
    v = _run(tmp_path, [passing, broken], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"})
    assert v.exit_code == 0 and scontrol.updates == []
    v = _run(tmp_path, [passing, broken], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"}, strict=True)
    assert v.exit_code == 2 and scontrol.reason.startswith("gpunode: test.broken: check raised RuntimeError")


def test_prolog_blocks_even_when_scontrol_is_missing(tmp_path):
    v = _run(tmp_path, [failing], "prolog", FakeScontrol(broken=True), env={"SLURMD_NODENAME": "vm"})
    assert v.exit_code == 2 and v.problems and "command not found" in v.problems[0]


def test_health_check_drains_then_resumes_its_own_drain(tmp_path):
    scontrol = FakeScontrol()
    v = _run(tmp_path, [failing], "health-check", scontrol)
    assert v.exit_code == 0 and scontrol.state == "IDLE+DRAIN" and scontrol.reason.startswith("gpunode: test.remap")
    v = _run(tmp_path, [passing], "health-check", scontrol)
    assert v.slurm.action == "resumed" and scontrol.state == "IDLE" and scontrol.reason is None


def test_health_check_leaves_an_operator_drain_alone(tmp_path):
    for checks in ([failing], [passing]):
        scontrol = FakeScontrol(state="IDLE+DRAIN", reason="ops: cable check")
        v = _run(tmp_path, checks, "health-check", scontrol)
        assert v.slurm.action == "left-foreign" and scontrol.updates == []
        assert scontrol.reason == "ops: cable check"


def test_health_check_does_not_resume_while_checks_error(tmp_path):
    scontrol = FakeScontrol(state="IDLE+DRAIN", reason="gpunode: test.remap GPU0: row remapping failed")
    v = _run(tmp_path, [passing, broken], "health-check", scontrol)
    assert scontrol.updates == [] and v.slurm.action == "none" and v.exit_code == 0


def test_health_check_reports_its_own_failure(tmp_path):
    v = _run(tmp_path, [failing], "health-check", FakeScontrol(broken=True))
    assert v.exit_code == 3 and v.slurm is None


def test_expected_gpus_come_from_slurm_gres_unless_configured(tmp_path):
    seen = []

    @check("test.count", "records the expectation", area="test", tags=["gate"])
    def count(ctx):
        seen.append(ctx.config.expected_gpus)
        return ok("recorded")

    scontrol = FakeScontrol(gres="gpu:h100:4(S:0),gpu:h100:4(S:1)")
    v = _run(tmp_path, [count], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"})
    assert seen == [8] and v.meta["expected_gpus_from"].startswith("slurm gres")
    scontrol = FakeScontrol()
    _run(tmp_path, [count], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"}, config=Config(expected_gpus=2))
    assert seen == [8, 2] and scontrol.calls == []  # configured: no RPC on the job's start


def test_gres_expectation_meets_the_real_gpu_count_check(tmp_path):
    """End to end with the GPU helper's gpu.count check: one GPU seen, Slurm says two."""
    from gpunode.audit.run import choose_checks

    checks = [c for c in choose_checks(load_profile("training"), tags=["gate"]) if c.id == "gpu.count"]
    if not checks:
        pytest.skip("gpu.count check not in the catalogue")
    inventory = GpuInventory.from_json(h100_inventory(1))
    scontrol = FakeScontrol(gres="gpu:h100:2")
    v = _run(tmp_path, checks, "health-check", scontrol, inventory=inventory)
    assert v.blocked and scontrol.reason.startswith("gpunode: gpu.count")


# --- watchdog and budget -----------------------------------------------------------------------

def hanging_check(release: threading.Event):
    """A gate check that answers only when `release` is set (or after a minute)."""
    @check("test.hang", "never answers", area="test", severity="critical", tags=["gate"])
    def hang(ctx):
        release.wait(60)
        return ok("late")

    return hang


def test_a_hung_check_is_named_and_the_gate_ends_in_time(tmp_path):
    release = threading.Event()
    hang = hanging_check(release)
    scontrol = FakeScontrol()
    try:
        started = time.monotonic()
        v = _run(tmp_path, [passing, hang, failing], "health-check", scontrol, timeout=2.0)
        wall = time.monotonic() - started
    finally:
        release.set()
    assert wall < 2.0, f"gate took {wall:.2f}s with --timeout 2"
    hung = [r for r in v.results if r.id == "test.hang"]
    assert hung[0].status == Status.ERROR and "hung" in hung[0].message
    assert {r.id for r in v.results} >= {"test.ok", "test.hang", "test.remap"}


def test_a_hung_check_alone_does_not_drain(tmp_path):
    release = threading.Event()
    hang = hanging_check(release)
    scontrol = FakeScontrol()
    try:
        started = time.monotonic()
        v = _run(tmp_path, [hang, passing], "health-check", scontrol, timeout=1.5, check_timeout=0.5)
        wall = time.monotonic() - started
    finally:
        release.set()
    assert wall < 1.5
    assert [r.status for r in v.results] == [Status.ERROR, Status.PASS]
    assert scontrol.updates == [] and not v.blocked and v.exit_code == 0


class HungNvml(LiveGpuSource):
    """The live source with a wedged driver: the NVML pass never returns."""

    def __init__(self, release):
        super().__init__()
        self.release = release

    def _collect(self):
        self.release.wait(60)


def test_a_hung_driver_blocks_and_the_other_checks_still_run(tmp_path):
    """A wedged driver must drain (gpu.nvml FAIL), not end as hung checks (ERROR, no block),
    and the checks after the GPU ones (the kernel log's Xid) must still get their turn."""
    release = threading.Event()
    profile = load_profile("training")
    host = tree_host(tmp_path / "root", files={"/sys/bus/pci/devices/0000:18:00.0/vendor": "0x10de\n",
                                               "/sys/bus/pci/devices/0000:18:00.0/class": "0x030200\n"})
    host.gpu = HungNvml(release)
    try:
        started = time.monotonic()
        v = run_gate(GateRun(host=host, source="test", profile=profile, config=Config(),
                             checks=choose_checks(profile, tags=["gate"]), options=GateOptions("prolog", timeout=4.0)))
        wall = time.monotonic() - started
    finally:
        release.set()
    by_id = {r.id: r for r in v.results}
    assert by_id["gpu.nvml"].status == Status.FAIL and "NVML hung" in by_id["gpu.nvml"].message
    assert v.blocked and v.exit_code == 2 and v.reason.startswith("gpunode: gpu.nvml: NVML hung")
    assert "budget" not in by_id["gpu.xid"].message
    assert wall < 4.0


def test_budget_used_up_marks_the_rest_not_run(tmp_path):
    release = threading.Event()

    @check("test.slow", "slow", area="test", tags=["gate"])
    def slow(ctx):
        release.wait(60)
        return ok("late")

    try:
        v = _run(tmp_path, [slow, passing], timeout=0.6, check_timeout=5)
    finally:
        release.set()
    assert v.results[0].status == Status.ERROR
    assert v.results[1].status == Status.ERROR and "budget" in v.results[1].message


# --- epilog ------------------------------------------------------------------------------------

class NvmlReads:
    """Fresh NVML reads in order (the last one repeats), with a fake clock."""

    def __init__(self, *inventories):
        self.inventories = list(inventories)
        self.reads = 0
        self.now = 0.0

    def source(self):
        inv = self.inventories[min(self.reads, len(self.inventories) - 1)]
        self.reads += 1
        return ReplayGpuSource(GpuInventory.from_json(inv))

    def clock(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def _epilog(tmp_path, seq, scontrol, env=None, timeout=10.0, config=None):
    host = tree_host(tmp_path / "root")
    return run_gate(GateRun(
        host=host, source="test", profile=load_profile("training"), config=config or Config(), checks=[],
        options=GateOptions("epilog", timeout=timeout), env=env or {"SLURMD_NODENAME": "vm"},
        slurm=Slurm(scontrol), gpu_factory=seq.source, clock=seq.clock, sleep=seq.sleep,
    ))


BUSY = {"processes": [{"pid": 4242, "kind": "compute", "used_memory_bytes": 2 << 30, "name": "python"}],
        "memory_used_bytes": 2 << 30}


def test_epilog_waits_for_processes_to_go(tmp_path):
    seq = NvmlReads(h100_inventory(2, **BUSY), h100_inventory(2, **BUSY), h100_inventory(2))
    scontrol = FakeScontrol()
    v = _epilog(tmp_path, seq, scontrol)
    assert seq.reads == 3 and v.exit_code == 0 and not v.blocked and scontrol.updates == []
    assert [r.status for r in v.results] == [Status.PASS, Status.PASS]


def test_epilog_drains_when_leftovers_stay(tmp_path):
    seq = NvmlReads(h100_inventory(2, **BUSY))
    scontrol = FakeScontrol()
    v = _epilog(tmp_path, seq, scontrol, timeout=6)
    assert seq.reads >= 2 and seq.now <= 6
    assert v.blocked and v.exit_code == 0  # drained by us: no "Epilog error" needed
    assert scontrol.reason.startswith("gpunode: epilog.leftovers GPU0: 1 process(es) on the GPU: pid 4242 (python")


def test_epilog_fails_the_hook_when_it_cannot_drain(tmp_path):
    v = _epilog(tmp_path, NvmlReads(h100_inventory(1, **BUSY)), FakeScontrol(broken=True), timeout=3)
    assert v.blocked and v.exit_code == 2  # Slurm then drains it itself


@pytest.mark.parametrize("used", [LEFTOVER_MEMORY_BYTES - 1, LEFTOVER_MEMORY_BYTES, LEFTOVER_MEMORY_BYTES + 1])
def test_epilog_and_audit_judge_leftover_memory_alike(tmp_path, used):
    """One rule: the epilog blocks exactly when the audit's gpu.processes is not PASS."""
    from gpunode.checks.gpu import processes

    inv = h100_inventory(1, memory_used_bytes=used)
    blocked = _epilog(tmp_path, NvmlReads(inv), FakeScontrol(), timeout=3).blocked
    host = make_host(tmp_path / "audit", GpuInventory.from_json(inv))
    [audit] = run(processes, host)
    assert blocked == (used > LEFTOVER_MEMORY_BYTES) == (audit.status != Status.PASS)


def test_epilog_only_looks_at_the_jobs_gpus(tmp_path):
    inv = h100_inventory(2)
    inv["gpus"][1].update(BUSY)  # another job's process on GPU1
    env = {"SLURMD_NODENAME": "vm", "SLURM_JOB_GPUS": "0"}
    v = _epilog(tmp_path, NvmlReads(inv), FakeScontrol(), env=env, timeout=3)
    assert not v.blocked and [r.subject for r in v.results] == ["GPU0"]
    assert job_gpu_indices({"SLURM_JOB_GPUS": "0,3"}) == {0, 3}
    assert job_gpu_indices({"SLURM_JOB_GPUS": "garbage"}) is None


def test_epilog_without_driver_skips(tmp_path):
    seq = NvmlReads({"available": False, "error": "no NVIDIA driver/NVML: Driver Not Loaded"})
    v = _epilog(tmp_path, seq, FakeScontrol(), timeout=3)
    assert [r.status for r in v.results] == [Status.SKIP] and not v.blocked


def test_epilog_opt_out(tmp_path):
    seq = NvmlReads(h100_inventory(1, **BUSY))
    env = {"SLURMD_NODENAME": "vm", "SLURM_JOB_COMMENT": "gpunode=off"}
    v = _epilog(tmp_path, seq, FakeScontrol(), env=env, config=OPT_OUT_ON)
    assert v.opted_out and seq.reads == 0 and v.exit_code == 0
    v = _epilog(tmp_path, NvmlReads(h100_inventory(1, **BUSY)), FakeScontrol(), env=env, timeout=2)  # not allowed
    assert v.opted_out is None and v.blocked


# --- outputs -----------------------------------------------------------------------------------

def test_document_and_text(tmp_path):
    v = _run(tmp_path, [passing, failing, warning])
    doc = gate_document(v)
    assert doc["schema"] == "gpunode.gate/1" and doc["status"] == "FAIL" and doc["exit_code"] == 2
    assert doc["reason"] == "gpunode: test.remap GPU0: row remapping failed"
    assert doc["summary"]["FAIL"] == 1 and len(doc["checks"]) == 4
    text = render_text(v)
    assert "FAIL  test.remap GPU0: row remapping failed" in text and "test.ok" not in text
    assert text.splitlines()[-1] == "reason: gpunode: test.remap GPU0: row remapping failed"


def test_options_are_validated():
    with pytest.raises(ValueError):
        GateOptions("pre-job")
    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            GateOptions("check", timeout=bad)
    with pytest.raises(ValueError):
        GateOptions("check", check_timeout=float("nan"))
    assert GateOptions("check", timeout=20).per_check_timeout == 5.0
    assert GateOptions("check", timeout=2).per_check_timeout == 0.5
    assert GateOptions("check", timeout=2, check_timeout=9).per_check_timeout == 2


# --- mutation survivors: the Slurm steps after a block, budgets, reasons -----------------------

def test_prolog_with_configured_gpus_reads_the_node_only_to_drain_it(tmp_path):
    """expected_gpus in the config: no node read at the job's start, so a block reads it then."""
    scontrol = FakeScontrol()
    v = _run(tmp_path, [failing], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"}, config=Config(expected_gpus=2))
    assert v.exit_code == 2 and v.slurm.action == "drained"
    assert scontrol.state == "IDLE+DRAIN" and scontrol.reason == "gpunode: test.remap GPU0: row remapping failed"
    assert [c[:3] for c in scontrol.calls].count(["scontrol", "show", "node"]) == 1


def test_a_node_read_that_failed_is_not_retried(tmp_path):
    scontrol = FakeScontrol(broken=True)
    v = _run(tmp_path, [failing], "health-check", scontrol, env={"SLURMD_NODENAME": "vm"})
    assert scontrol.calls == [["scontrol", "show", "node", "vm"]]
    assert v.problems == ["scontrol show node vm: scontrol: command not found"] and v.exit_code == 3


@pytest.mark.parametrize("env", [{"SLURMD_NODENAME": "vm"},
                                 {"SLURMD_NODENAME": "vm", "SLURM_JOB_ID": "7", "SLURM_JOB_COMMENT": "resnet run"}])
def test_job_comment_is_not_asked_without_a_job_id_or_when_slurm_passed_it(tmp_path, env):
    scontrol = FakeScontrol(comment="gpunode=off x")  # would opt out if it were asked
    v = _run(tmp_path, [failing], "prolog", scontrol, env=env)
    assert scontrol.job_lookups == [] and v.opted_out is None and v.blocked and v.exit_code == 2
    assert v.slurm.action == "drained"


class JobLookupFails(FakeScontrol):
    def run(self, argv, timeout=10.0, env=None, cwd=None, input_text=None):
        if list(argv[:3]) == ["scontrol", "show", "job"]:
            self.calls.append([str(a) for a in argv])
            return CommandResult(list(argv), 1, stderr="slurm_load_jobs error: Invalid job id specified\n")
        return super().run(argv, timeout, env, cwd, input_text)


def test_a_failed_job_comment_lookup_is_reported_and_still_blocks(tmp_path):
    scontrol = JobLookupFails()
    v = _run(tmp_path, [failing], "prolog", scontrol, env={"SLURMD_NODENAME": "vm", "SLURM_JOB_ID": "7"},
             config=OPT_OUT_ON)  # the comment is looked up only where opt-outs are allowed
    assert v.blocked and v.exit_code == 2 and v.slurm.action == "drained"
    assert v.problems == ["scontrol show job 7: slurm_load_jobs error: Invalid job id specified"]
    assert gate_document(v)["problems"] == v.problems
    assert "problem: scontrol show job 7: slurm_load_jobs error: Invalid job id specified" in render_text(v)


def test_text_names_what_was_done_to_the_node(tmp_path):
    v = _run(tmp_path, [failing], "prolog", FakeScontrol(), env={"SLURMD_NODENAME": "vm"})
    assert "slurm: drained: gpunode: test.remap GPU0: row remapping failed" in render_text(v).splitlines()
    v = _run(tmp_path, [passing], "health-check", FakeScontrol(), env={"SLURMD_NODENAME": "vm"})
    assert render_text(v).splitlines()[-1] == "slurm: none: healthy; nothing to change"


def test_reason_cut_to_exactly_the_limit():
    r = _result("gpu.xid", Status.FAIL, "x" * 300, "GPU0")
    line = reason_line(r)
    assert line == ("gpunode: gpu.xid GPU0: " + "x" * 300)[:REASON_MAX - 3] + "..."
    assert len(line) == REASON_MAX
    assert reason_line(r, limit=40) == "gpunode: gpu.xid GPU0: xxxxxxxxxxxxxx..."


def test_a_drain_reason_is_at_most_100_characters(tmp_path):
    """sinfo/squeue columns and alerting tools cut long reasons: the one sent to scontrol fits."""
    @check("test.long", "long message", area="test", severity="critical", tags=["gate"])
    def long_message(ctx):
        return fail("y" * 400, subject="GPU0")

    scontrol = FakeScontrol()
    v = _run(tmp_path, [long_message], "prolog", scontrol, env={"SLURMD_NODENAME": "vm"})
    assert v.reason == scontrol.reason and len(scontrol.reason) == 100
    assert scontrol.reason.startswith("gpunode: test.long GPU0: yyy") and scontrol.reason.endswith("y...")


class TimedReads(NvmlReads):
    """NvmlReads that records the timeout each NVML read was given."""

    def __init__(self, *inventories):
        super().__init__(*inventories)
        self.timeouts = []

    def source(self):
        src = super().source()
        outer = self

        class Recorded(ReplayGpuSource):
            def inventory(self, timeout=None):
                outer.timeouts.append(timeout)
                return src.inventory(timeout)

        return Recorded(src.inventory())


@pytest.mark.parametrize("timeout", [2.0, 6.0, 8.0, 20.0])
@pytest.mark.parametrize("with_slurm", [True, False])
def test_epilog_keeps_a_quarter_of_a_short_budget_for_scontrol(tmp_path, timeout, with_slurm):
    """The Slurm reserve: min(3 s, a quarter of --timeout), only when there is scontrol to call;
    the epilog's poll then gets the rest less half a second."""
    seq = TimedReads(h100_inventory(1))
    host = tree_host(tmp_path / "root")
    run_gate(GateRun(
        host=host, source="test", profile=load_profile("training"), config=Config(), checks=[],
        options=GateOptions("epilog", timeout=timeout), env={"SLURMD_NODENAME": "vm"},
        slurm=Slurm(FakeScontrol()) if with_slurm else None, gpu_factory=seq.source, clock=seq.clock,
        sleep=seq.sleep,
    ))
    reserve = min(3.0, timeout / 4) if with_slurm else 0.0
    assert seq.timeouts == [pytest.approx(timeout - reserve - 0.5)]


def test_epilog_skip_says_why_the_driver_could_not_be_read(tmp_path):
    seq = NvmlReads({"available": False, "error": "NVML: Driver/library version mismatch"})
    v = _epilog(tmp_path, seq, FakeScontrol(), timeout=3)
    assert [(r.status, r.message) for r in v.results] == [(Status.SKIP, "NVML: Driver/library version mismatch")]
    seq = NvmlReads({"available": False})
    v = _epilog(tmp_path, seq, FakeScontrol(), timeout=3)
    assert [(r.status, r.message) for r in v.results] == [(Status.SKIP, "no NVIDIA driver/NVML")]
