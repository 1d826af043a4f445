"""Drive one playbook through ansible-runner.

Layout under the state dir (0700):  fleet/<playbook>/            ansible-runner's private_data_dir
                                    fleet/<playbook>/artifacts/<ident>/   one run (rotated)
                                        reports/<host>.<kind>.json      what each node sent back
                                        run.json, fleet.json            outcomes, the fleet report
ansible-runner is imported lazily: it is the `fleet` extra, not a core dependency.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from gpunode.fleet.progress import HostOutcome, Tracker
from gpunode.fleet.specs import PlaybookSpec
from gpunode.fleet.validate import FleetError, FleetInventory, ansible_env

RUN_FILE = "run.json"
FLEET_FILE = "fleet.json"
DEFAULT_ROTATE = 20


@dataclass
class PlaybookRun:
    playbook: str
    kind: str
    ident: str
    artifact_dir: Path
    report_dir: Path
    inventory: FleetInventory
    check: bool
    status: str = "unstarted"  # ansible-runner: successful | failed | timeout | canceled
    rc: int | None = None
    stats: dict = field(default_factory=dict)
    outcomes: dict[str, HostOutcome] = field(default_factory=dict)
    started: float = 0.0
    duration_s: float = 0.0

    def to_json(self) -> dict:
        return {
            "playbook": self.playbook, "kind": self.kind, "ident": self.ident, "artifact_dir": str(self.artifact_dir),
            "report_dir": str(self.report_dir), "inventory": self.inventory.to_json(), "check": self.check,
            "status": self.status, "rc": self.rc, "stats": self.stats, "started": self.started,
            "duration_s": self.duration_s, "outcomes": [o.to_json() for o in self.outcomes.values()],
        }

    @classmethod
    def load(cls, artifact_dir: Path) -> PlaybookRun:
        """A finished run read back from its artifact directory (for `gpunode fleet report`)."""
        path = artifact_dir / RUN_FILE
        from gpunode.inputs import load_json

        try:
            data = load_json(path, max_bytes=64 * 1024 * 1024)
            inv = data["inventory"]
            inventory = FleetInventory(path=inv["path"], limit=inv.get("limit"), hosts=list(inv["hosts"]),
                                       groups=dict(inv.get("groups", {})),
                                       hostvars={h: {"gpunode_sku": s} for h, s in inv.get("skus", {}).items()})
            return cls(
                playbook=data["playbook"], kind=data["kind"], ident=data["ident"], artifact_dir=artifact_dir,
                report_dir=artifact_dir / "reports", inventory=inventory, check=bool(data.get("check")),
                status=data.get("status", "unknown"), rc=data.get("rc"), stats=data.get("stats") or {},
                outcomes={o["host"]: HostOutcome.from_json(o) for o in data.get("outcomes", [])},
                started=float(data.get("started", 0.0)), duration_s=float(data.get("duration_s", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FleetError(f"{path}: not a gpunode fleet run ({exc})") from exc


def default_state_dir() -> Path:
    """Root: /var/lib/gpunode (beside apply's journal); others: $XDG_STATE_HOME/gpunode."""
    if os.geteuid() == 0:
        return Path("/var/lib/gpunode")
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpunode"


def private_dir(state_dir: Path, spec: PlaybookSpec) -> Path:
    # A state dir that already exists (--state-dir /tmp, a home dir) keeps its mode: a 0700
    # fleet/ inside it is enough to keep reports and run logs, which describe hosts, private.
    # fleet/ and its subdirectory pass the state-dir guard (made 0700, never chmod'ed): one
    # someone else made in a shared directory is refused, never written into.
    from gpunode.state_dir import UntrustedState, check_dir

    if not state_dir.exists():
        state_dir.mkdir(mode=0o700, parents=True)
    path = state_dir / "fleet" / spec.name
    try:
        for p in (state_dir / "fleet", path):
            check_dir(p, create=True)
    except UntrustedState as exc:
        raise FleetError(str(exc)) from None
    return path


def new_ident(now: float) -> str:
    stamp = datetime.fromtimestamp(now, tz=timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def run_playbook(
    spec: PlaybookSpec,
    inventory: FleetInventory,
    playbook_dir: Path,
    state_dir: Path,
    *,
    extravars: Mapping[str, object] | None = None,
    forks: int = 10,
    check: bool = False,
    rotate: int = DEFAULT_ROTATE,
    timeout: int | None = None,
    console=None,
) -> PlaybookRun:
    """Run the playbook on the validated inventory; never raises for host failures (they are
    outcomes), only FleetError when ansible-runner is missing."""
    try:
        import ansible_runner
    except ImportError as exc:
        raise FleetError("ansible-runner is not installed: pip install 'gpunode[fleet]'") from exc
    started = time.time()
    pdd = private_dir(state_dir, spec)
    ident = new_ident(started)
    artifact_dir = pdd / "artifacts" / ident
    report_dir = artifact_dir / "reports"
    run = PlaybookRun(playbook=spec.file, kind=spec.kind, ident=ident, artifact_dir=artifact_dir,
                      report_dir=report_dir, inventory=inventory, check=check, started=started)
    tracker = Tracker(hosts=inventory.hosts, report_dir=report_dir, kind=spec.kind, console=console,
                      from_stdout=spec.report_on_stdout)
    env = ansible_env({
        # ansible-runner would turn host key checking off; keep Ansible's safe default unless set.
        "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
    })
    result = ansible_runner.run(
        private_data_dir=str(pdd),
        project_dir=str(playbook_dir),
        playbook=spec.file,
        inventory=str(Path(inventory.path).resolve()),
        ident=ident,
        limit=inventory.limit or None,
        forks=forks,
        extravars={**(extravars or {}), "gpunode_report_dir": str(report_dir),
                   "gpunode_report_from_events": spec.report_on_stdout},
        cmdline="--check" if check else None,
        envvars=env,
        rotate_artifacts=rotate,
        event_handler=tracker,
        quiet=True,
        suppress_env_files=True,  # extra vars and the environment are not copied into the state dir
        timeout=timeout,
    )
    run.status, run.rc = result.status, result.rc
    run.stats = result.stats or {}
    run.outcomes = tracker.outcomes
    run.duration_s = round(time.time() - started, 3)
    artifact_dir.mkdir(parents=True, exist_ok=True)
    write_private(artifact_dir / RUN_FILE, json.dumps(run.to_json(), indent=1) + "\n")
    return run


def write_private(path: Path, text: str) -> None:
    from gpunode.outputs import write_atomic

    write_atomic(path, text, mode=0o600)
