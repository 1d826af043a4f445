"""`gpunode slurm drain NODE... --reason "gpunode: drain: ..."`: drain nodes through scontrol, never
over a reason gpunode did not set (slurm/drain.py). Registered by cli/gate_cmd.py."""

from __future__ import annotations

import shlex

import typer

from gpunode.cli.common import ResultFormatOption, layout_of

DRAIN_SCHEMA = "gpunode.slurm-drain/1"


def drain(
    nodes: list[str] = typer.Argument(..., help="Slurm node names (as sinfo shows them)."),
    reason: str = typer.Option(..., "--reason", help="Why, starting with 'gpunode: drain:' (e.g. 'gpunode: drain: fleet locate tcp: node fault')."),
    dry_run: bool = typer.Option(False, "--dry-run", "--check", "-n", help="Read each node and print the scontrol command; change nothing (--check: Ansible's word for it)."),
    fmt: ResultFormatOption = None,
) -> None:
    """Drain NODEs with a 'gpunode: drain:' reason, which gpunode never lifts (the health check
    leaves it: a person resumes the node). A node carrying someone else's reason, or the watcher's
    drain, is left as it is. Without --format: one line per node (the scontrol command with
    --dry-run). Exit 0 drained (or already), 1 a node left as is, 3 scontrol failed."""
    from gpunode.host.runner import Runner
    from gpunode.slurm import drain as use_case
    from gpunode.slurm.scontrol import Slurm

    why = use_case.check(nodes, reason)
    results = use_case.drain(Slurm(Runner()), nodes, why, dry_run=dry_run)
    code = use_case.exit_code(results)
    if fmt is None:  # the lines scripts already read
        for r in results:
            typer.echo(shlex.join(r.argv) if r.argv is not None else f"{r.node}: {r.action}: {r.detail}")
    else:
        _show(results, fmt, dry_run, code)
    raise typer.Exit(code)


def _show(results, fmt, dry_run: bool, code: int) -> None:
    """--format: the results as a document (json) or as rows naming node, action, detail, command."""
    from gpunode.cli.common import stdout_console
    from gpunode.layout import Col, show
    from gpunode.outputs import dumps

    as_json, layout = layout_of(fmt, False)
    if as_json:
        nodes = [{"node": r.node, "action": r.action, "detail": r.detail,
                  "command": r.argv} for r in results]
        typer.echo(dumps({"schema": DRAIN_SCHEMA, "dry_run": dry_run, "exit_code": code, "nodes": nodes}), nl=False)
        return
    cols = [Col("Node", whole=True), Col("Action", whole=True), Col("Detail"), Col("Command")]
    rows = [[r.node, r.action, r.detail, shlex.join(r.argv) if r.argv is not None else ""] for r in results]
    show(stdout_console(), "gpunode slurm drain" + (" (dry run)" if dry_run else ""), cols, rows, layout)
