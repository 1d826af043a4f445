"""`gpunode gate`: the fast pre-job health gate (Slurm Prolog, Epilog, HealthCheckProgram).

It runs the checks tagged `gate` through the normal engine (per-check watchdog, total budget)
and turns the results into one verdict. Rules, from NHC and others' bugs:
- only a FAIL blocks; an ERROR of gpunode itself blocks only with --strict;
- a Slurm reason reads `gpunode: <check id>[ <subject>]: <short message>`; gpunode never
  overwrites a reason it did not set and resumes only its own drains (gpunode.slurm.scontrol);
- a job opts out with `gpunode=off` in SLURM_JOB_EXTRA or its comment (SLURM_JOB_COMMENT,
  else `scontrol show job $SLURM_JOB_ID`, asked only when the gate would block), and only
  where the site config allows it (`allow_job_opt_out: true`); each opt-out is logged;
- the whole run, Slurm calls included, stays inside --timeout.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from gpunode import __version__
from gpunode.audit.context import AuditContext
from gpunode.audit.engine import (
    Check,
    CheckSkipped,
    Result,
    Status,
    fail,
    gate_not_run_line,
    ok,
    overall,
    run_checks,
)
from gpunode.audit.report import summary
from gpunode.checks.gpu_common import field_problem, leftovers
from gpunode.config import Config
from gpunode.exits import slurm_hook_exit, verdict_exit
from gpunode.host.gpu.model import GpuInventory
from gpunode.host.gpu.source import NVML_TIMEOUT_S, GpuSource
from gpunode.host.seam import Host
from gpunode.model.profile import Profile
from gpunode.outputs import iso_time
from gpunode.slurm.scontrol import OUR_PREFIX, REASON_MAX, Slurm, SlurmAction, SlurmError, settle_node

GATE_SCHEMA = "gpunode.gate/1"
MODES = ("check", "prolog", "epilog", "health-check")
SLURM_MODES = ("prolog", "epilog", "health-check")
OPT_OUT = re.compile(r"(?:^|[\s,;])gpunode=off(?:$|[\s,;])")
EPILOG_CHECK_ID = "epilog.leftovers"
EPILOG_POLL_S = 1.0
# Time kept back from the checks for the scontrol calls that follow them (a local scontrol
# answers in ~10 ms; a busy slurmctld in seconds), at most a quarter of the budget.
SLURM_RESERVE_S = 3.0
# A check waits for NVML at most this share of its watchdog, so a hung driver reads as
# gpu.nvml FAIL "NVML hung" (blocks) and not as a hung check (ERROR, does not block).
NVML_SHARE = 0.8


def seconds(value: float, option: str) -> float:
    """A budget in seconds: positive and finite. The range test also refuses nan, which every
    comparison with the budget would pass (a gate that never times out, or never runs)."""
    if not 0 < value < math.inf:
        raise ValueError(f"{option} must be positive and finite (seconds), got {value}")
    return value


@dataclass
class GateOptions:
    """How one gate run is asked to behave (mode, budgets, strictness)."""

    mode: str = "check"
    timeout: float = 20.0
    check_timeout: float | None = None  # default: a quarter of the budget, at most 5 s
    strict: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown gate mode {self.mode!r}; modes: {', '.join(MODES)}")
        seconds(self.timeout, "--timeout")
        if self.check_timeout is not None:
            seconds(self.check_timeout, "--check-timeout")

    @property
    def per_check_timeout(self) -> float:
        if self.check_timeout is not None:
            return min(self.check_timeout, self.timeout)
        return max(0.5, min(5.0, self.timeout / 4))


@dataclass
class GateVerdict:
    """What one gate run found and decided; its exit code follows the mode."""

    mode: str
    results: list[Result]
    blocking: list[Result]
    reason: str | None
    strict: bool = False
    opted_out: str | None = None  # where the opt-out came from
    slurm: SlurmAction | None = None
    problems: list[str] = field(default_factory=list)  # gpunode's own failures (scontrol, ...)
    meta: dict = field(default_factory=dict)

    @property
    def blocked(self) -> bool:
        return bool(self.blocking) and self.opted_out is None

    @property
    def status(self) -> str:
        if self.opted_out is not None:
            return "OPTED_OUT"
        if self.blocked:
            return "FAIL"
        return overall(self.results)

    @property
    def exit_code(self) -> int:
        """check: the verdict's code; the Slurm modes: gpunode.exits.slurm_hook_exit."""
        if self.mode == "check":
            return verdict_exit("FAIL" if self.blocked else overall(self.results))
        drained = self.slurm is not None and self.slurm.action in ("drained", "unchanged", "left-foreign")
        return slurm_hook_exit(self.mode, self.blocked, drained, bool(self.problems))


