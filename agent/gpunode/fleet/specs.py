"""What each fleet playbook is, needs and returns: one place for the CLI and the validation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from gpunode.exits import EXIT_CODES


@dataclass(frozen=True)
class PlaybookSpec:
    name: str  # the `gpunode fleet NAME` command and playbooks/NAME.yml
    summary: str
    required: tuple[str, ...] = ()  # vars every host needs (inventory or extra vars)
    one_of: tuple[str, ...] = ()  # at least one of these must be set for every host
    # The report is the node command's stdout (else a file it writes, fetched: bench).
    report_on_stdout: bool = True
    # The node command's exit code -> verdict, for reports that carry no "status" (apply, rollback).
    rc_status: tuple[tuple[int, str], ...] = tuple((code, word) for word, code in EXIT_CODES.items())

    @property
    def file(self) -> str:
        return f"{self.name}.yml"

    @property
    def kind(self) -> str:
        """Per-host reports are <host>.<kind>.json in the run's report directory."""
        return self.name


# apply: 0 done, 1 done but some changes wait, 3 failed (rolled back); rollback: 0 restored,
# 1 some values left as someone else set them, 3 errors. A change that did not happen is a FAIL.
_CHANGE_RCS = ((0, "OK"), (1, "WARN"), (2, "FAIL"), (3, "FAIL"))

PLAYBOOKS: dict[str, PlaybookSpec] = {
    spec.name: spec
    for spec in (
        PlaybookSpec("audit", "gpunode audit on every node, one aggregated report"),
        PlaybookSpec("apply", "gpunode apply --profile on every node: canary first, then batches",
                     required=("gpunode_profile",), rc_status=_CHANGE_RCS),
        PlaybookSpec("rollback", "gpunode rollback on every node: canary first, then batches",
                     rc_status=_CHANGE_RCS),
        PlaybookSpec("bench", "gpunode bench on every node; outliers against each SKU group's median",
                     report_on_stdout=False),
        PlaybookSpec("gate", "gpunode gate (the fast pre-job health subset) on every node"),
        PlaybookSpec("diag", "gpunode diag on every node: which hosts fail which test, checked-GEMM figures by SKU",
                     report_on_stdout=False),
        PlaybookSpec("trends", "each node's bench history: per SKU the distribution of each metric, drifting hosts"),
        PlaybookSpec("watch", "each node's gpunode watch state: verdict, freshness, recent events and actions"),
        PlaybookSpec("slurm", "install the gpunode gate into Slurm (Prolog, HealthCheckProgram)"),
        PlaybookSpec("install", "install gpunode into a venv on every node (from a wheel or an index)",
                     one_of=("gpunode_wheel", "gpunode_pip_spec")),
    )
}

# Vars whose value must have a given shape, checked for every host before a run.
INT_VARS = {"gpunode_expected_gpus": 0, "gpunode_drain_timeout": 1, "gpunode_audit_timeout": 1,
            "gpunode_apply_timeout": 1, "gpunode_rollback_timeout": 1, "gpunode_bench_timeout": 1,
            "gpunode_gate_timeout": 1, "gpunode_diag_timeout": 1, "gpunode_diag_duration": 45}  # name -> minimum
BOOL_VARS = ("gpunode_slurm_drain", "gpunode_become", "gpunode_os_packages", "gpunode_prove")
PATH_VARS = ("gpunode_venv", "gpunode_bin", "gpunode_snapshot", "gpunode_node_dir", "gpunode_config",
             "gpunode_slurm_prefix", "gpunode_python", "gpunode_link")  # absolute paths on the node
# Vars that become a command-line word on the node: a typo would fail every node, so say it first.
CHOICE_VARS = {"gpunode_bench_mode": ("quick", "full"), "gpunode_diag_level": ("1", "2", "3")}
STR_VARS = ("gpunode_profile", "gpunode_sku", "gpunode_baseline", "gpunode_nccl_tests_dir", "gpunode_pip_spec",
            "gpunode_wheel", "gpunode_slurm_node")
LIST_SUFFIX = "_args"  # gpunode_audit_args, gpunode_pip_args ...: lists of strings
BOOL_WORDS = {"true", "false", "yes", "no", "on", "off", "1", "0"}


def playbooks_dir(explicit: str | os.PathLike | None = None) -> Path:
    """--playbooks DIR, else $GPUNODE_PLAYBOOKS, else the playbooks shipped with gpunode
    (the repo's playbooks/, installed as the package gpunode.shipped_playbooks)."""
    if explicit:
        return Path(explicit).resolve()
    env = os.environ.get("GPUNODE_PLAYBOOKS")
    if env:
        return Path(env).resolve()
    import gpunode.shipped_playbooks

    return Path(gpunode.shipped_playbooks.__file__).resolve().parent
