"""`gpunode slurm drain NODE... --reason "gpunode: ..."`: drain nodes through scontrol, never
over a reason gpunode did not set (slurm/drain.py). Registered by cli/gate_cmd.py."""

from __future__ import annotations

import shlex

import typer


def drain(
    nodes: list[str] = typer.Argument(..., help="Slurm node names (as sinfo shows them)."),
    reason: str = typer.Option(..., "--reason", help="Why, starting with 'gpunode:' (e.g. 'gpunode: fleet locate tcp: node fault')."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Read each node and print the scontrol command; change nothing."),
) -> None:
    """Drain NODEs with a gpunode: reason. A node carrying someone else's reason, or the watcher's
    drain, is left as it is. Exit 0 drained (or already), 1 a node left as is, 3 scontrol failed."""
    from gpunode.host.runner import Runner
    from gpunode.slurm import drain as use_case
    from gpunode.slurm.scontrol import Slurm

    why = use_case.check(nodes, reason)
    results = use_case.drain(Slurm(Runner()), nodes, why, dry_run=dry_run)
    for r in results:
        if r.argv is not None:
            typer.echo(shlex.join(r.argv))
        else:
            typer.echo(f"{r.node}: {r.action}: {r.detail}")
    raise typer.Exit(use_case.exit_code(results))