@dataclass
class GateRun:
    """Everything one gate run needs, passed in (no globals): the host the checks read,
    the environment Slurm gave us, and the scontrol client (None: no Slurm actions)."""

    host: Host
    source: str
    profile: Profile
    config: Config
    checks: Sequence[Check]
    options: GateOptions
    env: Mapping[str, str] = field(default_factory=dict)
    slurm: Slurm | None = None
    gpu_factory: Callable[[], GpuSource] | None = None  # fresh NVML reads (epilog polling)
    gate_not_run: list[dict] = field(default_factory=list)  # gate checks disable_checks took out
    results: list[Result] | None = None  # judged already (a fresh `gpunode watch` state): not run again
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


# --- reasons ---------------------------------------------------------------------------------

def reason_line(result: Result, limit: int = REASON_MAX) -> str:
    """`gpunode: <check id>[ <subject>]: <short message>`, one line, at most `limit` chars."""
    head = f"{OUR_PREFIX} {result.id}" + (f" {result.subject}" if result.subject else "")
    message = " ".join((result.message or result.status.value).split())
    return _fit(f"{head}: {message}", limit)


def gate_reason(blocking: Sequence[Result], limit: int = REASON_MAX) -> str | None:
    """The first blocking result's reason, with `(+N more)` when there are others."""
    if not blocking:
        return None
    more = f" (+{len(blocking) - 1} more)" if len(blocking) > 1 else ""
    return reason_line(blocking[0], limit - len(more)) + more


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 3, 0)].rstrip() + "..."


def blocking_results(results: Sequence[Result], strict: bool) -> list[Result]:
    blocked = {Status.FAIL, Status.ERROR} if strict else {Status.FAIL}
    return [r for r in results if r.status in blocked]


# --- opt-out (only where the site config allows it: Config.allow_job_opt_out) ------------------

def env_opt_out(env: Mapping[str, str]) -> str | None:
    """`gpunode=off` in SLURM_JOB_EXTRA (`sbatch --extra`, Slurm >= 23.02) or SLURM_JOB_COMMENT."""
    for name in ("SLURM_JOB_EXTRA", "SLURM_JOB_COMMENT"):
        if OPT_OUT.search(env.get(name, "")):
            return name
    return None


def opt_out_fields(verdict: GateVerdict, env: Mapping[str, str]) -> dict:
    """What the audit trail records about an opt-out: who skipped the gate, for which job."""
    return {"mode": verdict.mode, "job": env.get("SLURM_JOB_ID"), "user": env.get("SLURM_JOB_USER"),
            "uid": env.get("SLURM_JOB_UID"), "from": verdict.opted_out,
            "would_block": verdict.reason}


def comment_opt_out(slurm: Slurm | None, env: Mapping[str, str]) -> str | None:
    """Older Slurm does not pass the comment to prologs: ask scontrol (one RPC, only on a block)."""
    job_id = env.get("SLURM_JOB_ID", "").strip()
    if slurm is None or not job_id or "SLURM_JOB_COMMENT" in env:
        return None
    comment = slurm.job_comment(job_id)
    return "job comment" if comment and OPT_OUT.search(comment) else None


# --- the epilog's own check: leftovers after a job ---------------------------------------------

def leftover_findings(inventory: GpuInventory, indices: set[int] | None = None) -> list:
    """Per GPU: FAIL when processes or more than 1 GiB of memory remain (the audit's rule,
    gpu_common.leftovers), or when the GPU cannot be read; else PASS."""
    if not inventory.available:
        raise CheckSkipped(inventory.error or "no NVIDIA driver/NVML")
    found = []
    for gpu in inventory.gpus:
        if indices is not None and gpu.index not in indices:
            continue
        problem = (f"cannot read the GPU: {gpu.error}" if gpu.error
                   else field_problem(gpu, ("processes", "memory_used_bytes")) or leftovers(gpu))
        found.append(fail(problem, observed=[p.pid for p in gpu.processes], subject=gpu.label) if problem
                     else ok("no processes, memory free", subject=gpu.label))
    if not found:
        raise CheckSkipped("no GPU of this job found")
    return found


def job_gpu_indices(env: Mapping[str, str]) -> set[int] | None:
    """SLURM_JOB_GPUS (`0,1`) limits the epilog to this job's GPUs on shared nodes; the
    indices are Slurm's, which match NVML's with gres AutoDetect=nvml or File= in bus order."""
    raw = env.get("SLURM_JOB_GPUS", "").strip()
    if not raw:
        return None
    try:
        return {int(x) for x in raw.split(",") if x.strip()}
    except ValueError:
        return None


