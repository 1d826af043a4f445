"""`gpunode gate --no-scontrol`: the Slurm modes (--prolog, --epilog, --health-check) without
Slurm. The node is taken as idle with no reason; every drain or resume is printed as the
scontrol command it would be, never run. For demos on a snapshot and for trying the hooks on
a workstation: nothing can drain a real node."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping

from gpunode.slurm.scontrol import NodeInfo, Slurm, SlurmAction

WOULD = {"drained": "would-drain", "resumed": "would-resume"}


class DryRunSlurm(Slurm):
    def __init__(self, out=None) -> None:
        super().__init__(runner=None)  # type: ignore[arg-type]  # never starts scontrol
        self.out = out
        self.would_run: list[list[str]] = []

    def node_name(self, env: Mapping[str, str]) -> str:
        return env.get("SLURMD_NODENAME", "").strip() or os.uname().nodename.split(".")[0]

    def show_node(self, name: str) -> NodeInfo:
        return NodeInfo(name=name, state="IDLE", reason=None, gres=None)

    def job_comment(self, job_id: str) -> str | None:
        return None  # the job's comment: --comment / SLURM_JOB_COMMENT still apply

    def _update(self, args: list[str]) -> None:
        argv = ["scontrol", "update", *args]
        self.would_run.append(argv)
        print(f"gpunode: --no-scontrol: would run: {shlex.join(argv)}", file=self.out or sys.stderr)


def dry_action(action: SlurmAction | None) -> SlurmAction | None:
    """The report says what would have happened, not that it happened."""
    if action is None or action.action not in WOULD:
        return action
    return SlurmAction(WOULD[action.action], action.detail)
