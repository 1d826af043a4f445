"""The watcher's hands on Slurm: takes each watch.policy Action and does it, safely.

- drain / resume / reboot through slurm/scontrol.py (the gate's etiquette: a reason that is not
  gpunode's is never overwritten or cleared; resume lifts only the watcher's own drain);
- reboot: `scontrol reboot ASAP nextstate=RESUME reason="gpunode: watch: ..." NODE`;
- reset: wait until no job runs on the node, then host.gpu.control.GpuReset (never live on a
  lent machine: tests pass a fake, `--shadow` logs it);
- resume: prove the fix first, `gpunode diag --level N` (its level 1 runs the gate's checks
  too, and diag keeps its result in the node's history); a failed proof leaves the node drained;
- evidence: a bundle in <state dir>/evidence/<time>/ (the event, a snapshot, the history,
  nvidia-bug-report.sh where it exists), every command through the Runner with a timeout;
- record: the audit trail, naming the running job(s) for a restart-app fault.
Reset, resume and evidence wait or run long: they run in one worker thread, in order, so the
watcher's loop is never blocked. Every action (shadow ones as would-<kind>) goes to the audit
trail. Inside a Slurm prolog/epilog nothing is done at all.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from gpunode import trail
from gpunode.host.gpu.control import GpuReset
from gpunode.host.runner import Runner
from gpunode.slurm.scontrol import OUR_PREFIX, REASON_MAX, NodeInfo, Slurm, SlurmError, settle_node
from gpunode.state_dir import UntrustedState, check_dir
from gpunode.watch import memory
from gpunode.watch.events import Action, PolicyState
from gpunode.watch.policy import WATCH_REASON, PartitionView, WatchConfig, classify

BUSY = {"ALLOCATED", "MIXED", "COMPLETING"}
IDLE_WAIT_S = 3600.0  # how long a reset waits for the running jobs to end
IDLE_POLL_S = 10.0
SNAPSHOT_TIMEOUT_S = 120.0
BUG_REPORT_TIMEOUT_S = 300.0
PROVE_TIMEOUT_S = {1: 300.0, 2: 900.0, 3: 7200.0}


def in_slurm_hook(env: Mapping[str, str]) -> bool:
    """Run by slurmd as a prolog or epilog (Slurm sets SLURM_SCRIPT_CONTEXT there), or inside a job."""
    return bool(env.get("SLURM_SCRIPT_CONTEXT") or env.get("SLURM_JOB_ID"))


@dataclass(frozen=True)
class Proof:
    """Whether the node may go back into service, and why."""

    ok: bool
    detail: str


def diag_prover(runner: Runner, level: int, state_dir: str) -> Callable[[], Proof]:
    """`gpunode diag --level N --json` in its own process (its GPU memory is never the watcher's)."""

    def prove() -> Proof:
        argv = [sys.executable, "-m", "gpunode", "diag", "--level", str(level), "--json", "--state-dir", state_dir]
        result = runner.run(argv, timeout=PROVE_TIMEOUT_S.get(level, 7200.0))
        try:
            doc = json.loads(result.stdout)
        except ValueError:
            return Proof(False, f"diag level {level} gave no result: {_said(result)}")
        status = doc.get("status") if isinstance(doc, dict) else None
        return Proof(result.rc == 0 and status == "OK", f"diag level {level}: {status} (exit {result.rc})")

    return prove


class WatchActor:
    """Callable with one Action. `background=False` runs the slow actions in the caller (tests)."""

    def __init__(self, slurm: Slurm, runner: Runner, state_dir: str, config: WatchConfig,
                 node: str | None = None, site_config=None, reset: GpuReset | None = None,
                 prover: Callable[[], Proof] | None = None, state: PolicyState | None = None,
                 env: Mapping[str, str] = os.environ, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep, background: bool = True,
                 idle_wait_s: float = IDLE_WAIT_S, log: Callable[[str], None] = lambda line: None) -> None:
        self.slurm, self.runner, self.state_dir, self.config = slurm, runner, state_dir, config
        self.env, self.clock, self.sleep, self.log = env, clock, sleep, log
        self.node = node or slurm.node_name(env)
        self.site_config = site_config
        self.gpu_reset = reset or GpuReset(runner)
        self.prove = prover or diag_prover(runner, config.prove_level, state_dir)
        self.state = state
        self.idle_wait_s = idle_wait_s
        self.in_hook = in_slurm_hook(env)
        self.done: list[tuple[str, str]] = []  # (what was done, detail), for the state and tests
        self._work: queue.Queue | None = queue.Queue() if background else None
        self._thread: threading.Thread | None = None

    # -- the loop's entry ---------------------------------------------------------------

    def __call__(self, action: Action) -> None:
        if self.in_hook:
            return self._note(action, "refused", "inside a Slurm prolog/epilog or job: the watcher never acts there")
        if action.shadow:
            return self._note(action, f"would-{action.kind}", "shadow mode: nothing done")
        step = getattr(self, f"_{action.kind}", None)
        if step is None:
            return self._note(action, "unknown", f"no such action {action.kind!r}")
        if action.kind in ("reset", "resume", "evidence") and self._work is not None:
            self._start_worker()
            self._work.put((step, action))
            return None
        return self._run(step, action)

    def wait(self, timeout: float = 30.0) -> None:
        """Until the worker has done what was queued (tests, shutdown)."""
        if self._work is not None:
            deadline = time.monotonic() + timeout
            while self._work.unfinished_tasks and time.monotonic() < deadline:
                time.sleep(0.02)

    def _start_worker(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._worker, name="watch-actions", daemon=True)
            self._thread.start()

    def _worker(self) -> None:
        assert self._work is not None
        while True:
            step, action = self._work.get()
            try:
                self._run(step, action)
            finally:
                self._work.task_done()

    def _run(self, step, action: Action) -> None:
        try:
            step(action)
        except SlurmError as exc:
            self._note(action, f"{action.kind}-failed", str(exc))
        if action.kind in ("drain", "reboot", "reset", "resume") and self.state is not None:
            try:
                memory.save(self.state_dir, self.state, self.clock())
            except memory.WatchMemoryError as exc:
                self.log(str(exc))

    # -- actions ------------------------------------------------------------------------

    def _record(self, action: Action) -> None:
        cls = classify(action.event) if action.event is not None else None
        jobs = ",".join(self.jobs()) if cls == "restart-app" else None  # the job the fault killed
        self._note(action, "record", f"class {cls}" + (f", job {jobs}" if jobs else ""), job=jobs or None)

    def _none(self, action: Action) -> None:
        self._note(action, "held", "")

    def _drain(self, action: Action) -> None:
        node = self.slurm.show_node(self.node)
        done = settle_node(self.slurm, node, _fit(action.reason))
        self._note(action, done.action, done.detail)

    def _reboot(self, action: Action) -> None:
        node = self.slurm.show_node(self.node)
        if node.reason and not node.reason_is_ours:
            return self._note(action, "left-foreign", f"node has a reason not set by gpunode: {node.reason!r}")
        self.slurm.reboot(self.node, _fit(action.reason))
        self._note(action, "reboot-requested", "scontrol reboot ASAP nextstate=RESUME")

    def _reset(self, action: Action) -> None:
        if not action.gpu:  # never a reset of "all GPUs" by default: nvidia-smi would pick
            return self._note(action, "reset-skipped", "no GPU named: left drained")
        node = self._wait_idle()
        if node is None:
            return self._note(action, "reset-skipped", f"jobs still run after {self.idle_wait_s:g} s: left drained")
        if not _watch_drained(node):
            return self._note(action, "reset-skipped", f"node not drained by the watcher ({node.reason!r})")
        ok, said = self.gpu_reset.reset(action.gpu)
        self._note(action, "reset" if ok else "reset-failed", said)

    def _resume(self, action: Action) -> None:
        node = self.slurm.show_node(self.node)
        if not _watch_drained(node):
            return self._note(action, "left", f"not the watcher's drain ({node.state}, {node.reason!r}): not resumed")
        proof = self.prove()
        if not proof.ok:
            return self._note(action, "proof-failed", f"{proof.detail}: left drained")
        node = self.slurm.show_node(self.node)  # the proof took a while: someone may have acted
        if not _watch_drained(node):
            return self._note(action, "left", f"reason changed while proving ({node.reason!r}): not resumed")
        self.slurm.resume(self.node)
        self._note(action, "resumed", proof.detail)

    def _evidence(self, action: Action) -> None:
        now = self.clock()
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        root = Path(self.state_dir) / "evidence" / stamp
        try:
            check_dir(root.parent.parent, create=True)
            check_dir(root.parent, create=True)
            check_dir(root, create=True)
        except UntrustedState as exc:
            return self._note(action, "evidence-failed", str(exc))
        self._write(root / "event.json", {"time": now, "node": self.node, "reason": action.reason,
                                          "gpu": action.gpu, "event": _event_doc(action)})
        got = []
        snap = self.runner.run([sys.executable, "-m", "gpunode", "snapshot", "-o", str(root / "snapshot")],
                               timeout=SNAPSHOT_TIMEOUT_S)
        got.append(f"snapshot {'ok' if snap.ok else 'failed: ' + _said(snap)}")
        hist = self.runner.run([sys.executable, "-m", "gpunode", "history", "--json", "--state-dir", self.state_dir],
                               timeout=SNAPSHOT_TIMEOUT_S)
        if hist.ok:
            self._write_text(root / "history.json", hist.stdout)
        got.append(f"history {'ok' if hist.ok else 'failed: ' + _said(hist)}")
        if shutil.which("nvidia-bug-report.sh"):
            bug = self.runner.run(["nvidia-bug-report.sh", "--output-file", str(root / "nvidia-bug-report.log.gz")],
                                  timeout=BUG_REPORT_TIMEOUT_S)
            got.append(f"nvidia-bug-report {'ok' if bug.ok else 'failed: ' + _said(bug)}")
        else:
            got.append("nvidia-bug-report.sh not installed")
        self._note(action, "evidence", f"{root}: {'; '.join(got)}")

    # -- Slurm reads --------------------------------------------------------------------

    def policy_config(self, config: WatchConfig) -> WatchConfig:
        """`config` with this actor's Slurm readers: the breaker's partition view and whether
        the watcher's drain stands. A host without Slurm's commands gets none: no partition to
        protect (its --shadow shows would-drain, not a breaker held for an unreadable sinfo)."""
        from dataclasses import replace

        if shutil.which("sinfo") is None or shutil.which("scontrol") is None:
            self.config = replace(config, partition=None, own_drain=None)
        else:
            self.config = replace(config, partition=self.partition_view, own_drain=self.own_drain)
        return self.config

    def own_drain(self) -> bool | None:
        """Whether the watcher's own drain stands on this node (None: scontrol did not answer)."""
        try:
            return _watch_drained(self.slurm.show_node(self.node))
        except SlurmError:
            return None

    def jobs(self) -> list[str]:
        """The jobs running on this node now (squeue), for a restart-app fault's record."""
        result = self.runner.run(["squeue", "-h", "-w", self.node, "-t", "RUNNING,COMPLETING", "-o", "%A"],
                                 timeout=self.slurm.timeout)
        return result.stdout.split() if result.ok else []

    def partition_view(self, now: float) -> PartitionView | None:
        """This node's partitions as sinfo shows them; the circuit breaker's input."""
        parts = self.runner.run(["sinfo", "-h", "-N", "-n", self.node, "-o", "%R"], timeout=self.slurm.timeout)
        names = sorted(set(parts.stdout.split())) if parts.ok else []
        if not names:
            return None
        listing = self.runner.run(["sinfo", "-h", "-N", "-p", ",".join(names), "-o", "%N|%T|%H|%E"],
                                  timeout=self.slurm.timeout)
        if not listing.ok:
            return None
        return parse_partition(listing.stdout, now, self.config.breaker_window_s)

    # -- helpers ------------------------------------------------------------------------

    def _wait_idle(self) -> NodeInfo | None:
        deadline = self.clock() + self.idle_wait_s
        while True:
            node = self.slurm.show_node(self.node)
            if not node.flags & BUSY:
                return node
            if self.clock() >= deadline:
                return None
            self.sleep(IDLE_POLL_S)

    def _note(self, action: Action, what: str, detail: str, **fields) -> None:
        self.done.append((what, detail))
        event = action.event
        trail.log("watch", {"action": what, "node": self.node, "gpu": action.gpu, "reason": action.reason,
                            "event": f"{event.source}/{event.kind}" if event else None,
                            "code": event.code if event else None, "detail": detail, **fields},
                  self.site_config, severity="warning" if action.kind in ("drain", "reboot", "reset") else "notice")
        self.log(f"{what}: {action.reason}{' (' + detail + ')' if detail else ''}")

    def _write(self, path: Path, doc: dict) -> None:
        self._write_text(path, json.dumps(doc, indent=1, default=str) + "\n")

    def _write_text(self, path: Path, text: str) -> None:
        from gpunode.outputs import write_atomic

        write_atomic(path, text, mode=0o600)


def parse_partition(text: str, now: float, window_s: float) -> PartitionView:
    """`sinfo -h -N -o '%N|%T|%H|%E'` -> PartitionView (a node listed in two partitions counts once).
    %H, when the reason was set, is local time (2026-12-06T14:05:00) or Unknown/None."""
    nodes: dict[str, bool] = {}
    for line in text.splitlines():
        fields = line.split("|", 3)
        if len(fields) < 4 or not fields[0].strip():
            continue
        name, state, when, reason = (f.strip() for f in fields)
        flags = set(state.upper().rstrip("*~#!%$@^-").replace("+", " ").split())
        drained = any(f.startswith(("DRAIN", "DOWN", "FAIL", "REBOOT")) for f in flags)
        recent = _epoch(when)
        ours = drained and reason.startswith(OUR_PREFIX) and recent is not None and now - recent <= window_s
        nodes[name] = nodes.get(name, False) or ours
    return PartitionView(total=len(nodes), ours_recent=sum(nodes.values()))


def _epoch(text: str) -> float | None:
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except (ValueError, OverflowError):
        return None


def _watch_drained(node: NodeInfo) -> bool:
    return node.drained and (node.reason or "").startswith(WATCH_REASON)


def _fit(reason: str) -> str:
    one = " ".join(reason.split())
    return one if len(one) <= REASON_MAX else one[:REASON_MAX - 3] + "..."


def _event_doc(action: Action) -> dict | None:
    e = action.event
    if e is None:
        return None
    return {"source": e.source, "kind": e.kind, "time": e.time, "gpu": e.gpu, "code": e.code,
            "check_id": e.check_id, "status": e.status, "text": e.text}


def _said(result) -> str:
    if result.error:
        return result.error
    if result.timed_out:
        return f"no answer within {result.duration_s:.0f}s"
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1][:200] if lines else f"exit code {result.rc}"
