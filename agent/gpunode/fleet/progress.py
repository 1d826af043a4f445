"""Live per-host progress of a fleet run, from ansible-runner's events, on stderr.

One line per host when its report arrives (with the host's verdict) and one per failure or
unreachable host as it happens; the outcome of every host is kept for the fleet report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from gpunode import status
from gpunode.fleet.specs import PLAYBOOKS

# Controller-side bookkeeping that runs once per batch on the batch's first host: it says nothing
# about whether that host ran (a skipped benchmark in check mode must read as skipped).
BOOKKEEPING_TASKS = frozenset({"Make the report directory on the controller"})
MAX_MOVES = 3  # changes named on a host's progress line (the report lists them all)
STYLE = {**{w: status.STYLE[w] for w in status.VERDICTS},
         "UNREACHABLE": "bold red", "FAILED": "bold red"}


@dataclass
class HostOutcome:
    """What Ansible did on one host: ran (ok), failed a task, or could not reach it."""

    host: str
    state: str = "not_run"  # not_run | ok | skipped | failed | unreachable
    task: str | None = None  # the task that failed or was unreachable
    message: str | None = None
    rc: int | None = None  # exit code of the gpunode command on the node

    def to_json(self) -> dict:
        return {"host": self.host, "state": self.state, "task": self.task, "message": self.message, "rc": self.rc}

    @classmethod
    def from_json(cls, data: dict) -> HostOutcome:
        return cls(host=data["host"], state=data.get("state", "not_run"), task=data.get("task"),
                   message=data.get("message"), rc=data.get("rc"))


def failure_message(res: dict) -> str:
    """The reason of a failed task in one line: gpunode's own error line when there is one."""
    for key in ("stderr", "msg", "module_stderr", "stdout"):
        text = res.get(key)
        if isinstance(text, str) and text.strip():
            lines = [ln.strip().removeprefix("Task failed: ") for ln in text.strip().splitlines() if ln.strip()]
            for ln in lines:
                if ln.startswith("gpunode: error:"):
                    return ln
            return lines[-1] if key != "msg" else " ".join(lines)
    if res.get("rc") is not None:
        return f"exit code {res['rc']}"
    return "failed"