def leftovers_check(run: GateRun, budget: float) -> Check:
    """Polls fresh NVML reads until the job's processes are gone or the budget is spent."""
    indices = job_gpu_indices(run.env)
    factory = run.gpu_factory or (lambda: run.host.gpu)

    def poll(ctx) -> list:
        deadline = run.clock() + budget
        while True:
            remaining = max(deadline - run.clock(), 0.1)
            found = leftover_findings(factory().inventory(timeout=remaining), indices)
            if all(f.status == Status.PASS for f in found) or run.clock() + EPILOG_POLL_S >= deadline:
                return found
            run.sleep(EPILOG_POLL_S)

    return Check(EPILOG_CHECK_ID, "No GPU processes or memory left after the job", area="gpu", func=poll,
                 severity="critical", tags=frozenset({"gate"}), needs_gpu=True,
                 remediation="Find and kill the stuck processes (nvidia-smi); reset the GPU or reboot.")


# --- the run ---------------------------------------------------------------------------------

def run_gate(run: GateRun) -> GateVerdict:
    started = run.clock()
    opts = run.options
    meta = _meta(run)
    problems: list[str] = []
    may_opt_out = opts.mode in ("prolog", "epilog") and run.config.allow_job_opt_out
    opted = env_opt_out(run.env) if may_opt_out else None
    if opted:
        return GateVerdict(opts.mode, [], [], None, opts.strict, opted_out=opted, meta=_done(meta, run, started))

    slurm = run.slurm if opts.mode in SLURM_MODES else None
    node = _node_before_checks(run, slurm, started, meta, problems)
    cfg = _with_expected_gpus(run.config, node, meta)
    results = _judge(run, cfg, started, slurm is not None)
    blocking = blocking_results(results, opts.strict)
    verdict = GateVerdict(opts.mode, results, blocking, gate_reason(blocking), opts.strict, problems=problems, meta=meta)
    if slurm is not None:
        _act_on_slurm(verdict, run, slurm, node, may_opt_out)
    return _finish(verdict, run, started)


def _node_before_checks(run: GateRun, slurm: Slurm | None, started: float, meta: dict, problems: list[str]):
    """Slurm's view of this node, read before the checks where they need it: the health check
    always (it may resume), the others only for a GPU count the config does not give."""
    if slurm is None:
        return None
    slurm.deadline = started + run.options.timeout
    if run.options.mode != "health-check" and run.config.expected_gpus is not None:
        return None
    node, problem = _read_node(slurm, run.env)
    problems += problem
    meta["node"] = node.name if node else None
    return node


def _with_expected_gpus(cfg: Config, node, meta: dict) -> Config:
    """The GPU count the node must have: the config's, else the one Slurm's gres gives it."""
    meta["expected_gpus_from"] = "config" if cfg.expected_gpus is not None else None
    if cfg.expected_gpus is None and node is not None and node.gpu_count is not None:
        cfg = replace(cfg, expected_gpus=node.gpu_count)
        meta["expected_gpus_from"] = f"slurm gres {node.gres}"
    meta["expected_gpus"] = cfg.expected_gpus
    return cfg


def _judge(run: GateRun, cfg: Config, started: float, slurm_calls_follow: bool) -> list[Result]:
    """The gate checks (the epilog: its leftovers poll) within what is left of the budget, time
    kept back for the scontrol calls that follow; a watcher's judged results stand for them."""
    opts = run.options
    reserve = min(SLURM_RESERVE_S, opts.timeout / 4) if slurm_calls_follow else 0.0
    budget = max(opts.timeout - reserve - (run.clock() - started), 0.2)
    checks = list(run.checks)
    if opts.mode == "epilog":
        checks = [leftovers_check(run, max(budget - 0.5, 0.1))]
    check_timeout = budget if opts.mode == "epilog" else opts.per_check_timeout
    ctx = AuditContext(host=run.host, profile=run.profile, config=cfg,
                       nvml_timeout=min(NVML_TIMEOUT_S, NVML_SHARE * check_timeout))
    if run.results is not None and opts.mode != "epilog":
        return run.results
    return run_checks(checks, ctx, check_timeout=check_timeout, total_timeout=budget)


def _act_on_slurm(verdict: GateVerdict, run: GateRun, slurm: Slurm, node, may_opt_out: bool) -> None:
    """After the checks, in a Slurm mode: a blocked job may still opt out (its comment); a block
    drains the node, a clean health check resumes gpunode's own drain; prolog and epilog never
    resume (that is the health check's job)."""
    if verdict.blocking and may_opt_out:
        _comment_opt_out(verdict, slurm, run.env)
        if verdict.opted_out:
            return
    if _holds_resume(verdict):
        verdict.slurm = SlurmAction("none", "some checks could not run: not resuming until all are judged")
        return
    if verdict.mode != "health-check" and not verdict.blocking:
        return
    if node is None and "node" not in verdict.meta:  # not read yet (a failed read is not retried)
        node, problem = _read_node(slurm, run.env)
        verdict.problems += problem
    if node is not None:
        try:
            verdict.slurm = settle_node(slurm, node, verdict.reason)
        except SlurmError as exc:
            verdict.problems.append(str(exc))


def _comment_opt_out(verdict: GateVerdict, slurm: Slurm, env: Mapping[str, str]) -> None:
    try:
        verdict.opted_out = comment_opt_out(slurm, env)
    except SlurmError as exc:
        verdict.problems.append(str(exc))


def _holds_resume(verdict: GateVerdict) -> bool:
    """A health check with no block but checks that could not run: not clean enough to resume."""
    return (verdict.mode == "health-check" and not verdict.blocking
            and any(r.status == Status.ERROR for r in verdict.results))


def _read_node(slurm: Slurm, env: Mapping[str, str]):
    try:
        return slurm.show_node(slurm.node_name(env)), []
    except SlurmError as exc:
        return None, [str(exc)]


def _meta(run: GateRun) -> dict:
    facts = run.host.facts
    return {
        "gpunode_version": __version__,
        "host": facts.hostname,
        "time": iso_time(facts.now),
        "time_epoch": facts.now,
        "source": run.source,
        "profile": run.profile.name,
        "mode": run.options.mode,
        "timeout_s": run.options.timeout,
        "strict": run.options.strict,
        **({"gate_checks_not_run": run.gate_not_run} if run.gate_not_run else {}),
    }


def _done(meta: dict, run: GateRun, started: float) -> dict:
    meta["duration_s"] = round(run.clock() - started, 3)
    return meta


def _finish(verdict: GateVerdict, run: GateRun, started: float) -> GateVerdict:
    _done(verdict.meta, run, started)
    return verdict


# --- outputs ---------------------------------------------------------------------------------

def gate_document(verdict: GateVerdict) -> dict:
    return {
        "schema": GATE_SCHEMA,
        **verdict.meta,
        "status": verdict.status,
        "exit_code": verdict.exit_code,
        "blocked": verdict.blocked,
        "reason": verdict.reason,
        "opted_out": verdict.opted_out,
        "slurm": verdict.slurm.to_json() if verdict.slurm else None,
        "problems": verdict.problems,
        "summary": summary(verdict.results),
        "checks": [r.to_json() for r in verdict.results],
    }


def render_text(verdict: GateVerdict) -> str:
    """Plain lines (no rich: the gate starts fast): every result that is not PASS/SKIP, then
    the verdict."""
    lines = []
    for r in verdict.results:
        if r.status in (Status.PASS, Status.SKIP):
            continue
        subject = f" {r.subject}" if r.subject else ""
        lines.append(f"{r.status.value:5s} {r.id}{subject}: {' '.join(r.message.split())}")
    return "\n".join(lines + verdict_lines(verdict)) + "\n"


def verdict_lines(verdict: GateVerdict) -> list[str]:
    """The lines under the results: the verdict and its tally, then source, reason, Slurm action,
    problems and the gate checks not run."""
    lines = []
    counts = summary(verdict.results)
    tally = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    head = f"gpunode gate ({verdict.mode}): {verdict.status}"
    if verdict.opted_out:
        head += f", job opted out ({verdict.opted_out} has gpunode=off)"
    lines.append(f"{head}; {len(verdict.results)} results ({tally or 'none'}) in {verdict.meta.get('duration_s', 0):.2f}s")
    if str(verdict.meta.get("source", "")).startswith("watcher"):
        lines.append(f"source: {verdict.meta['source']}")
    if verdict.reason:
        lines.append(f"reason: {verdict.reason}")
    if verdict.slurm:
        lines.append(f"slurm: {verdict.slurm.action}: {verdict.slurm.detail}")
    lines.extend(f"problem: {p}" for p in verdict.problems)
    not_run = gate_not_run_line(verdict.meta.get("gate_checks_not_run", ()))
    if not_run:  # its own line: this gate judged less than the catalogue's gate checks
        lines.append(not_run)
    return lines