@dataclass
class Tracker:
    """ansible-runner event_handler: keeps per-host outcomes, prints progress lines."""

    hosts: list[str]
    report_dir: Path
    kind: str
    console: object | None = None  # a rich Console on stderr, or None for silence
    # Save the node command's stdout as the host's report (the playbook skips its copy task).
    from_stdout: bool = False
    outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    reported: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.outcomes = {h: HostOutcome(h) for h in self.hosts}

    def __call__(self, event: dict) -> bool:
        kind = event.get("event", "")
        data = event.get("event_data") or {}
        host = data.get("host")
        if host is None or not kind.startswith("runner_on_") or host not in self.outcomes:
            return True  # keep every event in the artifacts
        outcome = self.outcomes[host]
        res = data.get("res") or {}
        task = data.get("task")
        if task == f"Run gpunode {self.kind}" and isinstance(res.get("rc"), int):
            self._command_ran(outcome, kind, res)
        self._track_state(outcome, kind, task, res, ignored=bool(data.get("ignore_errors")))
        if kind == "runner_on_ok" and self._is_report(host, res):
            self._reported(outcome)
        return True

    def _command_ran(self, outcome: HostOutcome, kind: str, res: dict) -> None:
        """The node command's exit code; with from_stdout its output is the host's report."""
        outcome.rc = res["rc"]
        if self.from_stdout and kind in ("runner_on_ok", "runner_on_failed") and self._save(outcome.host, res):
            self._reported(outcome)

    def _track_state(self, outcome: HostOutcome, kind: str, task, res: dict, ignored: bool) -> None:
        """unreachable and the first failure win over ok/skipped (bookkeeping tasks say nothing)."""
        if kind == "runner_on_unreachable":
            outcome.state, outcome.task = "unreachable", task
            outcome.message = failure_message(res)
            self._line(outcome.host, "UNREACHABLE", outcome.message)
        elif kind == "runner_on_failed" and not ignored:
            if outcome.state != "failed":  # the first failure is the cause; later ones follow from it
                outcome.state, outcome.task = "failed", task
                outcome.message = failure_message(res)
                self._line(outcome.host, "FAILED", f"{task}: {outcome.message}")
        elif (kind in ("runner_on_ok", "runner_on_skipped") and outcome.state in ("not_run", "skipped")
              and task not in BOOKKEEPING_TASKS):
            outcome.state = "ok" if kind == "runner_on_ok" else "skipped"

    def _reported(self, outcome: HostOutcome) -> None:
        """The host's report arrived: count it and print its verdict."""
        self.reported.add(outcome.host)
        self._line(outcome.host, *_report_status(self.report_path(outcome.host), self._rc_status(outcome.rc)))

    def _rc_status(self, rc: int | None) -> str | None:
        """The verdict the node command's exit code means (apply/rollback reports carry none)."""
        spec = PLAYBOOKS.get(self.kind)
        return dict(spec.rc_status).get(rc) if spec is not None and rc is not None else None

    def _save(self, host: str, res: dict) -> bool:
        """The command's JSON stdout -> <report dir>/<host>.<kind>.json (0600), as the playbook's
        copy task would have written it."""
        stdout = res.get("stdout")
        if not isinstance(stdout, str) or not stdout.strip().startswith("{"):
            return False
        from gpunode.outputs import write_atomic

        self.report_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(self.report_path(host), stdout + "\n", mode=0o600)
        return True

    def report_path(self, host: str) -> Path:
        return self.report_dir / f"{host}.{self.kind}.json"

    def _is_report(self, host: str, res: dict) -> bool:
        dest = res.get("dest")
        return isinstance(dest, str) and Path(dest).name == self.report_path(host).name

    def _line(self, host: str, status: str, detail: str = "") -> None:
        if self.console is None:
            return
        done = len(self.reported | {h for h, o in self.outcomes.items() if o.state in ("failed", "unreachable")})
        from rich.markup import escape

        style = STYLE.get(status, "")
        text = f"[{done}/{len(self.hosts)}] {escape(host)} [{style}]{escape(status)}[/]" if style else (
            f"[{done}/{len(self.hosts)}] {escape(host)} {escape(status)}")
        if detail:
            text += f"  {escape(detail)}"
        self.console.print(text, highlight=False, soft_wrap=not self.console.is_terminal)


def _report_status(path: Path, rc_status: str | None = None) -> tuple[str, str]:
    from gpunode.inputs import InputError, load_json

    try:
        doc = load_json(path, max_bytes=64 * 1024 * 1024, allow_nonfinite=True)
    except InputError:
        return "report", f"unreadable: {path.name}"
    if not isinstance(doc, dict):
        return "report", ""
    summary = doc.get("summary")
    # audit/gate: the counts; apply/rollback: what was done (applied, planned, complete ...)
    detail = (", ".join(f"{n} {s}" for s, n in summary.items() if n) if isinstance(summary, dict)
              else str(doc.get("result") or ""))
    return str(doc.get("status") or rc_status or "report"), detail + _moves(doc.get("changes"))


def _moves(changes) -> str:
    """apply: what the host changes (or would, in check mode), from -> to, the first few."""
    rows = changes if isinstance(changes, list) else []  # a node's file: any shape may come back
    moves = [f"{c.get('setting')} {c.get('current')} -> {c.get('target')}" for c in rows
             if isinstance(c, dict) and c.get("setting") and c.get("status") in ("planned", "applied")]
    if not moves:
        return ""
    return ": " + ", ".join(moves[:MAX_MOVES]) + (f" +{len(moves) - MAX_MOVES} more" if len(moves) > MAX_MOVES else "")
